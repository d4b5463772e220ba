"""The server's settings (the `serve` flags) and the engine shape they imply.

No reference class. The engine's compiled shapes are fixed at start, so the limits a request is
checked against (input tokens, reference seconds, frame budget) are also what sizes the KV cache
and the text track: a request within the limits always fits, one outside them gets a 400 naming
the field before any work. A long-form request is cut into segments of at most
`segment_tokens` (within `max_input_tokens`), so each of its engine requests fits the same shape.
"""

from __future__ import annotations

import dataclasses
import math
import os

from qwen3tts_jax.engine import PROMPT_BUCKET, TEXT_TRACK_BUCKET, EngineShape
from qwen3tts_jax.generate import cache_slots
from qwen3tts_jax.long_form import LongFormOptions
from qwen3tts_jax.prompt import bucket

FRAME_RATE = 12.5  # codec frames per second of audio
CONTROL_POSITIONS = 16  # role, codec control prefix, speaker, bos: the prompt's fixed part, with room
TEMPLATE_TOKENS = 8  # the chat template around a text (role + 5-token tail), as `AssistantTextIds`
LONG_FORM_MODES = ("auto", "on", "off")


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    model: str  # DIR, hub id or random:NAME, as given to `serve --model` (also the served model id)
    max_batch: int = 8  # engine slots: requests generating at once
    max_queue: int = 32  # requests waiting for a slot; beyond max_batch + max_queue → 503
    max_input_tokens: int = 512  # tokens of `input` (of each segment, in long form), `instructions`, `ref_text`
    max_input_chars: int = 20_000  # characters of `input` (long form: bounds the segments of one request)
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
    long_form_default: str = "auto"  # a request's `long_form` when it sends none
    long_form_tokens: int | None = None  # text tokens per segment (None: the library's 80, or max_input_tokens)
    long_form_parallel: int = 4  # segments of one request in the engine at once (the rest wait their turn)

    def __post_init__(self):
        for name in (
            "max_batch",
            "max_input_tokens",
            "max_input_chars",
            "max_new_tokens",
            "max_upload_bytes",
            "chunk_frames",
            "first_chunk_frames",
            "long_form_parallel",
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
        if self.long_form_default not in LONG_FORM_MODES:
            raise ValueError(
                f"--long-form-default must be one of {list(LONG_FORM_MODES)}, got {self.long_form_default!r}"
            )
        t = self.long_form_tokens
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= self.max_input_tokens):
            raise ValueError(
                f"--long-form-tokens must be an integer in [1, --max-input-tokens={self.max_input_tokens}], got {t!r}"
            )
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"--model must name a model folder, hub id or random:NAME, got {self.model!r}")
        if self.voices_dir is not None and os.path.exists(self.voices_dir) and not os.path.isdir(self.voices_dir):
            raise ValueError(f"--voices-dir {self.voices_dir}: exists and is not a folder")

    @property
    def capacity(self) -> int:
        return self.max_batch + self.max_queue

    @property
    def segment_tokens(self) -> int:
        """Text tokens per long-form segment: as given, else the library's default within the input limit."""
        if self.long_form_tokens is not None:
            return self.long_form_tokens
        return min(LongFormOptions().max_tokens, self.max_input_tokens)

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
