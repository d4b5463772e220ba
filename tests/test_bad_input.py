"""Bad input, one case per row of docs/bad-input.md: the API, the command line, batch input files,
checkpoints and audio. Each case asserts the exception type (API) or the exit status (CLI), that
the message names the argument / file / field and the value, that the refusal comes before any
synthesis (the generation, codec and speaker-encoder entry points are replaced by a tripwire,
and cases marked so must not even load the model), and that no output file or temporary is left
behind (the working folder and a private temp folder are compared before and after).

docs/bad-input.md is written from these cases and the messages they produce:
    WRITE_BAD_INPUT_DOC=1 PYTHONPATH=$PWD .venv/bin/python -m pytest -q tests/test_bad_input.py
and `test_doc_table_is_current` fails when a row there differs from what its case now prints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qwen3tts_jax import cli
from qwen3tts_jax.api import Qwen3TTSModel
from qwen3tts_jax.prompt import VoiceClonePromptItem

ROOT = Path(__file__).resolve().parent.parent
_LOAD = Qwen3TTSModel.from_pretrained  # the real loader (the `env` fixture replaces the attribute)
DOC = ROOT / "docs" / "bad-input.md"


class SynthesisReached(AssertionError):
    """Raised by the tripwires: a bad input got as far as generation, encoding or decoding."""


@dataclasses.dataclass(frozen=True)
class Case:
    key: str
    where: str  # API, CLI, batch file, checkpoint, audio
    what: str  # the bad input, as markdown
    run: Callable[[Env], Any]  # raises (API) or returns an exit status (CLI)
    expect: Any  # an exception class, a warning class, or a CLI exit status
    names: tuple[str, ...]  # the message must contain each: the argument/file/field and the value
    loads: bool = False  # the model may be loaded before the refusal (it needs the model's lists)


# --------------------------------------------------------------------------------------------
# The environment a case runs in
# --------------------------------------------------------------------------------------------


class Env:
    def __init__(self, cwd: Path, models: dict, readonly: Path | None, saved: Path):
        self.cwd, self._models, self._readonly, self._saved = cwd, models, readonly, saved
        self.inputs: set[Path] = set()
        self.stderr = ""
        self.loads: list[str] = []

    # inputs a case creates (allowed to exist afterwards)
    def file(self, name: str, content: bytes | str = b"") -> str:
        p = self.cwd / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)
        self.inputs.update([p, *p.relative_to(self.cwd).parents])
        return name

    def folder(self, name: str) -> str:
        (self.cwd / name).mkdir(parents=True, exist_ok=True)
        self.inputs.add(self.cwd / name)
        return name

    def wav(self, name: str = "ref.wav", seconds: float = 1.0) -> str:
        import soundfile as sf

        t = np.arange(int(24000 * seconds)) / 24000
        self.file(name)
        sf.write(self.cwd / name, (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), 24000)
        return name

    def saved(self, name: str = "tiny") -> str:
        """A copy of a `save-random random:tiny` folder (to damage)."""
        shutil.copytree(self._saved, self.cwd / name)
        self.inputs.update(self.cwd.glob(f"{name}/**/*"))
        self.inputs.add(self.cwd / name)
        return name

    def readonly(self) -> Path:
        if self._readonly is None:
            pytest.skip("no read-only folder on this machine (root without mount)")
        return self._readonly

    def model(self, name: str) -> Qwen3TTSModel:
        return self._models(name)

    def cli(self, *argv: str) -> int:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = cli.main(list(argv))
            except SystemExit as exit_:  # argparse's own errors
                rc = exit_.code
        self.stderr = err.getvalue()
        return rc


def _ro_mount(folder: Path) -> bool:
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return True
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return True


@pytest.fixture(scope="module")
def readonly_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ro") / "ro"
    folder.mkdir()
    ok = _ro_mount(folder)
    yield folder if ok else None
    if ok and os.geteuid() == 0:
        subprocess.run(["umount", str(folder)], capture_output=True, timeout=30)
    elif ok:
        folder.chmod(0o755)


@pytest.fixture(scope="module")
def models():
    built: dict[str, Qwen3TTSModel] = {}

    def get(name: str) -> Qwen3TTSModel:
        if name not in built:
            built[name] = _LOAD(name)
        return built[name]

    return get


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    from qwen3tts_jax.random_model import save_random_model

    return save_random_model("random:tiny", tmp_path_factory.mktemp("saved") / "tiny")


@pytest.fixture
def env(tmp_path, monkeypatch, models, readonly_dir, saved_tiny):
    from qwen3tts_jax import speaker_encoder
    from qwen3tts_jax.codec import encoder
    from qwen3tts_jax.speech_tokenizer import Qwen3TTSTokenizer

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    monkeypatch.setenv("QWEN3TTS_COMPILE_CACHE", "off")  # the in-process JAX config stays as it is
    e = Env(cwd, models, readonly_dir, saved_tiny)

    def tripwire(what):
        def fail(*a, **k):
            raise SynthesisReached(f"reached {what}")

        return fail

    from qwen3tts_jax.engine import Engine

    monkeypatch.setattr(Engine, "submit", tripwire("generation (Engine.submit)"))
    monkeypatch.setattr(encoder, "encode", tripwire("the codec encoder"))
    monkeypatch.setattr(speaker_encoder, "extract_speaker_embedding", tripwire("the speaker encoder"))
    monkeypatch.setattr(Qwen3TTSTokenizer, "decode", tripwire("the codec decoder"))
    real = _LOAD.__func__

    def from_pretrained(cls, name, *a, **k):
        e.loads.append(str(name))
        if (
            str(name).startswith("random:")
            and not a
            and not (set(k) - {"dtype", "seed", "mesh"})
            and k.get("dtype") is None
            and k.get("seed", 0) == 0
            and k.get("mesh") is None
        ):
            return models(str(name))
        return real(cls, name, *a, **k)

    monkeypatch.setattr(Qwen3TTSModel, "from_pretrained", classmethod(from_pretrained))
    e.private_tmp = private_tmp
    return e


# --------------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------------


def _emb(n=64):
    return np.ones(n, np.float32)


def _item(**kw):
    base = dict(ref_code=None, ref_spk_embedding=_emb(), x_vector_only_mode=True, icl_mode=False, ref_text=None)
    return VoiceClonePromptItem(**{**base, **kw})


def _clone(e, **kw):
    return e.model("random:tiny-base").generate_voice_clone("Hello.", **kw)


def _custom(e, **kw):
    return e.model("random:tiny").generate_custom_voice("Hello.", kw.pop("speaker", "ryan"), **kw)


def _jsonl(e, rows, name="items.jsonl"):
    return e.file(name, "".join(json.dumps(r) + "\n" for r in rows))


T, TB, TD = "random:tiny", "random:tiny-base", "random:tiny-voicedesign"
SYN = ("synthesize", "--model")


def _syn(e, *extra, model=T, text="Hello.", out="x.wav"):
    args = [*SYN, model]
    if text is not None:
        args += ["--text", text]
    if out is not None:
        args += ["--out", out]
    return e.cli(*args, *extra)


def _batch_input(e, input_file, *extra, model=T, out="out"):
    return e.cli("batch", "--model", model, "--input", input_file, "--out-dir", out, *extra)


def _batch(e, rows, *extra, model=T):
    return _batch_input(e, _jsonl(e, rows), *extra, model=model)


CASES = [
    # ---------------------------------------------------------------- API: sampling arguments
    Case("api-seed-str", "API", '`seed="abc"`', lambda e: _custom(e, seed="abc"), ValueError, ("seed", "'abc'")),
    Case(
        "api-seed-numeric-str",
        "API",
        '`seed="5"` (a string)',
        lambda e: _custom(e, seed="5"),
        ValueError,
        ("seed", "'5'"),
    ),
    Case("api-seed-float", "API", "`seed=1.7`", lambda e: _custom(e, seed=1.7), ValueError, ("seed", "1.7")),
    Case("api-seed-huge", "API", "`seed=2**70`", lambda e: _custom(e, seed=2**70), ValueError, ("seed", str(2**70))),
    Case("api-seed-negative", "API", "`seed=-1`", lambda e: _custom(e, seed=-1), ValueError, ("seed", "-1")),
    Case("api-key-str", "API", '`key="abc"`', lambda e: _custom(e, key="abc"), TypeError, ("key", "'abc'")),
    Case(
        "api-key-shape",
        "API",
        "`key=np.zeros(3, np.uint32)`",
        lambda e: _custom(e, key=np.zeros(3, np.uint32)),
        ValueError,
        ("key", "(3,)"),
    ),
    Case(
        "api-seed-and-key",
        "API",
        "both `seed=1` and `key=`",
        lambda e: _custom(e, seed=1, key=np.zeros(2, np.uint32)),
        ValueError,
        ("seed=", "key=", "1"),
    ),
    Case(
        "api-max-new-tokens-1",
        "API",
        "`max_new_tokens=1` (would give no audio)",
        lambda e: _custom(e, max_new_tokens=1),
        ValueError,
        ("max_new_tokens", "got 1"),
    ),
    Case(
        "api-max-new-tokens-bool",
        "API",
        "`max_new_tokens=True`",
        lambda e: _custom(e, max_new_tokens=True),
        ValueError,
        ("max_new_tokens", "True"),
    ),
    Case(
        "api-non-streaming-str",
        "API",
        '`non_streaming_mode="no"`',
        lambda e: _custom(e, non_streaming_mode="no"),
        ValueError,
        ("non_streaming_mode", "'no'"),
    ),
    Case(
        "api-from-pretrained-seed",
        "API",
        '`from_pretrained("random:tiny-voicedesign", seed="x")`',
        lambda e: Qwen3TTSModel.from_pretrained("random:tiny-voicedesign", seed="x"),
        ValueError,
        ("seed", "'x'"),
        loads=True,
    ),
    # ---------------------------------------------------------------- API: voices
    Case(
        "api-speaker", "API", '`speaker="bob"`', lambda e: _custom(e, speaker="bob"), ValueError, ("speaker", "'bob'")
    ),
    Case(
        "api-language",
        "API",
        '`language="klingon"`',
        lambda e: _custom(e, language="klingon"),
        ValueError,
        ("language", "'klingon'"),
    ),
    Case(
        "api-text-empty",
        "API",
        '`text="   "`',
        lambda e: e.model(T).generate_custom_voice("   ", "ryan"),
        ValueError,
        ("text[0]", "'   '"),
    ),
    Case(
        "api-instruct-0b6",
        "API",
        "`instruct=` on a 0.6B CustomVoice model",
        lambda e: _custom(e, instruct="Softly."),
        UserWarning,
        ("instruct", "0.6B"),
    ),
    Case(
        "api-design-no-instruct",
        "API",
        "`generate_voice_design(text, instruct=None)`",
        lambda e: e.model(TD).generate_voice_design("Hello.", None),
        ValueError,
        ("instruct[0]", "None"),
    ),
    Case(
        "api-wrong-model-type",
        "API",
        "`generate_voice_design` on a CustomVoice model",
        lambda e: e.model(T).generate_voice_design("Hello.", "Calm."),
        ValueError,
        ("voice_design", "custom_voice"),
    ),
    # ---------------------------------------------------------------- API: voice clone prompts
    Case(
        "api-prompt-str",
        "API",
        '`voice_clone_prompt="garbage"`',
        lambda e: _clone(e, voice_clone_prompt="garbage"),
        TypeError,
        ("voice_clone_prompt", "'garbage'"),
    ),
    Case(
        "api-prompt-ints",
        "API",
        "`voice_clone_prompt=[1, 2]`",
        lambda e: _clone(e, voice_clone_prompt=[1, 2]),
        TypeError,
        ("voice_clone_prompt[0]", "int 1"),
    ),
    Case(
        "api-prompt-dict-keys",
        "API",
        '`voice_clone_prompt={"ref_code": [None]}`',
        lambda e: _clone(e, voice_clone_prompt={"ref_code": [None]}),
        ValueError,
        ("voice_clone_prompt", "ref_spk_embedding"),
    ),
    Case(
        "api-prompt-embedding",
        "API",
        "a prompt item whose embedding has 10 values (the model needs 64)",
        lambda e: _clone(e, voice_clone_prompt=[_item(ref_spk_embedding=np.ones(10))]),
        ValueError,
        ("voice_clone_prompt[0].ref_spk_embedding", "(10,)"),
    ),
    Case(
        "api-prompt-code-shape",
        "API",
        "a prompt item with `ref_code` of shape (10, 3)",
        lambda e: _clone(
            e,
            voice_clone_prompt=[
                _item(ref_code=np.zeros((10, 3), np.int64), x_vector_only_mode=False, icl_mode=True, ref_text="Hi.")
            ],
        ),
        ValueError,
        ("voice_clone_prompt[0].ref_code", "(10, 3)"),
    ),
    Case(
        "api-prompt-code-range",
        "API",
        "a prompt item with a code of 5000",
        lambda e: _clone(
            e,
            voice_clone_prompt=[
                _item(ref_code=np.full((4, 16), 5000), x_vector_only_mode=False, icl_mode=True, ref_text="Hi.")
            ],
        ),
        ValueError,
        ("voice_clone_prompt[0].ref_code", "5000", "[0, 2047]"),
    ),
    Case(
        "api-prompt-icl-no-text",
        "API",
        "an ICL prompt item without `ref_text`",
        lambda e: _clone(
            e, voice_clone_prompt=[_item(ref_code=np.zeros((4, 16), np.int64), x_vector_only_mode=False, icl_mode=True)]
        ),
        ValueError,
        ("voice_clone_prompt[0]", "ref_text", "None"),
    ),
    Case(
        "api-prompt-flag",
        "API",
        'a prompt item with `x_vector_only_mode="yes"`',
        lambda e: _clone(e, voice_clone_prompt=[_item(x_vector_only_mode="yes")]),
        ValueError,
        ("voice_clone_prompt[0].x_vector_only_mode", "'yes'"),
    ),
    Case(
        "api-ref-count",
        "API",
        "`ref_audio=[a, b]` for one text",
        lambda e: _clone(e, ref_audio=[e.wav("a.wav"), e.wav("b.wav")], x_vector_only_mode=True),
        ValueError,
        ("ref_audio has 2 items", "text has 1"),
    ),
    Case(
        "api-xvec-str",
        "API",
        '`x_vector_only_mode="yes"`',
        lambda e: _clone(e, ref_audio=e.wav(), x_vector_only_mode="yes"),
        ValueError,
        ("x_vector_only_mode[0]", "'yes'"),
    ),
    Case(
        "api-no-ref",
        "API",
        "voice clone with neither `ref_audio` nor `voice_clone_prompt`",
        lambda e: _clone(e),
        ValueError,
        ("voice_clone_prompt", "ref_audio"),
    ),
    # ---------------------------------------------------------------- audio
    Case(
        "audio-sr-1",
        "audio",
        "a 2 s array labelled `sr=1` (would be 13 hours after resampling)",
        lambda e: _clone(e, ref_audio=(np.ones(48000, np.float32) * 0.1, 1), x_vector_only_mode=True),
        ValueError,
        ("ref_audio[0]", "1 Hz", "48000 s"),
    ),
    Case(
        "audio-sr-huge",
        "audio",
        "`sr=10**7`",
        lambda e: e.model(TB).speech_tokenizer.encode(np.ones(48000, np.float32) * 0.1, sr=10**7),
        ValueError,
        ("audios", "10000000 Hz"),
    ),
    Case(
        "audio-too-long",
        "audio",
        "a 301 s reference",
        lambda e: _clone(e, ref_audio=(np.full(301 * 24000, 0.1, np.float32), 24000), x_vector_only_mode=True),
        ValueError,
        ("ref_audio[0]", "301.0 s", "300 s"),
    ),
    Case(
        "audio-missing",
        "audio",
        '`ref_audio="nope.wav"` (no such file)',
        lambda e: _clone(e, ref_audio="nope.wav", x_vector_only_mode=True),
        FileNotFoundError,
        ("ref_audio[0]", "nope.wav"),
    ),
    Case(
        "audio-not-audio",
        "audio",
        "a text file named `.wav`",
        lambda e: _clone(e, ref_audio=e.file("text.wav", "just words"), x_vector_only_mode=True),
        ValueError,
        ("ref_audio[0]", "text.wav"),
    ),
    Case(
        "audio-nan",
        "audio",
        "a reference with NaN samples",
        lambda e: _clone(e, ref_audio=(np.full(24000, np.nan, np.float32), 24000), x_vector_only_mode=True),
        ValueError,
        ("ref_audio[0]", "NaN"),
    ),
    Case(
        "audio-silent",
        "audio",
        "an all-zero reference",
        lambda e: _clone(e, ref_audio=(np.zeros(24000, np.float32), 24000), x_vector_only_mode=True),
        ValueError,
        ("ref_audio[0]", "silent"),
    ),
    Case(
        "audio-no-sr",
        "audio",
        "a bare array without `sr`",
        lambda e: _clone(e, ref_audio=np.ones(24000, np.float32), x_vector_only_mode=True),
        ValueError,
        ("ref_audio", "sampling rate"),
    ),
    # ---------------------------------------------------------------- CLI: output and text
    Case(
        "cli-out-is-folder",
        "CLI",
        "`--out dir.wav` where `dir.wav/` is a folder",
        lambda e: (e.folder("dir.wav"), _syn(e, out="dir.wav"))[1],
        2,
        ("--out", "dir.wav", "folder"),
    ),
    Case(
        "cli-out-readonly",
        "CLI",
        "`--out` in a read-only folder",
        lambda e: _syn(e, out=str(e.readonly() / "x.wav")),
        2,
        ("--out", "x.wav", "cannot write"),
    ),
    Case(
        "cli-out-no-folder",
        "CLI",
        "`--out nodir/x.wav`",
        lambda e: _syn(e, out="nodir/x.wav"),
        2,
        ("--out", "nodir/x.wav", "does not exist"),
    ),
    Case("cli-out-extension", "CLI", "`--out x.mp3`", lambda e: _syn(e, out="x.mp3"), 2, ("--out", "'.mp3'")),
    Case("cli-no-out", "CLI", "no `--out`", lambda e: _syn(e, out=None), 2, ("--out",)),
    Case(
        "cli-text-file-folder",
        "CLI",
        "`--text-file texts/` (a folder)",
        lambda e: _syn(e, "--text-file", e.folder("texts"), text=None),
        2,
        ("--text-file", "texts", "folder"),
    ),
    Case(
        "cli-text-file-latin1",
        "CLI",
        "`--text-file` in Latin-1, not UTF-8",
        lambda e: _syn(e, "--text-file", e.file("latin1.txt", "caf\xe9".encode("latin-1")), text=None),
        2,
        ("--text-file", "latin1.txt", "0xe9"),
    ),
    Case(
        "cli-text-file-missing",
        "CLI",
        "`--text-file nofile.txt`",
        lambda e: _syn(e, "--text-file", "nofile.txt", text=None),
        2,
        ("--text-file", "nofile.txt"),
    ),
    Case("cli-text-empty", "CLI", '`--text ""`', lambda e: _syn(e, text=""), 2, ("--text", "''")),
    # ---------------------------------------------------------------- CLI: numbers
    Case(
        "cli-max-new-tokens-1",
        "CLI",
        "`--max-new-tokens 1`",
        lambda e: _syn(e, "--max-new-tokens", "1"),
        2,
        ("--max-new-tokens", "got 1"),
    ),
    Case(
        "cli-max-new-tokens-abc",
        "CLI",
        "`--max-new-tokens abc`",
        lambda e: _syn(e, "--max-new-tokens", "abc"),
        2,
        ("--max-new-tokens", "'abc'"),
    ),
    Case(
        "cli-seed-huge",
        "CLI",
        "`--seed 4294967296`",
        lambda e: _syn(e, "--seed", str(2**32)),
        2,
        ("--seed", str(2**32)),
    ),
    Case(
        "cli-cpu-devices-0",
        "CLI",
        "`--cpu-devices 0`",
        lambda e: _syn(e, "--cpu-devices", "0"),
        2,
        ("--cpu-devices", "0"),
    ),
    Case(
        "cli-cpu-devices-neg",
        "CLI",
        "`--cpu-devices -3`",
        lambda e: _syn(e, "--cpu-devices", "-3"),
        2,
        ("--cpu-devices", "-3"),
    ),
    Case(
        "cli-process-id",
        "CLI",
        "`--num-processes 2 --process-id 2`",
        lambda e: _syn(e, "--num-processes", "2", "--process-id", "2"),
        2,
        ("--process-id", "2", "[0, 1]"),
    ),
    Case(
        "cli-chunk-frames",
        "CLI",
        "`--chunk-frames 0`",
        lambda e: _syn(e, "--chunk-frames", "0"),
        2,
        ("--chunk-frames", "0"),
    ),
    Case("cli-dtype", "CLI", "`--dtype int8`", lambda e: _syn(e, "--dtype", "int8"), 2, ("--dtype", "'int8'")),
    # ---------------------------------------------------------------- CLI: model and voice flags
    Case(
        "cli-model-missing",
        "CLI",
        "`--model /nonexistent`",
        lambda e: _syn(e, model="/nonexistent"),
        2,
        ("--model", "/nonexistent"),
    ),
    Case(
        "cli-model-random-unknown",
        "CLI",
        "`--model random:Tiny`",
        lambda e: _syn(e, model="random:Tiny"),
        2,
        ("random:Tiny", "random:tiny"),
    ),
    Case(
        "cli-base-ref-no-text",
        "CLI",
        "a Base model, `--ref-audio` without `--ref-text`",
        lambda e: _syn(e, "--ref-audio", e.wav(), model=TB),
        2,
        ("--ref-text", "--x-vector-only"),
    ),
    Case(
        "cli-base-no-ref", "CLI", "a Base model without `--ref-audio`", lambda e: _syn(e, model=TB), 2, ("--ref-audio",)
    ),
    Case(
        "cli-base-ref-missing",
        "CLI",
        "`--ref-audio missing.wav`",
        lambda e: _syn(e, "--ref-audio", "missing.wav", "--x-vector-only", model=TB),
        2,
        ("--ref-audio", "missing.wav"),
    ),
    Case(
        "cli-ref-on-custom",
        "CLI",
        "`--ref-audio` on a CustomVoice model",
        lambda e: _syn(e, "--ref-audio", e.wav()),
        2,
        ("--ref-audio", "custom_voice"),
    ),
    Case(
        "cli-speaker-on-base",
        "CLI",
        "`--speaker` on a Base model",
        lambda e: _syn(e, "--speaker", "ryan", "--ref-audio", e.wav(), "--x-vector-only", model=TB),
        2,
        ("--speaker", "base"),
    ),
    Case(
        "cli-design-no-instruct",
        "CLI",
        "a VoiceDesign model without `--instruct`",
        lambda e: _syn(e, model=TD),
        2,
        ("--instruct",),
    ),
    Case("cli-speaker", "CLI", "`--speaker bob`", lambda e: _syn(e, "--speaker", "bob"), 2, ("--speaker", "'bob'")),
    Case(
        "cli-language",
        "CLI",
        "`--language klingon`",
        lambda e: _syn(e, "--language", "klingon"),
        2,
        ("--language", "'klingon'"),
    ),
    Case(
        "cli-model-converted",
        "CLI",
        "`--model` given a folder written by `convert`",
        lambda e: (
            e.cli("convert", e.saved(), "conv"),
            e.inputs.update(e.cwd.glob("conv/**/*")),
            e.inputs.add(e.cwd / "conv"),
            _syn(e, model="conv"),
        )[-1],
        2,
        ("--model", "'conv'", "converted"),
    ),
    # ---------------------------------------------------------------- CLI: inspect / convert / save-random
    Case(
        "cli-inspect-random",
        "CLI",
        "`inspect random:tiny`",
        lambda e: e.cli("inspect", "random:tiny"),
        2,
        ("random:tiny", "save-random"),
    ),
    Case(
        "cli-convert-random",
        "CLI",
        "`convert random:tiny OUT`",
        lambda e: e.cli("convert", "random:tiny", "out"),
        2,
        ("random:tiny", "save-random"),
    ),
    Case(
        "cli-convert-readonly",
        "CLI",
        "`convert DIR OUT` with OUT in a read-only folder",
        lambda e: e.cli("convert", e.saved(), str(e.readonly() / "out")),
        2,
        ("OUT", "out", "cannot write"),
    ),
    Case(
        "cli-convert-exists",
        "CLI",
        "`convert DIR OUT` with OUT already there",
        lambda e: e.cli("convert", e.saved(), e.folder("out")),
        2,
        ("OUT", "out", "already exists"),
    ),
    Case(
        "cli-save-random-unknown",
        "CLI",
        "`save-random random:huge OUT`",
        lambda e: e.cli("save-random", "random:huge", "out"),
        2,
        ("random:huge", "random:tiny"),
    ),
    Case(
        "cli-save-random-exists",
        "CLI",
        "`save-random random:tiny OUT` with OUT already there",
        lambda e: e.cli("save-random", "random:tiny", e.folder("out")),
        2,
        ("OUT", "out", "already exists"),
    ),
    # ---------------------------------------------------------------- batch files
    Case(
        "batch-speaker",
        "batch file",
        'item 2 of items.jsonl has `"speaker": "bob"`',
        lambda e: _batch(e, [{"id": "a", "text": "One."}, {"id": "b", "text": "Two.", "speaker": "bob"}]),
        2,
        ("items.jsonl:2", "'b'", "'bob'"),
        loads=True,
    ),
    Case(
        "batch-language",
        "batch file",
        'item 2 has `"language": "klingon"`',
        lambda e: _batch(e, [{"id": "a", "text": "One."}, {"id": "b", "text": "Two.", "language": "klingon"}]),
        2,
        ("items.jsonl:2", "'b'", "'klingon'"),
        loads=True,
    ),
    Case(
        "batch-ref-missing",
        "batch file",
        "item 2's `ref_audio` does not exist (Base model)",
        lambda e: _batch(
            e,
            [
                {"id": "a", "text": "One.", "ref_audio": e.wav(), "x_vector_only": True},
                {"id": "b", "text": "Two.", "ref_audio": "missing.wav", "x_vector_only": True},
            ],
            model=TB,
        ),
        2,
        ("items.jsonl:2", "'b'", "missing.wav"),
        loads=True,
    ),
    Case(
        "batch-no-ref",
        "batch file",
        "an item without `ref_audio` on a Base model",
        lambda e: _batch(e, [{"id": "a", "text": "One."}], model=TB),
        2,
        ("'a'", "items.jsonl:1", "ref_audio"),
        loads=True,
    ),
    Case(
        "batch-ref-no-text",
        "batch file",
        "an item with `ref_audio` and no `ref_text` (Base model)",
        lambda e: _batch(e, [{"id": "a", "text": "One.", "ref_audio": e.wav()}], model=TB),
        2,
        ("items.jsonl:1", "'a'", "ref_text"),
        loads=True,
    ),
    Case(
        "batch-field-for-other-type",
        "batch file",
        "`ref_audio` in an item for a CustomVoice model",
        lambda e: _batch(e, [{"id": "a", "text": "One.", "ref_audio": e.wav()}]),
        2,
        ("items.jsonl:1", "'a'", "'ref_audio'"),
        loads=True,
    ),
    Case(
        "batch-typo",
        "batch file",
        "a field typo `speakr`",
        lambda e: _batch(e, [{"text": "One."}, {"text": "Two.", "speakr": "ryan"}]),
        2,
        ("items.jsonl:2", "'speakr'"),
    ),
    Case(
        "batch-json",
        "batch file",
        "a malformed JSON line",
        lambda e: _batch_input(e, e.file("items.jsonl", '{"text": "a"}\n{"text": \n')),
        2,
        ("items.jsonl:2", "JSON"),
    ),
    Case(
        "batch-latin1",
        "batch file",
        "an input file in Latin-1",
        lambda e: _batch_input(e, e.file("texts.txt", "caf\xe9\n".encode("latin-1"))),
        2,
        ("--input", "texts.txt", "0xe9"),
    ),
    Case(
        "batch-input-folder",
        "batch file",
        "`--input` names a folder",
        lambda e: _batch_input(e, e.folder("inputs")),
        2,
        ("--input", "inputs"),
    ),
    Case(
        "batch-out-dir-file",
        "batch file",
        "`--out-dir` names a file",
        lambda e: _batch_input(e, e.file("t.txt", "Hi.\n"), out=e.file("o.txt", "x")),
        2,
        ("--out-dir", "o.txt"),
    ),
    Case(
        "batch-out-dir-readonly",
        "batch file",
        "`--out-dir` in a read-only folder",
        lambda e: _batch_input(e, e.file("t.txt", "Hi.\n"), out=str(e.readonly() / "o")),
        2,
        ("--out-dir", "o", "cannot write"),
    ),
    Case(
        "batch-batch-size",
        "batch file",
        "`--batch-size 0`",
        lambda e: _batch_input(e, e.file("t.txt", "Hi.\n"), "--batch-size", "0"),
        2,
        ("--batch-size", "0"),
    ),
    # ---------------------------------------------------------------- checkpoints
    Case(
        "ckpt-truncated",
        "checkpoint",
        "a truncated `model.safetensors` (`--model DIR`)",
        lambda e: (_truncate(e.cwd / e.saved() / "model.safetensors"), _syn(e, model="tiny"))[1],
        2,
        ("model.safetensors", "truncated"),
        loads=True,
    ),
    Case(
        "ckpt-config-json",
        "checkpoint",
        "a `config.json` that is not JSON",
        lambda e: ((e.cwd / e.saved() / "config.json").write_text("{oops"), _syn(e, model="tiny"))[1],
        2,
        ("config.json", "not valid JSON"),
    ),
    Case(
        "ckpt-model-type",
        "checkpoint",
        '`"model_type": "llama"` in config.json',
        lambda e: (_edit_config(e.cwd / e.saved(), model_type="llama"), _syn(e, model="tiny"))[1],
        2,
        ("config.json", "'llama'"),
    ),
    Case(
        "ckpt-missing-key",
        "checkpoint",
        "a tensor missing from `model.safetensors`",
        lambda e: (
            _drop_key(e.cwd / e.saved() / "model.safetensors", "talker.codec_head.weight"),
            _syn(e, model="tiny"),
        )[1],
        2,
        ("tiny", "missing key talker.codec_head.weight"),
        loads=True,
    ),
    Case(
        "ckpt-no-speech-tokenizer",
        "checkpoint",
        "a model folder without `speech_tokenizer/`",
        lambda e: (shutil.rmtree(e.cwd / e.saved() / "speech_tokenizer"), _syn(e, model="tiny"))[1],
        2,
        ("--model", "tiny", "speech_tokenizer/config.json"),
    ),
    Case(
        "ckpt-inspect-empty",
        "checkpoint",
        "`inspect` on an empty folder",
        lambda e: e.cli("inspect", e.folder("empty")),
        2,
        ("empty", "config.json"),
    ),
]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, **changes}))


def _drop_key(path: Path, key: str) -> None:
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(path))
    del tensors[key]
    save_file(tensors, str(path))


# --------------------------------------------------------------------------------------------
# Running a case
# --------------------------------------------------------------------------------------------

MESSAGES: dict[str, str] = {}


def _error_line(stderr: str) -> str:
    """The `error:` line, with the indented detail lines that follow it (a key-table report)."""
    lines = stderr.splitlines()
    at = [i for i, x in enumerate(lines) if x.startswith("error:") or ": error: " in x]
    assert at, f"no error line in stderr:\n{stderr[-2000:]}"
    i = at[-1]
    detail = [x.strip() for x in lines[i + 1 :] if x.startswith("  ")]
    return " / ".join([lines[i][lines[i].index("error:") :], *detail])


def _normalise(message: str, e: Env) -> str:
    if e._readonly is not None:
        message = message.replace(str(e._readonly), "<read-only folder>")
    return message.replace(str(e.cwd) + os.sep, "").replace(str(e.cwd), ".")


def run_case(case: Case, e: Env) -> str:
    """Run `case`, check it, return the message the user sees (normalised for the doc)."""
    if isinstance(case.expect, int):
        rc = case.run(e)
        assert rc == case.expect, f"exit status {rc}, expected {case.expect}; stderr:\n{e.stderr[-2000:]}"
        assert "Traceback" not in e.stderr, e.stderr[-3000:]
        message = f"exit {rc}: {_error_line(e.stderr)}"
    elif isinstance(case.expect, type) and issubclass(case.expect, Warning):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(SynthesisReached):  # a warning, then the call goes on
                case.run(e)
        hits = [w for w in caught if issubclass(w.category, case.expect)]
        assert hits, f"no {case.expect.__name__}: {[str(w.message) for w in caught]}"
        message = f"{case.expect.__name__}: {hits[0].message}"
    else:
        with pytest.raises(case.expect) as info:
            case.run(e)
        assert type(info.value) is case.expect or not issubclass(type(info.value), SynthesisReached)
        message = f"{type(info.value).__name__}: {info.value}"
    for name in case.names:
        assert name in message, f"message does not name {name!r}: {message}"
    if not case.loads:
        assert not e.loads, f"loaded {e.loads} before refusing"
    return _normalise(message, e)


def _leftovers(e: Env) -> list[str]:
    found = set(e.cwd.rglob("*"))
    extra = sorted(str(p.relative_to(e.cwd)) for p in found - e.inputs)
    return extra + sorted(str(p) for p in Path(e.private_tmp).iterdir())


@pytest.mark.parametrize("case", CASES, ids=[c.key for c in CASES])
def test_bad_input(case, env):
    MESSAGES[case.key] = run_case(case, env)
    print(f"[bad-input] {case.key}: {MESSAGES[case.key]}")
    assert not _leftovers(env), f"left behind: {_leftovers(env)}"


def test_cases_are_many_and_distinct():
    assert len(CASES) >= 40 and len({c.key for c in CASES}) == len(CASES)
    assert {c.where for c in CASES} == {"API", "CLI", "batch file", "checkpoint", "audio"}


# --------------------------------------------------------------------------------------------
# docs/bad-input.md
# --------------------------------------------------------------------------------------------

HEADER = """# Bad input and what it gets

Every row is a case in `tests/test_bad_input.py`: the test feeds the input, checks the exception
type (API) or exit status (command line), that the message names the argument, file or field and
the value, that it comes before any synthesis (the model is not even loaded unless the check
needs its speaker or language lists), and that no output file or temporary folder is left. The
messages are the ones the tests saw (paths as the user typed them). Regenerate after changing a
message: `WRITE_BAD_INPUT_DOC=1 PYTHONPATH=$PWD .venv/bin/python -m pytest -q tests/test_bad_input.py`.

| # | where | bad input | what the user gets |
|---|---|---|---|
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def doc_row(i: int, case: Case, message: str) -> str:
    code = f"`` {_cell(message)} ``" if "`" in message else f"`{_cell(message)}`"  # a message quoting `flags`
    return f"| {i} | {case.where} | {case.what} | {code} |"


def render_doc(messages: dict[str, str]) -> str:
    rows = [doc_row(i, c, messages[c.key]) for i, c in enumerate(CASES, 1)]
    return HEADER + "\n".join(rows) + "\n"


def test_doc_table_is_current():
    """Every case has its row in docs/bad-input.md, and each case that ran in this session
    prints exactly the message its row shows."""
    if os.environ.get("WRITE_BAD_INPUT_DOC") == "1":
        missing = [c.key for c in CASES if c.key not in MESSAGES]
        assert not missing, f"run all cases to write the doc; missing {missing}"
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(render_doc(MESSAGES), encoding="utf-8")
    text = DOC.read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == len(CASES), f"{DOC} has {len(rows)} rows, tests have {len(CASES)} cases"
    for i, case in enumerate(CASES, 1):
        if case.key in MESSAGES:
            assert doc_row(i, case, MESSAGES[case.key]) in rows, f"row {i} ({case.key}) is stale; regenerate {DOC}"
