"""Audio input handling shared by the speech tokenizer and voice cloning.

Mirrors the input normalisation of the reference wrappers: `Qwen3TTSTokenizer.load_audio` /
`_normalize_audio_inputs` (qwen_tts/inference/qwen3_tts_tokenizer.py) and
`Qwen3TTSModel._load_audio_to_np` / `_normalize_audio_inputs` (qwen3_tts_model.py):

* a file path (read with soundfile, float32, as `librosa.load(sr=None, mono=True)` does), an
  http(s) URL, or a base64 string / `data:audio/...;base64,` URL (the reference's heuristics);
* a numpy array with a separate `sr`, or an `(array, sr)` tuple;
* a list of any of these.

Multichannel audio is averaged to mono over the channel axis (soundfile's `(samples, channels)`
layout, the reference's `np.mean(audio, axis=-1)`); resampling uses soxr 'HQ', which is what
`librosa.resample`'s default `res_type="soxr_hq"` runs, followed by librosa's `fix_length` to
`ceil(n * target/orig)` samples. The reference resamples float32 arrays, so we do too.

Where the reference would silently produce garbage we raise instead, naming the argument:
empty audio, NaN/inf samples, a missing or non-positive `sr`, unreadable files, a 2-D array that
looks channels-first, more than two dimensions. Integer PCM arrays are scaled to [-1, 1] the way
soundfile reads them (the reference would feed raw int16 values of ±32767 to the model).

Audio is bounded before it is resampled: the sample rate must lie in [MIN_SAMPLE_RATE,
MAX_SAMPLE_RATE] and the clip must last at most `max_seconds` (MAX_SECONDS by default). Without
the bound a mislabelled array (2 s of samples called `sr=1`) is "resampled" to 13 hours of audio
and the process is killed for memory with no message.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
import re
import urllib.request
from typing import Any, Union
from urllib.parse import urlparse

import numpy as np

AudioLike = Union[str, "os.PathLike[str]", np.ndarray, tuple]

__all__ = ["AudioLike", "load_audio", "to_mono", "resample", "check_waveform", "check_duration", "normalize_audios"]

MIN_SAMPLE_RATE = 4_000  # below telephone quality (8 kHz) there is no voice left to clone or encode
MAX_SAMPLE_RATE = 384_000  # the highest rate audio interfaces record at
MAX_SECONDS = 300.0  # longest clip accepted (a reference voice needs seconds; split long audio)


# --------------------------------------------------------------------------------------------
# Strings: path, URL, base64
# --------------------------------------------------------------------------------------------


def _is_url(s: str) -> bool:
    try:
        u = urlparse(s)
    except ValueError:
        return False
    return u.scheme in ("http", "https") and bool(u.netloc)


_B64 = re.compile(r"[A-Za-z0-9+/=\s]+")


def _is_probably_base64(s: str) -> bool:
    """The reference's heuristic (a data URL, or a long string with no path separator), widened
    to long strings of base64 characters: raw base64 usually contains '/', which the reference
    then tries to open as a path. Only asked for strings that are not existing files."""
    if s.startswith("data:audio"):
        return True
    return len(s) > 256 and (("/" not in s and "\\" not in s) or _B64.fullmatch(s) is not None)


def is_local_source(s: str) -> bool:
    """Whether `load_audio` would read `s` as a file path (not a URL, not a base64 string)."""
    return not (_is_url(s) or (_is_probably_base64(s) and not os.path.exists(s)))


def _short(s: str, n: int = 80) -> str:
    return repr(s) if len(s) <= n else repr(s[:n]) + f"... ({len(s)} chars)"


def _read_soundfile(source: Any, name: str, what: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        audio, sr = sf.read(source, dtype="float32", always_2d=False)
    except Exception as err:  # LibsndfileError, RuntimeError, TypeError alike: name the input
        raise ValueError(f"{name}: cannot decode audio from {what}: {err}") from err
    return audio, int(sr)


def load_audio(source: str | os.PathLike, name: str = "audio") -> tuple[np.ndarray, int]:
    """Read a path, URL or base64 string → `(float32 mono waveform, native sample rate)`."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        raise TypeError(f"{name}: expected a path, URL or base64 string, got {type(source).__name__}")
    if not source:
        raise ValueError(f"{name}: empty string is not an audio path")
    if _is_url(source):
        try:
            with urllib.request.urlopen(source) as resp:
                data = resp.read()
        except OSError as err:
            raise ValueError(f"{name}: cannot fetch audio URL {_short(source)}: {err}") from err
        audio, sr = _read_soundfile(io.BytesIO(data), name, f"URL {_short(source)}")
    elif _is_probably_base64(source) and not os.path.exists(source):
        b64 = source.split(",", 1)[1] if source.strip().startswith("data:") and "," in source else source
        try:
            data = base64.b64decode(b64, validate=False)
        except (binascii.Error, ValueError) as err:
            raise ValueError(f"{name}: not a valid base64 audio string: {err}") from err
        audio, sr = _read_soundfile(io.BytesIO(data), name, "base64 string")
    else:
        if not os.path.isfile(source):
            raise FileNotFoundError(f"{name}: audio file not found: {_short(source, 200)}")
        audio, sr = _read_soundfile(source, name, f"file {_short(source, 200)}")
    return to_mono(audio, name), sr


# --------------------------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------------------------


def _as_float_array(x: Any, name: str) -> np.ndarray:
    try:
        a = np.asarray(x)
    except Exception as err:
        raise TypeError(f"{name}: cannot convert {type(x).__name__} to an array: {err}") from err
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{name}: expected a float waveform, got an array of dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.integer):
        # PCM → [-1, 1] as soundfile scales it (int16 / 2**15, int32 / 2**31, uint8 centred).
        info = np.iinfo(a.dtype)
        if info.min == 0:
            a = (a.astype(np.float64) - (info.max + 1) / 2) / ((info.max + 1) / 2)
        else:
            a = a.astype(np.float64) / float(-info.min)
    return a


def to_mono(audio: np.ndarray, name: str = "audio") -> np.ndarray:
    """`(n,)` stays; `(n, c)` is averaged over channels (in the input dtype, as the reference)."""
    if audio.ndim == 1:
        return audio
    if audio.ndim != 2:
        raise ValueError(f"{name}: expected a 1-D waveform or a 2-D (samples, channels) array, got shape {audio.shape}")
    n, c = audio.shape
    if c > n:
        raise ValueError(
            f"{name}: 2-D audio must be (samples, channels) like soundfile returns; shape {audio.shape} has more "
            f"channels than samples (transpose a (channels, samples) array first)"
        )
    return np.mean(audio, axis=-1)


def check_waveform(wav: np.ndarray, name: str = "audio") -> np.ndarray:
    """Refuse empty audio and non-finite samples; returns `wav` unchanged."""
    if wav.size == 0:
        raise ValueError(f"{name}: audio is empty (0 samples)")
    bad = ~np.isfinite(wav)
    if bad.any():
        first = int(np.argmax(bad.reshape(-1)))
        raise ValueError(f"{name}: audio contains {int(bad.sum())} NaN/inf sample(s) (first at index {first})")
    return wav


def _check_sr(sr: Any, name: str) -> int:
    if sr is None:
        raise ValueError(f"{name}: a numpy waveform needs its sampling rate: pass `sr=` or an (array, sr) tuple")
    if isinstance(sr, bool) or not isinstance(sr, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: sampling rate must be a number, got {sr!r}")
    if not math.isfinite(float(sr)) or float(sr) <= 0 or float(sr) != int(sr):
        raise ValueError(f"{name}: sampling rate must be a positive integer, got {sr!r}")
    return int(sr)


def check_duration(n: int, sr: int, name: str = "audio", max_seconds: float = MAX_SECONDS) -> None:
    """Refuse a sample rate outside [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE] and a clip longer than
    `max_seconds`, before resampling allocates `n * target / sr` samples."""
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise ValueError(
            f"{name}: sampling rate {sr} Hz is outside [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz "
            f"({n} samples would last {n / sr:.6g} s); check the rate the audio is labelled with"
        )
    if n / sr > max_seconds:
        raise ValueError(
            f"{name}: {n} samples at {sr} Hz last {n / sr:.1f} s; the limit is {max_seconds:g} s "
            f"(split longer audio into pieces)"
        )


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """`librosa.resample(y, orig_sr=, target_sr=)` with its default `res_type="soxr_hq"`.

    soxr on float32 input, then librosa's `fix_length` to `ceil(n * target / orig)` samples
    (zero-padded or trimmed at the end); float32 out.
    """
    wav = np.asarray(wav, dtype=np.float32)
    if orig_sr == target_sr:
        return wav
    import soxr

    n_out = int(np.ceil(wav.shape[-1] * (float(target_sr) / orig_sr)))
    y = soxr.resample(wav, orig_sr, target_sr, quality="HQ")
    if y.shape[-1] > n_out:
        y = y[:n_out]
    elif y.shape[-1] < n_out:
        y = np.pad(y, (0, n_out - y.shape[-1]))
    return np.asarray(y, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# The public entry point
# --------------------------------------------------------------------------------------------


def _is_sr_value(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _items(audios: Any, name: str) -> list[tuple[Any, str]]:
    """Split `audios` into single items, each with the name used in error messages."""
    if (
        isinstance(audios, tuple)
        and len(audios) == 2
        and _is_sr_value(audios[1])
        and not isinstance(audios[0], (str, os.PathLike))
    ):
        return [(audios, name)]
    if isinstance(audios, (list, tuple)):
        if any(_is_sr_value(a) for a in audios):
            raise TypeError(
                f"{name}: a list of numbers is ambiguous; pass a numpy array (with sr) or an (array, sr) tuple"
            )
        return [(a, f"{name}[{i}]") for i, a in enumerate(audios)]
    return [(audios, name)]


def normalize_audios(
    audios: Any, sr: int | None = None, target_sr: int = 24000, name: str = "audios", max_seconds: float = MAX_SECONDS
) -> list[np.ndarray]:
    """Every supported input form → a list of float32 mono waveforms at `target_sr`.

    `sr` applies to bare numpy arrays (required for them); an `(array, sr)` tuple carries its own
    rate; files carry theirs. Raises `ValueError` / `FileNotFoundError` / `TypeError` naming the
    argument (`audios[1]`, ...) for empty, non-finite, unreadable or rate-less audio, and for a
    rate or a length out of bounds (`check_duration`).
    """
    items = _items(audios, name)
    if not items:
        raise ValueError(f"{name}: no audio given (empty list)")
    out = []
    for item, where in items:
        if isinstance(item, (str, os.PathLike)):
            wav, rate = load_audio(item, where)
        elif isinstance(item, tuple):
            if len(item) != 2 or not _is_sr_value(item[1]):
                raise TypeError(f"{where}: a tuple must be (waveform, sample_rate), got a tuple of length {len(item)}")
            wav = to_mono(_as_float_array(item[0], where), where)
            rate = _check_sr(item[1], where)
        elif item is None:
            raise TypeError(f"{where}: audio is None")
        else:
            wav = to_mono(_as_float_array(item, where), where)
            rate = _check_sr(sr, where)
        check_duration(len(wav), rate, where, max_seconds)
        wav = check_waveform(np.asarray(wav).astype(np.float32), where)
        out.append(resample(wav, rate, target_sr))
    return out
