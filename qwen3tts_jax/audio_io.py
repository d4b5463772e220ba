"""Writing audio files: the format from the extension, the location checked before any compute
(`checks.check_output_path`), the file written atomically (`atomic.atomic_path`), so no
half-written output is ever left."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from qwen3tts_jax.atomic import atomic_path
from qwen3tts_jax.checks import AUDIO_SUFFIXES as FORMATS
from qwen3tts_jax.checks import check_output_path

__all__ = ["FORMATS", "check_output_path", "write_audio_atomic"]


def write_audio_atomic(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, name: str = "--out") -> Path:
    import soundfile as sf

    path = check_output_path(path, name)
    with atomic_path(path) as tmp:
        sf.write(tmp, np.asarray(audio, np.float32), sample_rate, format=FORMATS[path.suffix.lower()])
    return path
