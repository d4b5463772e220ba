"""The command line on good input: listing speakers and languages without loading weights, a
saved random folder used as --model (Base, x-vector cloning), warnings as one line, batch
defaults checked against the model type. Bad input is in tests/test_bad_input.py."""

from __future__ import annotations

import numpy as np
import pytest

from qwen3tts_jax import cli, presets


def test_list_speakers_and_languages_read_only_the_config(capsys, monkeypatch):
    from qwen3tts_jax.api import Qwen3TTSModel

    def no_load(*a, **k):
        raise AssertionError("listing must not load the model")

    monkeypatch.setattr(Qwen3TTSModel, "from_pretrained", no_load)
    assert cli.main(["synthesize", "--model", "random:tiny", "--list-speakers"]) == 0
    assert capsys.readouterr().out.split() == sorted(presets.SPEAKERS)
    assert cli.main(["synthesize", "--model", "random:tiny-base", "--list-speakers", "--list-languages"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "no preset speakers" in out[0] and out[1] == "auto"
    assert sorted(out[2:]) == sorted(k for k in presets.LANGUAGES if "dialect" not in k)


@pytest.mark.slow
def test_saved_base_folder_as_model_with_x_vector_cloning(tmp_path, capsys):
    import soundfile as sf

    from qwen3tts_jax.random_model import save_random_model

    folder = save_random_model("random:tiny-base", tmp_path / "tiny-base")
    t = np.arange(24000) / 24000
    sf.write(tmp_path / "ref.wav", (0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32), 24000)
    out = tmp_path / "clone.wav"
    rc = cli.main(
        [
            "synthesize",
            "--model",
            str(folder),
            "--text",
            "Cloned.",
            "--ref-audio",
            str(tmp_path / "ref.wav"),
            "--x-vector-only",
            "--max-new-tokens",
            "4",
            "--greedy",
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0, err
    audio, sr = sf.read(out)
    assert sr == 24000 and 0 < len(audio) <= 3 * 1920
    assert "first audio after" in err and "compiling and running the first frame" in err


@pytest.mark.slow
def test_instruct_on_0b6_is_one_warning_line(tmp_path, capsys):
    out = tmp_path / "x.wav"
    rc = cli.main(
        [
            "synthesize",
            "--model",
            "random:tiny",
            "--speaker",
            "ryan",
            "--instruct",
            "Softly.",
            "--text",
            "Hi.",
            "--max-new-tokens",
            "3",
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0 and out.is_file(), err
    assert "warning: instruct is ignored: the 0.6B CustomVoice model takes no instruction" in err
    assert "UserWarning" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--ref-audio", "ref.wav"], r"--ref-audio is not used by a CustomVoice model"),
        (["--language", "klingon"], r"--language: Unsupported language"),
        (["--speaker", "bob"], r"--speaker: Unsupported speaker"),
    ],
)
def test_batch_defaults_are_checked_against_the_model(tmp_path, capsys, flags, message):
    import re

    (tmp_path / "t.txt").write_text("Hello.\n", encoding="utf-8")
    (tmp_path / "ref.wav").write_bytes(b"")
    rc = cli.main(
        [
            "batch",
            "--model",
            "random:tiny",
            "--input",
            str(tmp_path / "t.txt"),
            "--out-dir",
            str(tmp_path / "out"),
            *flags,
        ]
    )
    assert rc == 2 and re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_ctrl_c_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from qwen3tts_jax.api import Qwen3TTSModel

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(Qwen3TTSModel, "from_pretrained", interrupted)
    out = tmp_path / "x.wav"
    assert cli.main(["synthesize", "--model", "random:tiny", "--text", "Hi.", "--out", str(out)]) == 130
    assert capsys.readouterr().err.strip() == "interrupted: nothing was written" and not out.exists()
