"""Where a `from_pretrained` name points: a local folder, or a Hugging Face repo id downloaded with
huggingface_hub (the reference's `from_pretrained` accepts both)."""

from __future__ import annotations

import os
from pathlib import Path


def resolve_folder(path: str | os.PathLike, name: str = "pretrained_model_name_or_path") -> Path:
    """A local folder as is; an `owner/repo` id downloaded (needs a network); errors name `name`."""
    p = Path(path).expanduser()
    if p.is_dir():
        return p
    if p.exists():
        raise ValueError(f"{name}: {str(path)!r} is a file, expected a folder")
    text = str(path)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(text))
        except Exception as err:  # offline, unknown repo, ...: say what was tried
            raise FileNotFoundError(
                f"{name}: {text!r} is not a local folder and could not be fetched from the Hugging Face Hub: {err}"
            ) from err
    raise FileNotFoundError(f"{name}: folder not found: {text!r}")
