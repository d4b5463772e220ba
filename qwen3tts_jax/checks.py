"""The boundary layer: small pure validators that every public entry point calls before any work.

The API (`Qwen3TTSModel`), the command line, batch input files and the server all check their
arguments here, so one kind of bad input gets one message wherever it comes in. Each validator
returns the normalised value or raises `ValueError` / `TypeError` / `FileNotFoundError` with a
message that names the argument (as the caller spells it: `seed`, `--out`, `items.jsonl:3 (id 'a')`)
and the offending value. Nothing here loads a model or touches the device; the only file-system
effects are reads and a probe file that `check_output_path` creates and removes at once.

Why a separate layer: type coercion in the layers below (`int("5")`, `bool("no")`, JAX's own
overflow errors) otherwise turns bad input into silent wrong behaviour or a deep traceback, and
errors raised mid-generation come after minutes of work.
"""

from __future__ import annotations

import numbers
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

AUDIO_SUFFIXES = {".wav": "WAV", ".flac": "FLAC"}
SEED_MAX = 2**32 - 1  # with 32-bit JAX keys larger seeds wrap around and collide (2**32 draws as 0)


def show(value: Any, limit: int = 80) -> str:
    """A short repr for messages: long strings and big objects are cut, never dumped whole."""
    text = repr(value)
    if len(text) > limit:
        text = (
            text[: limit - 3]
            + "..."
            + (f" ({type(value).__name__} of length {len(value)})" if hasattr(value, "__len__") else "")
        )
    return text


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and not _is_np_bool(value)


def _is_np_bool(value: Any) -> bool:
    return type(value).__name__ == "bool_"  # numpy.bool_ without importing numpy


def _range_text(lo: int | float | None, hi: int | float | None) -> str:
    if lo is not None and hi is not None:
        return f" in [{lo}, {hi}]"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


# ------------------------------------------------------------------------------------------
# Scalars
# ------------------------------------------------------------------------------------------


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None, why: str = "") -> int:
    """An integer (not a bool, not a float, not a numeric string) within [lo, hi]."""
    if not _is_int(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{name} must be an integer{_range_text(lo, hi)}{why}, got {show(value)}")
    return int(value)


def check_optional_int(
    name: str, value: Any, lo: int | None = None, hi: int | None = None, why: str = ""
) -> int | None:
    return None if value is None else check_int(name, value, lo, hi, why)


def check_bool(name: str, value: Any) -> bool:
    """True or False (numpy bools too); never the truthiness of a string like "no"."""
    if isinstance(value, bool) or _is_np_bool(value):
        return bool(value)
    raise ValueError(f"{name} must be True or False, got {show(value)}")


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {show(value)}")
    return value


def check_text(name: str, value: Any) -> str:
    """A string with something other than white space in it."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name}: must be a non-empty string, got {show(value)}")
    return value


def check_max_new_tokens(value: Any, name: str = "max_new_tokens") -> int:
    # M sampled tokens give M-1 frames (the last token never gets its residual codes), so 1 would
    # return no audio at all.
    return check_int(name, value, 2, why=" (M tokens give M-1 audio frames)")


# ------------------------------------------------------------------------------------------
# Randomness
# ------------------------------------------------------------------------------------------


def check_seed(value: Any, name: str = "seed") -> int:
    """A seed for `jax.random.PRNGKey`: an int in [0, 2**32 - 1] (not "5", not 1.7)."""
    return check_int(name, value, 0, SEED_MAX)


def check_key(value: Any, name: str = "key"):
    """A JAX PRNG key: a typed key (`jax.random.key`, shape ()) or a raw uint32 `(2,)` key
    (`jax.random.PRNGKey`)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    want = "a PRNG key from jax.random.key(seed) or jax.random.PRNGKey(seed)"
    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        if value.shape != ():
            raise ValueError(f"{name} must be a single PRNG key (shape ()), got a key array of shape {value.shape}")
        return value
    if isinstance(value, (jax.Array, np.ndarray)) and value.dtype == np.uint32:
        if value.shape != (2,):
            raise ValueError(f"{name} must be {want}: a raw key has shape (2,), got shape {value.shape}")
        return jnp.asarray(value)
    got = (
        f"an array of dtype {value.dtype} and shape {value.shape}"
        if hasattr(value, "dtype")
        else f"{type(value).__name__} {show(value)}"
    )
    raise TypeError(f"{name} must be {want}, got {got}")


def prng_key(seed: Any = None, key: Any = None):
    """The sampling key of a call: `key=` as given, else `PRNGKey(seed)`, else a fresh random seed."""
    import jax
    import numpy as np

    if seed is not None and key is not None:
        raise ValueError(f"pass seed= or key=, not both (got seed={show(seed)} and a key)")
    if key is not None:
        return check_key(key)
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    return jax.random.PRNGKey(check_seed(seed))


# ------------------------------------------------------------------------------------------
# Speakers and languages (from a model's talker config)
# ------------------------------------------------------------------------------------------


def supported_speakers(talker) -> list[str] | None:
    """A `TalkerConfig`'s preset speakers, lower case and sorted (None for a model without any)."""
    return sorted(s.lower() for s in talker.speakers) if talker.speakers else None


def supported_languages(talker) -> list[str]:
    """`auto` plus the config's languages without the dialect entries (as the reference lists them)."""
    return ["auto"] + [k for k in talker.languages if "dialect" not in k]


def _prefix(name: str | None) -> str:
    return f"{name}: " if name else ""


def check_speakers(values: Sequence[Any], supported: Sequence[str], name: str | None = None) -> list[str]:
    bad = [s for s in values if not isinstance(s, str) or s.lower() not in supported]
    if bad:
        raise ValueError(f"{_prefix(name)}Unsupported speaker(s) {bad}. Supported: {list(supported)}")
    return [s.lower() for s in values]


def check_languages(values: Sequence[Any], supported: Sequence[str], name: str | None = None) -> list[str]:
    bad = [v for v in values if not isinstance(v, str) or v.lower() not in supported]
    if bad:
        raise ValueError(f"{_prefix(name)}Unsupported language(s) {bad}. Supported: {list(supported)}")
    return [v.lower() for v in values]


# ------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------


def check_writable_folder(folder: Path, name: str, target: Path) -> None:
    """`folder` exists, is a folder, and a file can be created in it (probed: as root, or on a
    read-only mount, permission bits alone do not tell)."""
    if not folder.exists():
        raise FileNotFoundError(f"{name} {target}: folder {folder} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"{name} {target}: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".probe", dir=folder)
    except OSError as err:
        raise PermissionError(f"{name} {target}: cannot write in folder {folder}: {err.strerror or err}") from err
    os.close(fd)
    os.unlink(probe)


def check_output_path(path: Any, name: str = "--out", suffixes: dict[str, str] = AUDIO_SUFFIXES) -> Path:
    """An output file location: a known extension, not a folder, in an existing writable folder."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TypeError(f"{name} must be a file path, got {show(path)}")
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{name} {path}: unsupported extension {path.suffix!r}; use one of {sorted(suffixes)}")
    if path.is_dir():
        raise IsADirectoryError(
            f"{name} {path}: is a folder; name a file inside it, e.g. {path / ('out' + path.suffix)}"
        )
    check_writable_folder(path.parent, name, path)
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(f"{name} {path}: exists and is not writable")
    return path


def check_new_folder(path: Any, name: str) -> Path:
    """A folder to create: must not exist yet; its parent must be an existing writable folder."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TypeError(f"{name} must be a folder path, got {show(path)}")
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{name} {path}: output already exists; remove it or choose another path")
    check_writable_folder(path.parent, name, path)
    return path


def check_input_file(path: Any, name: str) -> Path:
    """An existing regular file (not a folder)."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TypeError(f"{name} must be a file path, got {show(path)}")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{name} {path}: is a folder, expected a file")
    if not path.is_file():
        raise FileNotFoundError(f"{name} {path}: file not found")
    return path


def read_text_file(path: Any, name: str = "--text-file") -> str:
    """The UTF-8 text of a file (a leading BOM dropped); errors name the flag, file and byte."""
    path = check_input_file(path, name)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{name} {path}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); save it as UTF-8"
        ) from err


# ------------------------------------------------------------------------------------------
# Voice-clone prompts
# ------------------------------------------------------------------------------------------

_PROMPT_KEYS = ("ref_code", "ref_spk_embedding", "x_vector_only_mode", "icl_mode")


def check_voice_clone_prompt(prompt: Any, cfg, ref_text: Any = None, name: str = "voice_clone_prompt") -> list:
    """`voice_clone_prompt` as a list of checked `VoiceClonePromptItem`s.

    Accepts what `create_voice_clone_prompt` returns (a list of items, or one item) and the
    reference's batched dict (`{"ref_code": [...], "ref_spk_embedding": [...],
    "x_vector_only_mode": [...], "icl_mode": [...]}`, ref texts from `ref_text`). Each item's
    speaker embedding must be `(hidden_size,)` and finite, its codes `(frames, 16)` integers in the
    codebook's range, its flags bools, and an ICL item needs its codes and reference text."""
    import numpy as np

    from qwen3tts_jax.prompt import VoiceClonePromptItem

    if isinstance(prompt, VoiceClonePromptItem):
        raw = [prompt]
    elif isinstance(prompt, dict):
        missing = [k for k in _PROMPT_KEYS if k not in prompt]
        if missing:
            raise ValueError(f"{name}: dict is missing key(s) {missing}; expected keys {list(_PROMPT_KEYS)}")
        lists = {k: prompt[k] for k in _PROMPT_KEYS}
        for k, v in lists.items():
            if not isinstance(v, (list, tuple)):
                raise TypeError(f"{name}[{k!r}] must be a list (one entry per item), got {type(v).__name__}")
        sizes = {k: len(v) for k, v in lists.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"{name}: the dict's lists differ in length: {sizes}")
        n = sizes["ref_spk_embedding"]
        texts = list(ref_text) if isinstance(ref_text, (list, tuple)) else [ref_text] * n
        if len(texts) != n:
            raise ValueError(f"{name}: ref_text has {len(texts)} items, the prompt dict has {n}")
        raw = [
            VoiceClonePromptItem(
                lists["ref_code"][i],
                lists["ref_spk_embedding"][i],
                lists["x_vector_only_mode"][i],
                lists["icl_mode"][i],
                texts[i],
            )
            for i in range(n)
        ]
    elif isinstance(prompt, (list, tuple)):
        raw = list(prompt)
    else:
        raise TypeError(
            f"{name} must be what create_voice_clone_prompt returns (a list of VoiceClonePromptItem) or "
            f"the reference's dict of lists, got {type(prompt).__name__} {show(prompt)}"
        )
    if not raw:
        raise ValueError(f"{name}: empty list")
    dim = cfg.talker.transformer.hidden_size
    groups, size = cfg.talker.num_code_groups, cfg.talker.code_predictor.vocab_size
    items = []
    for i, it in enumerate(raw):
        where = f"{name}[{i}]"
        if not isinstance(it, VoiceClonePromptItem):
            raise TypeError(
                f"{where} must be a VoiceClonePromptItem (from create_voice_clone_prompt), "
                f"got {type(it).__name__} {show(it)}"
            )
        xvec = check_bool(f"{where}.x_vector_only_mode", it.x_vector_only_mode)
        icl = check_bool(f"{where}.icl_mode", it.icl_mode)
        if xvec and icl:
            raise ValueError(f"{where}: x_vector_only_mode and icl_mode are both True; an item is one or the other")
        emb = _float_array(f"{where}.ref_spk_embedding", it.ref_spk_embedding)
        if emb.shape != (dim,):
            raise ValueError(f"{where}.ref_spk_embedding must have shape ({dim},) for this model, got {emb.shape}")
        if not np.isfinite(emb).all():
            raise ValueError(f"{where}.ref_spk_embedding contains NaN/inf values")
        code = None
        if it.ref_code is not None:
            code = _int_array(f"{where}.ref_code", it.ref_code)
            if code.ndim != 2 or code.shape[1] != groups or code.shape[0] < 1:
                raise ValueError(f"{where}.ref_code must have shape (frames >= 1, {groups}), got {code.shape}")
            bad = (code < 0) | (code >= size)
            if bad.any():
                t, q = (int(x[0]) for x in np.nonzero(bad))
                raise ValueError(
                    f"{where}.ref_code: code {int(code[t, q])} at frame {t}, codebook {q}; codes must be in "
                    f"[0, {size - 1}]"
                )
        text = it.ref_text
        if icl:
            if code is None:
                raise ValueError(f"{where}: ICL mode (icl_mode=True) needs ref_code, got None")
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{where}: ICL mode needs its ref_text, got {show(text)}")
        elif text is not None and not isinstance(text, str):
            raise ValueError(f"{where}.ref_text must be a string or None, got {show(text)}")
        items.append(VoiceClonePromptItem(code, emb, xvec, icl, text))
    return items


def _float_array(name: str, value: Any):
    import numpy as np

    try:
        a = np.asarray(value)
    except Exception as err:
        raise TypeError(f"{name}: cannot read {type(value).__name__} as an array: {err}") from err
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{name} must be a float array, got {type(value).__name__} of dtype {a.dtype}")
    return a.astype(np.float32)


def _int_array(name: str, value: Any):
    import numpy as np

    try:
        a = np.asarray(value)
    except Exception as err:
        raise TypeError(f"{name}: cannot read {type(value).__name__} as an array: {err}") from err
    if np.issubdtype(a.dtype, np.floating) and np.isfinite(a).all() and (a == np.round(a)).all():
        a = a.astype(np.int64)
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {a.dtype}")
    return a.astype(np.int64)
