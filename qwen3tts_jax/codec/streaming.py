"""Causal streaming decode: k code frames in, exactly the next k·1920 samples out.

The decoder (`Qwen3TTSTokenizerV2Decoder`) is causal end to end, so a stream only needs what
each stage can still see of the past. That is an explicit pytree (`init_state`):

* every causal conv with kernel > 1: its last `(k-1)·dilation` input frames/samples (replacing
  the zero left padding of a one-shot forward);
* every transposed conv with `k = 2·stride`: its last input frame. In the polyphase form
  (`nn/conv.py`) a transposed conv is a causal conv of `ceil(k/stride)` taps, so its "overlap
  tail" is carried as this one input frame rather than as stride output samples still to be
  overlap-added — the same information, and exact by construction;
* the pre-transformer: per layer the keys/values (RoPE already applied) of the previous
  `sliding_window - 1 = 71` frames — a fixed-size shifting window, exactly the keys the inclusive
  72-frame mask can reach — plus the next position.

`stream_step` is jitted once per k (the state is donated off-CPU); give it `prepare_params(params)`
(conv kernels laid out once, see `nn/conv.py`) with `prepared=True`, as `StreamingDecoder` does. Concatenated outputs equal the
one-shot `decode_codes` of the same frames (≤ 1e-4; `tests/test_codec_streaming.py`).

Beyond 300 frames: the reference `decode` restarts every 300 frames (`chunked_decode`: fresh
state, positions from 0, 25 frames of re-decoded left context), so a plain stream — which keeps
its state and counts positions on — equals a single unchunked forward, not the reference, from
frame 300 on. `StreamingDecoder(reference_chunking=True)` (the default) reproduces the
reference's chunking instead: at every 300-frame boundary it resets the state and re-feeds the
last 25 frames (output discarded), so its output equals `Qwen3TTSTokenizerV2Model.decode` at any
length, at the cost of one 25-frame step per 24 s of audio.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from qwen3tts_jax.codec.config import DecoderConfig
from qwen3tts_jax.codec.decoder import CHUNK_SIZE, LEFT_CONTEXT, Qwen3TTSTokenizerV2Decoder, State, prepare_params
from qwen3tts_jax.config import Policy
from qwen3tts_jax.nn.attention import KVCache
from qwen3tts_jax.typing import Array, Float, Int

__all__ = ["StreamingDecoder", "init_state", "stream_step"]


def init_state(cfg: DecoderConfig, batch: int, policy: Policy = Policy()) -> State:
    """The state before the first frame: zero histories (= the one-shot zero padding), empty
    attention window, position 0."""
    dt = policy.dtype
    zeros = lambda t, c: jnp.zeros((batch, t, c), dt)  # noqa: E731
    w = cfg.sliding_window - 1
    kv = lambda: KVCache(*(jnp.zeros((batch, w, cfg.num_key_value_heads, cfg.head_dim), dt) for _ in range(2)))  # noqa: E731
    state: State = {
        "pre_conv": zeros(2, cfg.codebook_dim),  # k3
        "pre_transformer": {"pos": jnp.zeros((), jnp.int32), **{f"layers_{i}": kv() for i in range(cfg.num_hidden_layers)}},
        "decoder_0": zeros(6, cfg.latent_dim),  # k7
    }
    for i, f in enumerate(cfg.upsampling_ratios):
        state[f"upsample_{i}_0"] = zeros(-(-f // f) - 1, cfg.latent_dim)  # k = stride: no history
        state[f"upsample_{i}_1"] = {"dwconv": zeros(6, cfg.latent_dim)}
    for i, rate in enumerate(cfg.upsample_rates):
        cin, cout = cfg.block_dims(i)
        state[f"decoder_{i + 1}"] = {
            "block_1": zeros(-(-2 * rate // rate) - 1, cin),  # k = 2r, stride r: one frame
            **{f"block_{u}": {"conv1": zeros(6 * d, cout)} for u, d in zip((2, 3, 4), (1, 3, 9))},
        }
    state[f"decoder_{len(cfg.upsample_rates) + 2}"] = zeros(6, cfg.output_dim)
    return state


# One compiled program for the whole zero state (eager `jnp.zeros` would be one per shape).
_init_state = jax.jit(init_state, static_argnums=(0, 1, 2))


def _step(
    params: dict,
    state: State,
    codes: Int[Array, "b q k"],
    cfg: DecoderConfig,
    policy: Policy = Policy(),
    prepared: bool = False,
) -> tuple[Float[Array, "b n"], State]:
    if not prepared:
        params = prepare_params(params, cfg)
    return Qwen3TTSTokenizerV2Decoder(cfg, policy, "HIO").apply({"params": params}, codes, state)


_STATIC = ("cfg", "policy", "prepared")
_step_donating = jax.jit(_step, static_argnames=_STATIC, donate_argnames=("state",))
_step_copying = jax.jit(_step, static_argnames=_STATIC)


def stream_step(
    params: dict,
    state: State,
    codes: Int[Array, "b q k"],
    cfg: DecoderConfig,
    policy: Policy = Policy(),
    prepared: bool = False,
) -> tuple[Float[Array, "b n"], State]:
    """Decode the next k frames: returns their k·total_upsample samples and the new state.

    Jitted (once per k). Pass `prepare_params(params, cfg)` with `prepared=True`: with the
    checkpoint's kernel layout every step re-lays every conv kernel out. The state is donated on
    GPU/TPU but not on XLA:CPU, where donating it made a full-size 1-frame step 2x slower
    (191 ms vs 94 ms on the 2-core CPU) — treat the passed state as consumed either way."""
    fn = _step_donating if policy.donate_codec_state else _step_copying
    return fn(params, state, codes, cfg, policy, prepared)


class StreamingDecoder:
    """A convenience holder around `stream_step` for a stream of code frames.

    `push(codes (b, 16, k))` returns the next k·1920 samples (numpy). With
    `reference_chunking=True` the output equals the reference `decode` of all frames pushed so
    far at every length (see the module docstring); with False it equals one unchunked forward.
    """

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
        self.params = jax.jit(prepare_params, static_argnames=("cfg",))(params, cfg)  # once, not per step
        self.cfg, self.policy = cfg, policy
        self.batch = batch
        self.reference_chunking = reference_chunking
        self.chunk_size, self.left_context_size = chunk_size, left_context_size
        self.reset()

    def reset(self) -> None:
        self.state = _init_state(self.cfg, self.batch, self.policy)
        self.frames = 0  # frames emitted so far
        self._recent = np.zeros((self.batch, self.cfg.num_quantizers, 0), np.int32)  # for re-fed context

    def _step(self, codes: np.ndarray) -> np.ndarray:
        wav, self.state = stream_step(self.params, self.state, jax.device_put(np.asarray(codes, np.int32)), self.cfg, self.policy, True)
        return np.asarray(wav)

    def push(self, codes) -> np.ndarray:
        codes = np.asarray(codes, np.int32)
        if codes.ndim != 3 or codes.shape[:2] != (self.batch, self.cfg.num_quantizers):
            raise ValueError(
                f"StreamingDecoder.push: codes must be ({self.batch}, {self.cfg.num_quantizers}, k), got {codes.shape}"
            )
        out = []
        while codes.shape[-1]:
            take = codes.shape[-1]
            if self.reference_chunking:
                to_boundary = self.chunk_size - self.frames % self.chunk_size
                if self.frames and self.frames % self.chunk_size == 0:
                    # a new reference chunk: fresh state, positions from 0, re-decode the context
                    ctx = self.left_context_size if self.frames - self.left_context_size > 0 else self.frames
                    self.state = _init_state(self.cfg, self.batch, self.policy)
                    if ctx:
                        self._step(self._recent[..., -ctx:])
                take = min(take, to_boundary)
            part, codes = codes[..., :take], codes[..., take:]
            out.append(self._step(part))
            self.frames += take
            keep = self.left_context_size
            self._recent = np.concatenate([self._recent, part], axis=-1)[..., -keep:] if keep else self._recent
        if not out:
            return np.zeros((self.batch, 0), np.float32)
        return np.concatenate(out, axis=-1)
