"""`atomic.atomic_path`: outputs appear complete with ordinary permissions, or not at all."""

from __future__ import annotations

import os
import stat

import pytest

from qwen3tts_jax.atomic import atomic_path, write_text_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_file_gets_0644_and_no_temporary_is_left(tmp_path, umask_022):
    target = write_text_atomic(tmp_path / "a.json", "{}\n")
    assert target.read_text() == "{}\n" and _mode(target) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_folder_gets_0755_and_its_files_0644(tmp_path, umask_022):
    with atomic_path(tmp_path / "out", folder=True, replace=False) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x.bin").write_bytes(b"1")
        os.chmod(tmp / "sub" / "x.bin", 0o600)  # as safetensors leaves its files
    assert _mode(tmp_path / "out") == 0o755 and _mode(tmp_path / "out" / "sub") == 0o755
    assert _mode(tmp_path / "out" / "sub" / "x.bin") == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failure_leaves_the_old_target_and_no_temporary(tmp_path):
    write_text_atomic(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert (tmp_path / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "d", folder=True) as tmp:
            (tmp / "new").write_text("half")
            raise KeyboardInterrupt
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["keep"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "d"]


def test_folder_replaces_an_old_one_and_refuses_when_asked(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "old").write_text("1")
    with atomic_path(tmp_path / "d", folder=True) as tmp:
        (tmp / "new").write_text("2")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # the swapped-out folder is gone
    with pytest.raises(FileExistsError, match=r"d: already exists"):
        with atomic_path(tmp_path / "d", folder=True, replace=False):
            pass
