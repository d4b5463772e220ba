"""The codec decoder's streaming state: what each causal stage still sees of a stream's past.

Mirrors nothing in the reference (its decoder only runs one-shot); it is what makes our decoder
streamable and exact (`codec/decoder.py`). The decoder's modules produce it, so its shapes come
from them — each conv's `context` (`nn/conv.py`), the pre-transformer's sliding window — and
`decoder.init_state` reads them with `jax.eval_shape`; nothing here restates the tree.

Every leaf has the batch (row) axis first, so rows can be gathered, reset and scattered back
independently: `codec/slots.py` keeps one state for all its slots and moves only the rows that
have frames to decode.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qwen3tts_jax.nn.attention import KVCache
from qwen3tts_jax.typing import Array, Bool, Float, HostArray, Int, pytree_dataclass

__all__ = ["DecoderState"]


@pytree_dataclass
class DecoderState:
    """One stream per row.

    * `pos`: each row's next pre-transformer position (restarted by a fresh state).
    * `kv`: per pre-transformer layer, the keys (RoPE applied) and values of the row's previous
      `sliding_window - 1` frames, oldest first — exactly what the inclusive window can reach;
      slots before the stream's start hold zeros at negative positions, which the mask drops.
    * `history`: per causal conv with left context, keyed by its param path
      (`"decoder_2/block_3/conv1"`), the previous `context` input frames/samples (zeros before
      the stream's start: the one-shot forward's zero padding).
    """

    pos: Int[Array, " b"]
    kv: tuple[KVCache, ...]
    history: dict[str, Float[Array, "b _h _c"]]

    @property
    def batch(self) -> int:
        return self.pos.shape[0]

    def take(self, rows: Int[HostArray, " r"]) -> DecoderState:
        """The states of `rows`; an out-of-range row (a batch bucket's padding) reads as zeros."""
        return jax.tree.map(lambda a: a.at[rows].get(mode="fill", fill_value=0), self)

    def put(self, rows: Int[HostArray, " r"], sub: DecoderState) -> DecoderState:
        """This state with `sub`'s rows written at `rows`; out-of-range rows are dropped."""
        return jax.tree.map(lambda a, s: a.at[rows].set(s.astype(a.dtype), mode="drop"), self, sub)

    def reset(self, fresh: Bool[HostArray, " b"]) -> DecoderState:
        """Rows where `fresh` is True restart: the state before a stream's first frame (zeros)."""

        def zero(a: Array) -> Array:
            return jnp.where(fresh.reshape((-1,) + (1,) * (a.ndim - 1)), jnp.zeros((), a.dtype), a)

        return jax.tree.map(zero, self)
