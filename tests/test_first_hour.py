"""A newcomer's first hour: the README's main-job command as written, the persistent compilation
cache across processes, random models saved as folders, converted folders, permissions, temp
folders, and what --help and the README tell."""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest

from qwen3tts_jax import compile_cache, presets
from qwen3tts_jax.api import Qwen3TTSModel

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _env(**extra) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("XLA_FLAGS", "QWEN3TTS_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR", "XDG_CACHE_HOME")
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])  # this checkout's package
    env["JAX_PLATFORMS"] = "cpu"
    env.update(extra)
    return env


def _main_job_line() -> str:
    """The synthesize line the README shows under "Main job" (the comment after run_demo.sh)."""
    block = README.read_text(encoding="utf-8").split("**Main job**", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [x[2:] for x in block.splitlines() if x.startswith("# ")]
    assert len(lines) == 1, lines
    return lines[0]


def _demo_script_command() -> list[str]:
    text = (ROOT / "scripts" / "run_demo.sh").read_text(encoding="utf-8").replace("\\\n", " ")
    (line,) = [x for x in text.splitlines() if x.startswith("exec ")]
    words = shlex.split(line)
    return words[1:-1] if words[-1] == "$@" else words[1:]


def _check_wav(path: Path, max_frames: int) -> float:
    import soundfile as sf

    audio, sr = sf.read(path, dtype="float32")
    assert sr == 24000 and audio.ndim == 1 and 0 < len(audio) <= max_frames * 1920 and len(audio) % 1920 == 0
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0
    return len(audio) / sr


def test_readme_main_job_line_is_what_run_demo_runs():
    line = _main_job_line()
    mkdir, command = line.split(" && ", 1)
    assert mkdir == "mkdir -p out"
    assert shlex.split(command) == _demo_script_command()
    assert "--speaker" in command and "--max-new-tokens" in command


@pytest.mark.slow
def test_readme_main_job_command_runs_as_written(tmp_path):
    """The README's line, run by bash exactly as written, in a folder holding only `.venv`."""
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    done = subprocess.run(
        ["bash", "-c", _main_job_line()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1500,
        env=_env(QWEN3TTS_COMPILE_CACHE=str(tmp_path / "cache")),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seconds = _check_wav(tmp_path / "out" / "demo.wav", 47)
    summary = [x for x in done.stderr.splitlines() if x.startswith(("loaded", "first audio", "wrote"))]
    print(f"[first-hour] README main job: {seconds:.2f} s of audio; " + " | ".join(summary))


def _run_cli(args: list[str], env: dict, cwd: Path) -> tuple[str, float]:
    import time

    t = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "qwen3tts_jax.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=900, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr, time.perf_counter() - t


def _stats(stderr: str) -> tuple[int, int, float]:
    """(programs compiled, read from the cache) from the --verbose line, and the first-audio time."""
    m = re.search(r"compilation: (\d+) programs: (\d+) from the persistent cache, (\d+) compiled", stderr)
    first = re.search(r"first audio after ([\d.]+) s", stderr)
    assert m and first, stderr[-2000:]
    return int(m.group(3)), int(m.group(2)), float(first.group(1))


@pytest.mark.slow
def test_second_cli_run_reaches_first_audio_from_the_persistent_cache(tmp_path):
    """Two fresh processes with the default cache folder ($XDG_CACHE_HOME/qwen3tts-jax/xla): the
    first compiles, the second compiles nothing."""
    env = _env(XDG_CACHE_HOME=str(tmp_path / "xdg"))
    args = [
        "synthesize",
        "--model",
        "random:tiny",
        "--speaker",
        "ryan",
        "--text",
        "Cached compilation.",
        "--max-new-tokens",
        "10",
        "--out",
        "a.wav",
        "--verbose",
    ]
    first, t1 = _run_cli(args, env, tmp_path)
    second, t2 = _run_cli(args, env, tmp_path)
    (c1, h1, a1), (c2, h2, a2) = _stats(first), _stats(second)
    print(
        f"[first-hour] cold process: first audio {a1:.1f} s, {t1:.1f} s wall, {c1} compiled; "
        f"warm cache: first audio {a2:.1f} s, {t2:.1f} s wall, {c2} compiled, {h2} from the cache"
    )
    assert c1 > 0 and h1 == 0
    assert c2 == 0 and h2 == c1 + h1
    assert any((tmp_path / "xdg" / "qwen3tts-jax" / "xla").iterdir())
    assert "compiling and running the first frame" in second  # compilation is its own step, before the bar
    _check_wav(tmp_path / "a.wav", 9)


def test_compile_cache_folder_rules(tmp_path, monkeypatch):
    for k in ("QWEN3TTS_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.resolve_dir() == tmp_path / "xdg" / "qwen3tts-jax" / "xla"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
    assert compile_cache.resolve_dir() == tmp_path / "jax"
    monkeypatch.setenv("QWEN3TTS_COMPILE_CACHE", str(tmp_path / "ours"))
    assert compile_cache.resolve_dir() == tmp_path / "ours"
    assert compile_cache.resolve_dir(tmp_path / "flag") == tmp_path / "flag"
    assert compile_cache.resolve_dir(tmp_path / "flag", enabled=False) is None
    monkeypatch.setenv("QWEN3TTS_COMPILE_CACHE", "off")
    assert compile_cache.resolve_dir() is None
    blocked = tmp_path / "file"
    blocked.write_text("x")
    with pytest.raises(PermissionError, match=r"compilation cache .*file/sub: cannot create it"):
        compile_cache.enable(blocked / "sub")


# --------------------------------------------------------------------------------------------
# Random models: a folder in the released layout, no temp leak, a short budget
# --------------------------------------------------------------------------------------------


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_saved_random_folder_loads_to_the_random_model(tmp_path):
    from qwen3tts_jax.inspection import inspect_folder
    from qwen3tts_jax.random_model import save_random_model

    old = os.umask(0o022)
    try:
        folder = save_random_model("random:tiny-base", tmp_path / "tiny-base", seed=3)
    finally:
        os.umask(old)
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    assert names == [
        "config.json",
        "generation_config.json",
        "merges.txt",
        "model.safetensors",
        "speech_tokenizer",
        "speech_tokenizer/config.json",
        "speech_tokenizer/model.safetensors",
        "tokenizer_config.json",
        "vocab.json",
    ]
    assert all(_mode(p) == (0o755 if p.is_dir() else 0o644) for p in [folder, *folder.rglob("*")])
    assert all(part.keys.ok for part in inspect_folder(folder))

    saved, built = Qwen3TTSModel.from_pretrained(folder), Qwen3TTSModel.from_pretrained("random:tiny-base", seed=3)
    for name, a, b in (
        ("model", saved.params, built.params),
        ("codec", saved.speech_tokenizer.params, built.speech_tokenizer.params),
    ):
        la, lb = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
        assert [p for p, _ in la] == [p for p, _ in lb], name
        for (path, x), (_, y) in zip(la, lb):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f"{name} {jax.tree_util.keystr(path)}")
    assert saved.config == built.config and saved.generation_config == built.generation_config
    text = "Hello, world! Ünïcödé."
    assert (
        saved.text_tokenizer.assistant_text_ids(text).input_ids
        == built.text_tokenizer.assistant_text_ids(text).input_ids
    )
    assert saved.speech_tokenizer.config == built.speech_tokenizer.config


def test_random_model_load_leaves_no_temp_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model = Qwen3TTSModel.from_pretrained("random:tiny")
    assert list(tmp_path.iterdir()) == []
    assert model.text_tokenizer.assistant_text_ids("Still works.").input_ids


def test_random_models_have_a_short_default_budget():
    model = Qwen3TTSModel.from_pretrained("random:tiny-voicedesign")
    assert (
        model.generation_config.max_new_tokens
        == presets.RANDOM_MAX_NEW_TOKENS
        < presets.GENERATION_CONFIG["max_new_tokens"]
    )


# --------------------------------------------------------------------------------------------
# Converted folders, batch settings: what they are, their permissions
# --------------------------------------------------------------------------------------------


def test_converted_folder_is_inspectable_refused_by_from_pretrained_and_0755(tmp_path):
    from qwen3tts_jax.convert import convert, load_converted
    from qwen3tts_jax.inspection import inspect_folder
    from qwen3tts_jax.random_model import save_random_model

    folder = save_random_model("random:tiny", tmp_path / "tiny")
    old = os.umask(0o022)
    try:
        out = convert(folder, tmp_path / "conv")
    finally:
        os.umask(old)
    assert all(_mode(p) == (0o755 if p.is_dir() else 0o644) for p in [out, *out.rglob("*")])
    parts = inspect_folder(out)
    assert [p.name.endswith("converted (params.safetensors)") for p in parts] == [True, True]
    assert all(p.keys.ok and p.tensors > 0 for p in parts)
    params, codec = load_converted(out)
    assert "talker" in params and set(codec) == {"encoder", "decoder"}
    with pytest.raises(ValueError, match=r"is a converted folder .* pass that folder"):
        Qwen3TTSModel.from_pretrained(out)


def test_batch_settings_file_is_0644(tmp_path):
    from qwen3tts_jax import batch

    old = os.umask(0o022)
    try:
        batch.prepare_out_dir(tmp_path / "out", {"model": "m", "seed": 0})
    finally:
        os.umask(old)
    assert _mode(tmp_path / "out" / "batch.json") == 0o644


# --------------------------------------------------------------------------------------------
# What --help and the README say
# --------------------------------------------------------------------------------------------


def test_help_lists_every_random_model_and_real_options(capsys):
    from qwen3tts_jax import cli

    parser = cli.build_parser()
    top = parser.format_help()
    for name in presets.random_model_names():
        assert name in top, name
    sub = {a.dest: a for a in parser._subparsers._group_actions[0].choices["synthesize"]._actions}
    assert {"list_speakers", "list_languages", "compile_cache", "no_compile_cache", "verbose"} <= set(sub)
    assert "english" in sub["language"].help and "--list-speakers" in sub["speaker"].help
    convert = parser._subparsers._group_actions[0].choices["convert"]
    assert all(a.help for a in convert._actions if a.dest in ("dir", "out", "dtype"))
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("qwen3tts-jax ")


def test_readme_names_every_command_and_the_random_budget():
    text = README.read_text(encoding="utf-8")
    section = text.split("## Command line", 1)[1].split("\n## ", 1)[0]
    for command in ("synthesize", "batch", "inspect", "convert", "save-random", "--list-speakers", "--version"):
        assert f"qwen3tts-jax {command}" in section or f" {command}" in section, command
    for name in presets.random_model_names():
        assert f"`{name}`" in text, name
    assert f"{presets.RANDOM_MAX_NEW_TOKENS} tokens" in text and "QWEN3TTS_COMPILE_CACHE" in text
