"""The server's settings (the `serve` flags) and the engine shape they imply.

No reference class. The engine's compiled shapes are fixed at start, so the limits a request is
checked against (input tokens, reference seconds, frame budget) are also what sizes the KV cache
and the text track: a request within the limits always fits, one outside them gets a 400 naming
the field before any work.
"""

from __future__ import annotations

import dataclasses
import math
import os

from qwen3tts_jax.engine import PROMPT_BUCKET, TEXT_TRACK_BUCKET, EngineShape
from qwen3tts_jax.generate import cache_slots
from qwen3tts_jax.prompt import bucket

FRAME_RATE = 12.5  # codec frames per second of audio
CONTROL_POSITIONS = 16  # role, codec control prefix, speaker, bos: the prompt's fixed part, with room
TEMPLATE_TOKENS = 8  # the chat template around a text (role + 5-token tail), as `AssistantTextIds`


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    model: str  # DIR, hub id or random:NAME, as given to `serve --model` (also the served model id)
    max_batch: int = 8  # engine slots: requests generating at once
    max_queue: int = 32  # requests waiting for a slot; beyond max_batch + max_queue → 503
    max_input_tokens: int = 512  # tokens of `input`, and separately of `instructions` and `ref_text`
    max_new_tokens: int = 2048  # the largest frame budget a request may ask (also the default)
    max_ref_seconds: float = 30.0  # longest reference audio (ref_audio, uploads)
    max_upload_bytes: int = 10 * 2**20
    chunk_frames: int = 4  # frames per streamed chunk after the first
    first_chunk_frames: int = 1  # frames in a stream's first chunk (time to first audio)
    voices_dir: str | None = None  # uploaded voices persist here (None: in memory only)
    mesh: str | None = None
    dtype: str | None = None
    seed: int = 0  # random:NAME models: the weights' seed
    warmup: bool = True

    def __post_init__(self):
        for name in (
            "max_batch",
            "max_input_tokens",
            "max_new_tokens",
            "max_upload_bytes",
            "chunk_frames",
            "first_chunk_frames",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1, got {v!r}")
        if isinstance(self.max_queue, bool) or not isinstance(self.max_queue, int) or self.max_queue < 0:
            raise ValueError(f"--max-queue must be an integer >= 0, got {self.max_queue!r}")
        if not (
            isinstance(self.max_ref_seconds, (int, float))
            and math.isfinite(self.max_ref_seconds)
            and self.max_ref_seconds > 0
        ):
            raise ValueError(f"--max-ref-seconds must be a number > 0, got {self.max_ref_seconds!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"--model must name a model folder, hub id or random:NAME, got {self.model!r}")
        if self.voices_dir is not None and os.path.exists(self.voices_dir) and not os.path.isdir(self.voices_dir):
            raise ValueError(f"--voices-dir {self.voices_dir}: exists and is not a folder")

    @property
    def capacity(self) -> int:
        return self.max_batch + self.max_queue

    @property
    def max_ref_frames(self) -> int:
        return math.ceil(self.max_ref_seconds * FRAME_RATE)

    @property
    def model_ids(self) -> tuple[str, ...]:
        """The names a request's `model` may use: as given, or a folder's last component."""
        base = os.path.basename(self.model.rstrip("/"))
        return (self.model,) if base in ("", self.model) else (self.model, base)

    def engine_shape(self, rows) -> EngineShape:
        """Slots, KV positions and text track that hold any request within the limits: the
        longest prompt is instructions + text + ICL reference text + reference frames + the fixed
        part; its text track at most reference text + text + EOS (ICL, streaming text layout).
        `rows` rounds the slots to the mesh's data axis (`Placement.rows`)."""
        tokens = self.max_input_tokens + TEMPLATE_TOKENS
        prompt = bucket(3 * tokens + self.max_ref_frames + CONTROL_POSITIONS, PROMPT_BUCKET)
        return EngineShape(
            rows(self.max_batch), cache_slots(prompt, self.max_new_tokens), bucket(2 * tokens + 1, TEXT_TRACK_BUCKET)
        )
