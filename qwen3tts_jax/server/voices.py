"""Uploaded voices: voice-clone prompts built once from a reference recording and kept by name,
one safetensors file per voice in the voices folder (or in memory when the server has none).

Mirrors vllm-omni's voices store (`POST/GET/DELETE /v1/audio/voices`, one `.safetensors` per
voice, reloaded on restart). A file holds the reference's speaker embedding `ref_spk_embedding`
(float32) and, for an ICL voice, its codes `ref_code` (int32, frames × 16); the metadata holds
`ref_text`, `created_at`, `x_vector_only`, `mime_type`, `file_size` and the embedding size the
model gave. Files are written atomically (`qwen3tts_jax.atomic`: a temporary name in the folder, then a rename), so
a crash never leaves half a voice; a file that does not load at start is skipped with a warning.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time
from pathlib import Path

import numpy as np

from qwen3tts_jax.atomic import atomic_path
from qwen3tts_jax.prompt import VoiceClonePromptItem

log = logging.getLogger("qwen3tts_jax.server")

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a safe file name: no separators, no leading dot
SUFFIX = ".safetensors"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name) or name.endswith(".") or ".." in name:
        raise ValueError(
            f"name: {name!r} is not a valid voice name (1-64 characters: letters, digits, '_', '-', '.'; "
            f"starting with a letter or digit)"
        )
    return name


@dataclasses.dataclass(frozen=True, eq=False)
class Voice:
    name: str
    item: VoiceClonePromptItem
    created_at: int  # unix seconds
    mime_type: str = ""
    file_size: int = 0

    def info(self) -> dict:
        it = self.item
        return {
            "name": self.name,
            "ref_text": it.ref_text,
            "created_at": self.created_at,
            "x_vector_only": it.x_vector_only_mode,
            "mime_type": self.mime_type,
            "file_size": self.file_size,
            "ref_frames": 0 if it.ref_code is None else int(len(it.ref_code)),
        }


class VoiceStore:
    """Thread-safe name → `Voice`, persisted in `folder` when given. `embedding_dim` is the
    model's speaker-embedding size and `code_groups` its codebooks per frame: files made for
    another model are skipped at load."""

    def __init__(self, folder: str | os.PathLike | None, embedding_dim: int, code_groups: int = 16):
        self.folder = None if folder is None else Path(folder)
        self.embedding_dim, self.code_groups = int(embedding_dim), int(code_groups)
        self._voices: dict[str, Voice] = {}
        self._lock = threading.Lock()
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._load()

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._voices)

    def get(self, name: str) -> Voice | None:
        with self._lock:
            return self._voices.get(name)

    def list(self) -> list[dict]:
        with self._lock:
            return [self._voices[n].info() for n in sorted(self._voices)]

    def add(self, voice: Voice) -> Voice:
        """Store a new voice (FileExistsError if the name is taken)."""
        check_name(voice.name)
        with self._lock:
            if voice.name in self._voices:
                raise FileExistsError(f"name: a voice named {voice.name!r} exists already (DELETE it first)")
            if self.folder is not None:
                self._write(voice)
            self._voices[voice.name] = voice
        return voice

    def delete(self, name: str) -> bool:
        with self._lock:
            if name not in self._voices:
                return False
            if self.folder is not None:
                (self.folder / f"{name}{SUFFIX}").unlink(missing_ok=True)
            del self._voices[name]
            return True

    # ------------------------------------------------------------------ files

    def _write(self, voice: Voice) -> None:
        from safetensors.numpy import save

        it = voice.item
        tensors = {"ref_spk_embedding": np.ascontiguousarray(it.ref_spk_embedding, np.float32)}
        if it.ref_code is not None:
            tensors["ref_code"] = np.ascontiguousarray(it.ref_code, np.int32)
        meta = {
            "name": voice.name,
            "ref_text": it.ref_text or "",
            "created_at": str(voice.created_at),
            "x_vector_only": "true" if it.x_vector_only_mode else "false",
            "mime_type": voice.mime_type,
            "file_size": str(voice.file_size),
            "embedding_dim": str(len(it.ref_spk_embedding)),
        }
        data = save(tensors, metadata=meta)
        with atomic_path(self.folder / f"{voice.name}{SUFFIX}") as tmp:
            tmp.write_bytes(data)

    def _load(self) -> None:
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            try:
                voice = self._read(path)
            except Exception as err:  # one bad file must not stop the server
                log.warning("voices: skipping %s: %s", path, err)
                continue
            self._voices[voice.name] = voice
        if self._voices:
            log.info("voices: loaded %d from %s: %s", len(self._voices), self.folder, ", ".join(sorted(self._voices)))

    def _read(self, path: Path) -> Voice:
        from safetensors import safe_open

        name = check_name(path.name[: -len(SUFFIX)])
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            keys = set(f.keys())
            emb = np.asarray(f.get_tensor("ref_spk_embedding"), np.float32)
            code = np.asarray(f.get_tensor("ref_code"), np.int32) if "ref_code" in keys else None
        if emb.shape != (self.embedding_dim,):
            raise ValueError(
                f"ref_spk_embedding has shape {emb.shape}; this model's speaker embedding is ({self.embedding_dim},)"
            )
        xvec = meta.get("x_vector_only") == "true"
        if code is None and not xvec:
            raise ValueError("an ICL voice (x_vector_only=false) without ref_code")
        if code is not None and (code.ndim != 2 or code.shape[1] != self.code_groups):
            raise ValueError(f"ref_code has shape {code.shape}, expected (frames, {self.code_groups})")
        ref_text = meta.get("ref_text") or None
        item = VoiceClonePromptItem(None if xvec else code, emb, xvec, not xvec, ref_text)
        return Voice(
            name,
            item,
            int(meta.get("created_at", int(time.time()))),
            meta.get("mime_type", ""),
            int(meta.get("file_size", 0)),
        )
