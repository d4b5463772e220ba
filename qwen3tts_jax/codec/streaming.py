"""Causal streaming decode: k code frames in, exactly the next k·1920 samples out.

Mirrors nothing in the reference (its decoder runs one-shot); it reproduces the reference's
`decode`. The decoder (`Qwen3TTSTokenizerV2Decoder`) is causal end to end, so a stream only
needs what each stage can still see of the past: a `DecoderState` (`codec/state.py`), which the
decoder's modules produce:

* every causal conv with context: its last `context = (k-1)·dilation` input frames/samples
  (replacing the zero left padding of a one-shot forward);
* every transposed conv with `k = 2·stride`: its last input frame. In the polyphase form
  (`nn/conv.py`) a transposed conv is a causal conv of `ceil(k/stride)` taps, so its "overlap
  tail" is carried as this one input frame rather than as stride output samples still to be
  overlap-added — the same information, and exact by construction;
* the pre-transformer: per layer the keys/values (RoPE applied) of the previous
  `sliding_window - 1 = 71` frames — a fixed-size shifting window, exactly the keys the inclusive
  72-frame mask can reach — plus each row's next position.

`stream_step` (in `codec/decoder.py`) is the one jitted step; concatenated outputs equal the
one-shot `decode_codes` of the same frames (≤ 1e-4; `tests/test_codec_streaming.py`).

Beyond 300 frames: the reference `decode` restarts every 300 frames (`chunked_decode`: fresh
state, positions from 0, 25 frames of re-decoded left context), so a plain stream — which keeps
its state and counts positions on — equals a single unchunked forward, not the reference, from
frame 300 on. With `reference_chunking=True` (the default) the stream reproduces the reference's
chunking instead (`codec/pieces.py: runs`): at every 300-frame boundary the state restarts and the
last 25 frames are re-fed (output discarded), at the cost of a 25-frame step per 24 s of audio.

`StreamingDecoder` is a batch of streams that all receive the same number of frames: a view of
`CodecSlots` (`codec/slots.py`), which serves streams at different frames.
"""

from __future__ import annotations

import numpy as np

from qwen3tts_jax.codec.config import DecoderConfig
from qwen3tts_jax.codec.decoder import CHUNK_SIZE, LEFT_CONTEXT, init_state, prepare_params, stream_step
from qwen3tts_jax.codec.slots import CodecSlots
from qwen3tts_jax.codec.state import DecoderState
from qwen3tts_jax.config import Policy

__all__ = ["DecoderState", "StreamingDecoder", "init_state", "stream_step"]


class StreamingDecoder:
    """`batch` streams pushed in step: `push(codes (b, 16, k))` returns the next k·1920 samples
    of each (numpy `(b, k·1920)`). With `reference_chunking=True` the output equals the reference
    `decode` of all frames pushed so far at every length; with False, one unchunked forward.

    The params are laid out once here; a `copy.copy` followed by `reset()` is an independent
    stream sharing them."""

    def __init__(
        self,
        params: dict,
        cfg: DecoderConfig,
        policy: Policy = Policy(),
        *,
        batch: int = 1,
        reference_chunking: bool = True,
        chunk_size: int = CHUNK_SIZE,
        left_context_size: int = LEFT_CONTEXT,
    ):
        self.params = prepare_params(params, cfg)  # once, not per step
        self.cfg, self.policy = cfg, policy
        self.batch = batch
        self.reference_chunking = reference_chunking
        self.chunk_size, self.left_context_size = chunk_size, left_context_size
        self.reset()

    def reset(self) -> None:
        """Start every stream again (a fresh `CodecSlots`: copies made before stay independent)."""
        self.slots = CodecSlots(
            self.params,
            self.cfg,
            self.policy,
            self.batch,
            reference_chunking=self.reference_chunking,
            chunk_size=self.chunk_size,
            left_context_size=self.left_context_size,
            prepared=True,
        )
        for row in range(self.batch):
            self.slots.start(row)

    @property
    def frames(self) -> int:
        """Frames pushed so far (the same for every stream)."""
        return self.slots.frames(0)

    @property
    def state(self) -> DecoderState:
        return self.slots.state

    def push(self, codes) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.ndim != 3 or codes.shape[:2] != (self.batch, self.cfg.num_quantizers):
            raise ValueError(
                f"StreamingDecoder.push: codes must be ({self.batch}, {self.cfg.num_quantizers}, k), got {codes.shape}"
            )
        out = self.slots.push({row: codes[row].T for row in range(self.batch)})
        return np.stack([out[row] for row in range(self.batch)])
