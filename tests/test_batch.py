"""The batch-synthesis command (`qwen3tts_jax/batch.py`, `qwen3tts-jax batch`): input parsing,
the manifest and its torn-line recovery, resume logic with a stand-in model, and the real command
on a 2-device mesh killed after its first item and resumed without redoing finished items."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from qwen3tts_jax import batch
from qwen3tts_jax.batch import Defaults, Item, load_manifest, read_items, run_batch

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------
# Input files
# --------------------------------------------------------------------------------------------


def test_read_txt_items(tmp_path):
    f = tmp_path / "texts.txt"
    f.write_text("First line.\n\n  Second line.  \n\nThird\n", encoding="utf-8")
    items = read_items(f)
    assert [(i.id, i.text) for i in items] == [
        ("000001", "First line."),
        ("000002", "Second line."),
        ("000003", "Third"),
    ]


def test_read_jsonl_items(tmp_path):
    f = tmp_path / "items.jsonl"
    f.write_text(
        '{"id": "a", "text": "Hi", "speaker": "ryan", "language": "english"}\n\n{"text": "Second"}\n', encoding="utf-8"
    )
    items = read_items(f)
    assert items[0] == Item("a", "Hi", speaker="ryan", language="english")
    assert items[1] == Item("000002", "Second")


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"text": "ok"}\n{"text": ', r"items.jsonl:2: not valid JSON"),
        ('["text"]\n', r"items.jsonl:1: expected a JSON object"),
        ('{"text": ""}\n', r"items.jsonl:1: 'text' must be a non-empty string"),
        ('{"text": "a", "voice": "x"}\n', r"items.jsonl:1: unknown field\(s\) \['voice'\]"),
        ('{"id": "../x", "text": "a"}\n', r"items.jsonl:1: id '../x' must be"),
        ('{"id": "a", "text": "a"}\n{"id": "a", "text": "b"}\n', r"id 'a' is used by items 1 and 2"),
        ('{"text": "a", "x_vector_only": "yes"}\n', r"'x_vector_only' must be true or false"),
        ("\n\n", r"no items"),
    ],
)
def test_bad_jsonl_is_refused_with_file_and_line(tmp_path, content, message):
    f = tmp_path / "items.jsonl"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_items(f)


def test_bad_input_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="file not found"):
        read_items(tmp_path / "missing.txt")
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(ValueError, match=r"expected a .txt .* or .jsonl"):
        read_items(tmp_path / "x.csv")


# --------------------------------------------------------------------------------------------
# Manifest, settings, temporaries
# --------------------------------------------------------------------------------------------


def test_torn_manifest_line_is_dropped_and_rewritten(tmp_path):
    good = {"id": "a", "text": "t", "audio": "a.wav"}
    (tmp_path / "manifest.jsonl").write_text(json.dumps(good) + "\n" + '{"id": "b", "te', encoding="utf-8")
    assert load_manifest(tmp_path) == {"a": good}
    assert (tmp_path / "manifest.jsonl").read_text(encoding="utf-8") == json.dumps(good) + "\n"


def test_superseded_manifest_lines_are_compacted(tmp_path):
    old, new, other = (
        {"id": "a", "text": "t", "audio": "a.wav"},
        {"id": "a", "text": "u", "audio": "a.wav"},
        {"id": "b", "text": "v", "audio": "b.wav"},
    )
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (old, other, new)), encoding="utf-8")
    assert load_manifest(tmp_path) == {"a": new, "b": other}
    assert (tmp_path / "manifest.jsonl").read_text(encoding="utf-8") == json.dumps(other) + "\n" + json.dumps(
        new
    ) + "\n"


def test_settings_mismatch_is_refused(tmp_path):
    batch.prepare_out_dir(tmp_path / "out", {"model": "m", "seed": 0})
    batch.prepare_out_dir(tmp_path / "out", {"model": "m", "seed": 0})  # same settings: resumes
    with pytest.raises(ValueError, match=r"started with other settings \(seed: 0 then, 1 now\)"):
        batch.prepare_out_dir(tmp_path / "out", {"model": "m", "seed": 1})


def test_partial_files_of_a_killed_run_are_removed(tmp_path):
    (tmp_path / ".000001.wav.abc123.part").write_bytes(b"RIFF")
    (tmp_path / "000002.wav").write_bytes(b"keep")
    batch.prepare_out_dir(tmp_path, {"model": "m"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000002.wav", "batch.json"]


# --------------------------------------------------------------------------------------------
# Resume logic with a stand-in model (no compilation)
# --------------------------------------------------------------------------------------------


class FakeModel:
    """`generate_custom_voice` with a deterministic waveform per (text, batch key); can crash."""

    tts_model_type = "custom_voice"
    mesh = None

    def __init__(self, crash_after: int | None = None):
        self.calls: list[list[str]] = []
        self.crash_after = crash_after

    def get_supported_speakers(self):
        return ["ryan", "serena"]

    def get_supported_languages(self):  # batch.check_items checks every item's language up front
        return ["auto", "english"]

    def generate_custom_voice(self, texts, speakers, language=None, instruct=None, key=None, **kw):
        if self.crash_after is not None and len(self.calls) >= self.crash_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls.append(list(texts))
        return [
            np.full(1920 * (1 + len(t) % 3), sum(map(ord, t)) % 100 / 1000 + key[1] / 100, np.float32) for t in texts
        ], 24000


def _items(n: int) -> list[Item]:
    return [Item(f"{i:03d}", f"text number {i}") for i in range(n)]


def test_run_batch_resumes_without_redoing_items(tmp_path):
    items = _items(5)
    key = lambda seed, k: (seed, k)
    with pytest.raises(KeyboardInterrupt):
        run_batch(FakeModel(crash_after=2), items, tmp_path, batch_size=2, make_key=key, log=lambda m: None)
    done = load_manifest(tmp_path)
    assert sorted(done) == ["000", "001", "002", "003"]
    stamps = {i: os.stat(tmp_path / f"{i}.wav").st_mtime_ns for i in done}
    model = FakeModel()
    s = run_batch(model, items, tmp_path, batch_size=2, make_key=key, log=lambda m: None)
    assert model.calls == [["text number 4"]] and (s.skipped, s.written, s.batches_run) == (4, 1, 1)
    assert {i: os.stat(tmp_path / f"{i}.wav").st_mtime_ns for i in done} == stamps
    # Same files as an uninterrupted run: fixed batches, batch k keyed by k.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    run_batch(FakeModel(), items, fresh, batch_size=2, make_key=key, log=lambda m: None)
    import soundfile as sf

    for it in items:
        np.testing.assert_array_equal(sf.read(tmp_path / f"{it.id}.wav")[0], sf.read(fresh / f"{it.id}.wav")[0])
    # A changed text is redone (its batch runs whole; only the changed item is rewritten).
    items[1] = Item("001", "a new text")
    model = FakeModel()
    s = run_batch(model, items, tmp_path, batch_size=2, make_key=key, log=lambda m: None)
    assert model.calls == [["text number 0", "a new text"]] and s.written == 1
    assert os.stat(tmp_path / "000.wav").st_mtime_ns == stamps["000"]
    assert load_manifest(tmp_path)["001"]["text"] == "a new text"
    lines = (tmp_path / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    assert sorted(json.loads(x)["id"] for x in lines) == [it.id for it in items]  # one line per item


def test_missing_audio_file_is_redone(tmp_path):
    items = _items(2)
    run_batch(FakeModel(), items, tmp_path, batch_size=1, make_key=lambda s, k: (s, k), log=lambda m: None)
    (tmp_path / "001.wav").unlink()
    model = FakeModel()
    run_batch(model, items, tmp_path, batch_size=1, make_key=lambda s, k: (s, k), log=lambda m: None)
    assert model.calls == [["text number 1"]] and (tmp_path / "001.wav").is_file()


def test_voice_fields_must_be_given_for_design_and_clone():
    class Design(FakeModel):
        tts_model_type = "voice_design"

    with pytest.raises(ValueError, match=r"items \['000'\]: a VoiceDesign model needs an instruct"):
        batch.synthesize_batch(Design(), _items(1), Defaults(), None, {})

    class Base(FakeModel):
        tts_model_type = "base"

    with pytest.raises(ValueError, match=r"a Base model needs ref_audio"):
        batch.synthesize_batch(Base(), _items(1), Defaults(), None, {})


# --------------------------------------------------------------------------------------------
# The real command, killed and resumed
# --------------------------------------------------------------------------------------------


def _cmd(items: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "qwen3tts_jax.cli",
        "batch",
        "--model",
        "random:tiny",
        "--input",
        str(items),
        "--out-dir",
        str(out),
        "--mesh",
        "data=2",
        "--cpu-devices",
        "2",
        "--greedy",
        "--max-new-tokens",
        "6",
        "--batch-size",
        "2",
    ]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _check_outputs(out: Path) -> dict[str, dict]:
    """Every visible audio file is complete: readable, the manifest's length, whole frames."""
    import soundfile as sf

    records = load_manifest(out)
    for wav in out.glob("*.wav"):
        data, sr = sf.read(wav, dtype="float32")
        assert sr == 24000 and len(data) % 1920 == 0, wav
        if wav.stem in records:
            assert len(data) == records[wav.stem]["samples"], wav
    return records


@pytest.mark.slow
def test_batch_command_resumes_after_kill(tmp_path):
    """Kill the command (SIGKILL) right after its first item is written, run it again: finished
    items are not redone, the rest are written, no partial file is ever visible. The second batch
    holds longer texts (a new prompt-length bucket, so a fresh compile): the kill lands there."""
    items = tmp_path / "items.jsonl"
    long = "This sentence is much longer than the first ones, so it needs a bigger prompt bucket"
    rows = [
        {"id": "s1", "text": "Short one."},
        {"id": "s2", "text": "Short two.", "speaker": "serena"},
        {"id": "l1", "text": long + "."},
        {"id": "l2", "text": long + "!", "language": "english"},
    ]
    items.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _cmd(items, out), env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    manifest = out / "manifest.jsonl"
    deadline = time.monotonic() + 600
    try:
        while not (manifest.is_file() and manifest.read_text(encoding="utf-8").strip()):
            assert proc.poll() is None, f"batch command exited early ({proc.returncode}):\n{proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no item written in 600 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    first = _check_outputs(out)
    assert 1 <= len(first) < len(rows), f"killed too late to test resuming: {sorted(first)}"
    stamps = {i: (os.stat(out / r["audio"]).st_ino, os.stat(out / r["audio"]).st_mtime_ns) for i, r in first.items()}

    done = subprocess.run(_cmd(items, out), env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{len(first)} already done" in done.stderr, done.stderr[-1000:]
    final = _check_outputs(out)
    assert sorted(final) == sorted(r["id"] for r in rows)
    lines = [json.loads(x) for x in manifest.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == len(rows) and len({x["id"] for x in lines}) == len(rows)  # each item written once
    assert {
        i: (os.stat(out / r["audio"]).st_ino, os.stat(out / r["audio"]).st_mtime_ns) for i, r in first.items()
    } == stamps
    assert not list(out.glob(".*.part"))
    assert {p.name for p in out.iterdir()} == {f"{r['id']}.wav" for r in rows} | {"manifest.jsonl", "batch.json"}
    print(f"[batch] killed after {sorted(first)}; resumed and wrote {sorted(set(final) - set(first))}")
