"""Multi-head / grouped-query self-attention over a fixed-size KV cache.

Mirrors `Qwen3TTSTalkerAttention` / `Qwen3TTSAttention` (with per-head q/k RMSNorm) and, with
`qk_norm=False`, the codec transformers' attention. GQA is done by reshaping the queries to
`(kv_heads, groups)` — K/V are never repeated. The cache is explicit: `KVCache` goes in, the
updated one comes out; new keys/values are written with `dynamic_update_slice` at `write_index`.
The caller supplies the boolean mask `(b, t, s)` (causal, padding, sliding window), so one module
serves every variant.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from qwen3tts_jax.nn.linear import Linear, precision
from qwen3tts_jax.nn.norms import RMSNorm
from qwen3tts_jax.nn.rope import apply_rope
from qwen3tts_jax.typing import Array, Bool, Float, Int, pytree_dataclass


@pytree_dataclass
class KVCache:
    """One layer's keys and values for `s` slots (stacked layers add a leading `l` axis)."""

    k: Float[Array, "*l b s k x"]
    v: Float[Array, "*l b s k x"]

    @staticmethod
    def zeros(batch: int, slots: int, kv_heads: int, head_dim: int, dtype=jnp.float32) -> KVCache:
        shape = (batch, slots, kv_heads, head_dim)
        return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


def write_kv(
    cache: KVCache, k: Float[Array, "b t k x"], v: Float[Array, "b t k x"], index: Int[Array, ""] | Int[Array, " b"]
) -> KVCache:
    """Write t new slots starting at `index`: one slot for every row (a scalar: prefill, the
    code predictor) or each row's own (`(b,)`: the engine's slots, each at its own length)."""

    def put(buf, new, at):
        return jax.lax.dynamic_update_slice(buf, new.astype(buf.dtype), (at, 0, 0))

    if jnp.ndim(index) == 0:
        at = (0, index, 0, 0)
        return KVCache(
            jax.lax.dynamic_update_slice(cache.k, k.astype(cache.k.dtype), at),
            jax.lax.dynamic_update_slice(cache.v, v.astype(cache.v.dtype), at),
        )
    return KVCache(jax.vmap(put)(cache.k, k, index), jax.vmap(put)(cache.v, v, index))


def attend(
    q: Float[Array, "b t h x"],
    k: Float[Array, "b s k x"],
    v: Float[Array, "b s k x"],
    mask: Bool[Array, "b t s"],
    scale: float,
) -> Float[Array, "b t h x"]:
    """softmax(q·k * scale + mask) · v with GQA by query reshaping; softmax in fp32.

    Rows whose mask is all False (queries at left-padding positions) get a uniform distribution
    instead of NaN, as the reference's additive finite mask does; their outputs are never used.
    """
    b, t, h, x = q.shape
    qg = q.reshape(b, t, k.shape[2], h // k.shape[2], x)  # b t k g x
    probs = jax.nn.softmax(_masked_scores(qg, k, mask, scale, False), axis=-1).astype(q.dtype)
    return _weighted(probs, v.astype(q.dtype), False).reshape(b, t, h, x)


# Up to this many queries per row, `attend_live` with `few_query=True` (`Policy.few_query_attention`,
# XLA:CPU) computes q·k and p·v as fused multiply-reduce loops over each block in the cache's own
# (b, s, k, x) layout. As per-head dots, XLA:CPU first transposes every K and V block to
# (b, k, s, x) (batch dims leading), an extra copy per block, layer and step, measured slower.
# Over a short whole cache (`attend`) the dots measured faster and stay. Figures:
# benchmarks/RESULTS.md, "attention". GPU/TPU take the dots (their matrix units; no such copy).
FEW_QUERIES = 4


def _few_queries(t: int, few_query: bool) -> bool:
    return few_query and t <= FEW_QUERIES


def _scores(qg: Float[Array, "b t k g x"], k: Float[Array, "b s k x"], few: bool) -> Float[Array, "b k g t s"]:
    """q·k over head_dim (GQA groups g share a kv head), accumulated and returned in fp32."""
    if few:
        # The barrier materialises the (small) queries: otherwise XLA fuses their RoPE into the
        # reduction and recomputes it for every slot (3-4x slower).
        qg = jax.lax.optimization_barrier(qg)
        prod = qg[:, :, None] * k[:, None, :, :, None, :]
        return jnp.sum(prod, axis=-1, dtype=jnp.float32).transpose(0, 3, 4, 1, 2)  # b t s k g → b k g t s
    return jnp.einsum("btkgx,bskx->bkgts", qg, k, precision=precision(qg.dtype), preferred_element_type=jnp.float32)


def _masked_scores(
    qg: Float[Array, "b t k g x"], k: Float[Array, "b s k x"], mask: Bool[Array, "b t s"], scale, few: bool
) -> Float[Array, "b k g t s"]:
    """q·k · scale in fp32, the float32 minimum where `mask` is False (finite, as the reference's
    additive mask: a fully masked row stays finite)."""
    sc = _scores(qg, k.astype(qg.dtype), few) * jnp.asarray(scale, jnp.float32)
    return jnp.where(mask[:, None, None, :, :], sc, jnp.finfo(jnp.float32).min)


def _weighted(p: Float[Array, "b k g t s"], v: Float[Array, "b s k x"], few: bool) -> Float[Array, "b t k g x"]:
    """Σ_s p · v, accumulated in fp32, returned in p's dtype."""
    if few:
        pt = jax.lax.optimization_barrier(p.transpose(0, 3, 4, 1, 2))  # b t s k g (small: no head_dim)
        return jnp.sum(pt[..., None] * v[:, None, :, :, None, :], axis=2, dtype=jnp.float32).astype(p.dtype)
    pv = jnp.einsum("bkgts,bskx->btkgx", p, v, precision=precision(p.dtype), preferred_element_type=jnp.float32)
    return pv.astype(p.dtype)


def attend_live(
    q: Float[Array, "b t h x"],
    k: Float[Array, "b s k x"],
    v: Float[Array, "b s k x"],
    mask: Bool[Array, "b t s"],
    scale: float,
    live: Int[Array, ""],
    block: int,
    few_query: bool = True,
) -> Float[Array, "b t h x"]:
    """`attend` over only the first `live` slots of a large cache, `block` slots at a time.

    A decode step's cache is sized for the whole frame budget (up to 8192 + prompt slots), but
    only `live` slots are written; attending over all of them reads and scores every unwritten
    slot each step (at 8192 slots that was 10x the step's weight traffic). Here a loop with a
    traced trip count visits `ceil(live / block)` blocks with an online softmax (running max and
    sum in fp32), so the cost follows the tokens written, not the budget, and one compilation
    serves every length. The last block is clamped inside the cache and the slots it shares with
    the previous block are masked out, so any `s >= block` works. Rows masked in every live slot
    come out finite (as in `attend`) and are never used. `few_query` is
    `Policy.few_query_attention` (the block products' form for decode steps, see FEW_QUERIES).
    """
    b, t, h, x = q.shape
    s, kv_heads = k.shape[1], k.shape[2]
    g = h // kv_heads
    few = _few_queries(t, few_query)
    qg = q.reshape(b, t, kv_heads, g, x)  # b t k g x
    neg = jnp.finfo(jnp.float32).min

    def body(i, carry):
        m, norm, acc = carry  # b k g t | b k g t | b k g t x   (fp32)
        start = i * block
        at = jnp.minimum(start, s - block)  # clamp the last block inside the cache
        kb = jax.lax.dynamic_slice_in_dim(k, at, block, axis=1)  # b B k x
        vb = jax.lax.dynamic_slice_in_dim(v, at, block, axis=1).astype(q.dtype)
        mb = jax.lax.dynamic_slice_in_dim(mask, at, block, axis=2)  # b t B
        mb = mb & (at + jnp.arange(block) >= start)[None, None, :]  # drop slots seen in the previous block
        sc = _masked_scores(qg, kb, mb, scale, few)
        m_new = jnp.maximum(m, jnp.max(sc, axis=-1))
        p = jnp.exp(sc - m_new[..., None])
        alpha = jnp.exp(m - m_new)
        pv = _weighted(p.astype(q.dtype), vb, few).transpose(0, 2, 3, 1, 4)  # b k g t x
        return m_new, alpha * norm + jnp.sum(p, axis=-1), alpha[..., None] * acc + pv.astype(jnp.float32)

    init = (
        jnp.full((b, kv_heads, g, t), neg, jnp.float32),
        jnp.zeros((b, kv_heads, g, t), jnp.float32),
        jnp.zeros((b, kv_heads, g, t, x), jnp.float32),
    )
    n_blocks = (live + block - 1) // block
    _, norm, acc = jax.lax.fori_loop(0, n_blocks, body, init)
    out = (acc / norm[..., None]).astype(q.dtype)  # b k g t x
    return jnp.transpose(out, (0, 3, 1, 2, 4)).reshape(b, t, h, x)


class Attention(nn.Module):
    """Self-attention with optional per-head q/k RMSNorm (over head_dim) and RoPE."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    qk_norm: bool = True
    norm_eps: float = 1e-6
    use_bias: bool = False
    # > 0: caches with more slots than this attend only over the written prefix, block by block
    # (`attend_live`); the talker's budget-sized cache. 0: every slot (short caches, the codec).
    block_size: int = 0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    matmul: str = "weight_stationary"  # `Policy.matmul`, for the q/k/v/o projections
    few_query: bool = True  # `Policy.few_query_attention`, for decode steps over a large cache

    @nn.compact
    def __call__(
        self,
        x: Float[Array, "b t d"],
        cos: Float[Array, "b t x"],
        sin: Float[Array, "b t x"],
        mask: Bool[Array, "b t s"],
        cache: KVCache,
        write_index: Int[Array, ""] | Int[Array, " b"],
    ) -> tuple[Float[Array, "b t d"], KVCache]:
        b, t, d = x.shape
        dense = lambda n, name: Linear(n, self.use_bias, self.dtype, self.param_dtype, self.matmul, name=name)
        q = dense(self.num_heads * self.head_dim, "q_proj")(x).reshape(b, t, self.num_heads, self.head_dim)
        k = dense(self.num_kv_heads * self.head_dim, "k_proj")(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        v = dense(self.num_kv_heads * self.head_dim, "v_proj")(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            q = RMSNorm(self.norm_eps, self.param_dtype, name="q_norm")(q)
            k = RMSNorm(self.norm_eps, self.param_dtype, name="k_norm")(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        cache = write_kv(cache, k, v, write_index)
        # Blocks only pay when most slots are unwritten (decode steps over a budget-sized cache).
        # A call that fills its whole cache (an admission's prefill, a training forward) attends
        # over all of it: faster, and differentiable (the block loop's traced trip count is not).
        if 0 < self.block_size < cache.k.shape[1] and t < cache.k.shape[1]:
            live = jnp.max(write_index) + t  # the longest row's written prefix; `mask` handles the rest
            out = attend_live(q, cache.k, cache.v, mask, self.head_dim**-0.5, live, self.block_size, self.few_query)
        else:
            out = attend(q, cache.k, cache.v, mask, self.head_dim**-0.5)
        return dense(d, "o_proj")(out.reshape(b, t, self.num_heads * self.head_dim)), cache
