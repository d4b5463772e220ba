"""The server's audio encodings: float32 samples → s16le PCM, WAV (whole or open-length) and FLAC;
and uploaded audio bytes → samples.

No reference class: the official package returns float arrays. The formats follow OpenAI's
`/v1/audio/speech` and vllm-omni (`pcm` = raw s16le 24 kHz mono, `wav`, `flac`; a streamed WAV
carries an open-length header, RIFF and data sizes 0xFFFFFFFF, as faster-qwen3-tts does).

Every format starts from one conversion (`to_s16`), so `wav`, `pcm`, `flac`, a stream and a whole
file hold the same 16-bit samples bit for bit.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from jaxtyping import Float, Int

SAMPLE_RATE = 24000
FORMATS = ("wav", "pcm", "flac")
STREAMABLE = ("pcm", "wav")  # FLAC frames need the whole signal's statistics: sent whole only
MEDIA_TYPES = {"wav": "audio/wav", "pcm": "audio/pcm", "flac": "audio/flac"}
OPEN_LENGTH = 0xFFFFFFFF  # RIFF/data size of a WAV header whose length is not known yet


def to_s16(audio: Float[np.ndarray, " n"]) -> Int[np.ndarray, " n"]:
    """float32 in [-1, 1] → int16: `round(clip(x, -1, 1) · 32767)`, round half to even (numpy's
    rule). Symmetric: -1.0 → -32767 (never -32768), so a sign flip never overflows."""
    return np.round(np.clip(np.asarray(audio, np.float32), -1.0, 1.0) * np.float32(32767)).astype("<i2")


def pcm_bytes(audio: Float[np.ndarray, " n"]) -> bytes:
    """Raw s16le mono PCM."""
    return to_s16(audio).tobytes()


def wav_header(data_bytes: int | None, sample_rate: int = SAMPLE_RATE) -> bytes:
    """A 44-byte PCM16 mono WAV header for `data_bytes` of samples, or an open-length one (None):
    what a streamed WAV starts with, its sizes 0xFFFFFFFF as players expect of a live stream."""
    riff = OPEN_LENGTH if data_bytes is None else 36 + data_bytes
    data = OPEN_LENGTH if data_bytes is None else data_bytes
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, 2 * sample_rate, 2, 16)
        + b"data"
        + struct.pack("<I", data)
    )


def encode(audio: Float[np.ndarray, " n"], fmt: str, sample_rate: int = SAMPLE_RATE) -> bytes:
    """A whole clip in `fmt` (one of `FORMATS`)."""
    pcm = pcm_bytes(audio)
    if fmt == "pcm":
        return pcm
    if fmt == "wav":
        return wav_header(len(pcm), sample_rate) + pcm
    if fmt == "flac":
        import soundfile as sf

        buf = io.BytesIO()
        sf.write(buf, np.frombuffer(pcm, "<i2"), sample_rate, format="FLAC", subtype="PCM_16")
        return buf.getvalue()
    raise ValueError(f"response_format {fmt!r} is not supported; use one of {list(FORMATS)}")


def decode(data: bytes, name: str) -> tuple[Float[np.ndarray, " n"] | Float[np.ndarray, "n c"], int]:
    """Audio file bytes (any format libsndfile reads: wav, flac, ogg, mp3, ...) → `(float32
    samples, sample rate)` as `soundfile.read` gives them (the Python API's reader, so a voice
    uploaded to the server is the one `ref_audio=<the same file>` builds). Raises ValueError
    naming `name` when the bytes are not audio."""
    import soundfile as sf

    if not data:
        raise ValueError(f"{name}: empty upload (0 bytes)")
    try:
        audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    except Exception as err:  # LibsndfileError, RuntimeError, TypeError alike: the input is at fault
        raise ValueError(f"{name}: not decodable audio ({len(data)} bytes): {err}") from err
    if audio.size == 0:
        raise ValueError(f"{name}: the audio holds no samples")
    return audio, int(sr)
