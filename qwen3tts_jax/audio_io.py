"""Writing audio files: format from the extension, checked before any compute, written atomically
(a temporary file in the same folder, then `os.replace`), so no half-written output is left."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

FORMATS = {".wav": "WAV", ".flac": "FLAC"}


def check_output_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"--out {path}: unsupported extension {path.suffix!r}; use one of {sorted(FORMATS)}")
    if not path.parent.exists():
        raise FileNotFoundError(f"--out {path}: folder {path.parent} does not exist")
    return path


def write_audio_atomic(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> Path:
    import soundfile as sf

    path = check_output_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, np.asarray(audio, np.float32), sample_rate, format=FORMATS[path.suffix.lower()])
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
