"""The Qwen3 decoder layer and layer stack shared by the talker and the code predictor.

Mirrors `Qwen3TTSTalkerDecoderLayer` / `Qwen3TTSDecoderLayer` (pre-norm attention with per-head
q/k RMSNorm, then pre-norm SwiGLU) and the layer loop + final norm of `Qwen3TTSTalkerModel` /
`Qwen3TTSTalkerCodePredictorModel`.

State is explicit: a `DecoderCache` (per-layer K/V in fixed-size slots, which slots hold real
tokens, how many slots are written) goes in and the updated one comes out. One call handles a
prefill of t tokens or a single decode step alike. Positions count only real tokens of each row,
so a left-padded row starts at 0 at its first real token — the reference's
`cumsum(attention_mask) - 1` / `rope_deltas` bookkeeping. A prefill may also pack several
prompts end to end in one row (`segment`, `packed_geometry`): each attends only to itself and
counts its positions from 0, as if prefilled alone.

The stack runs scanned over stacked layer params (`Policy.scan_layers`: one compile, GPU/TPU) or
unrolled over per-layer params `layers_0..` (CPU, where a scan copies each weight slice).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from qwen3tts_jax.config import Policy, TransformerConfig
from qwen3tts_jax.nn.attention import Attention, KVCache
from qwen3tts_jax.nn.mlp import SwiGLU
from qwen3tts_jax.nn.norms import RMSNorm
from qwen3tts_jax.nn.rope import rope_tables
from qwen3tts_jax.nn.shared_layer import apply_layer
from qwen3tts_jax.typing import Array, Bool, Float, Int, pytree_dataclass


@pytree_dataclass
class DecoderCache:
    """KV cache of a whole stack. `layers` is a tuple of per-layer `KVCache` (unrolled) or one
    `KVCache` with a leading layer axis (scanned)."""

    layers: tuple[KVCache, ...] | KVCache
    valid: Bool[Array, "b s"]  # slot holds a real (non-padding) token
    # Slots written so far; the next write starts here. A scalar when every row is written in
    # step (a prefill, the code predictor, training), one per row when rows are at their own
    # lengths (the engine's slots, where requests join and leave at any frame).
    end: Int[Array, ""] | Int[Array, " b"]

    @property
    def slots(self) -> int:
        return self.valid.shape[1]


def init_cache(cfg: TransformerConfig, policy: Policy, batch: int, slots: int, per_row: bool = False) -> DecoderCache:
    """An empty cache with `slots` positions for every layer (`per_row`: one end per row)."""
    one = KVCache.zeros(batch, slots, cfg.num_key_value_heads, cfg.head_dim, policy.dtype)
    if policy.scan_layers:
        layers = jax.tree.map(lambda a: jnp.broadcast_to(a, (cfg.num_hidden_layers, *a.shape)), one)
    else:
        layers = tuple(
            KVCache.zeros(batch, slots, cfg.num_key_value_heads, cfg.head_dim, policy.dtype)
            for _ in range(cfg.num_hidden_layers)
        )
    return DecoderCache(layers, jnp.zeros((batch, slots), bool), jnp.zeros((batch,) if per_row else (), jnp.int32))


def step_geometry(
    cache: DecoderCache, new_mask: Bool[Array, "b t"]
) -> tuple[Int[Array, "b t"], Bool[Array, "b t s"], Bool[Array, "b s"]]:
    """Positions of the t new tokens, the attention mask over all slots, and the new `valid`."""
    t = new_mask.shape[1]
    positions = (
        jnp.sum(cache.valid, axis=-1, dtype=jnp.int32)[:, None] + jnp.cumsum(new_mask, axis=-1, dtype=jnp.int32) - 1
    )
    end = jnp.broadcast_to(cache.end, new_mask.shape[:1])  # b: each row's first new slot
    valid = jax.vmap(lambda row, new, at: jax.lax.dynamic_update_slice(row, new, (at,)))(cache.valid, new_mask, end)
    query_slots = end[:, None] + jnp.arange(t, dtype=jnp.int32)  # b t
    causal = jnp.arange(cache.slots, dtype=jnp.int32)[None, None, :] <= query_slots[:, :, None]  # b t s
    return positions, valid[:, None, :] & causal, valid


def packed_geometry(
    cache: DecoderCache, new_mask: Bool[Array, "b t"], segment: Int[Array, "b t"]
) -> tuple[Int[Array, "b t"], Bool[Array, "b t s"], Bool[Array, "b s"]]:
    """`step_geometry` of a packed prefill into an empty cache (`end` 0): each row holds several
    prompts end to end (`segment` names each token's prompt), a token attends to the earlier
    tokens of its own prompt only, and positions count from 0 within it."""
    t, s = new_mask.shape[1], cache.slots
    causal = jnp.tril(jnp.ones((t, t), bool))
    own = (segment[:, :, None] == segment[:, None, :]) & new_mask[:, None, :] & causal  # b t t
    positions = jnp.maximum(jnp.sum(own, axis=-1, dtype=jnp.int32) - 1, 0)
    mask = jnp.pad(own, ((0, 0), (0, 0), (0, s - t)))
    return positions, mask, jnp.pad(new_mask, ((0, 0), (0, s - t)))


class DecoderLayer(nn.Module):
    cfg: TransformerConfig
    policy: Policy

    @nn.compact
    def __call__(
        self,
        h: Float[Array, "b t d"],
        cos: Float[Array, "b t x"],
        sin: Float[Array, "b t x"],
        mask: Bool[Array, "b t s"],
        kv: KVCache,
        write_index: Int[Array, ""] | Int[Array, " b"],
    ) -> tuple[Float[Array, "b t d"], KVCache]:
        cfg, p = self.cfg, self.policy
        attn = Attention(
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
            qk_norm=True,
            norm_eps=cfg.rms_norm_eps,
            use_bias=cfg.attention_bias,
            block_size=p.attention_block,
            dtype=p.dtype,
            param_dtype=p.param_dtype,
            matmul=p.matmul,
            few_query=p.few_query_attention,
            name="self_attn",
        )
        a, kv = attn(
            RMSNorm(cfg.rms_norm_eps, p.param_dtype, name="input_layernorm")(h), cos, sin, mask, kv, write_index
        )
        h = h + a
        mlp = SwiGLU(cfg.intermediate_size, p.dtype, p.param_dtype, p.matmul, name="mlp")
        h = h + mlp(RMSNorm(cfg.rms_norm_eps, p.param_dtype, name="post_attention_layernorm")(h))
        return h, kv


class DecoderStack(nn.Module):
    """`layers` + final `norm` of a Qwen3 decoder model (no embeddings, no head)."""

    cfg: TransformerConfig
    policy: Policy

    def setup(self):
        cfg, p = self.cfg, self.policy
        if p.scan_layers:
            scanned = nn.scan(
                DecoderLayer,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0, nn.broadcast),
                out_axes=0,
                length=cfg.num_hidden_layers,
            )
            self.layers = scanned(cfg, p)
        else:
            self.layers = [DecoderLayer(cfg, p) for _ in range(cfg.num_hidden_layers)]
        self.norm = RMSNorm(cfg.rms_norm_eps, p.param_dtype)

    def __call__(
        self,
        x: Float[Array, "b t d"],
        new_mask: Bool[Array, "b t"],
        cache: DecoderCache,
        segment: Int[Array, "b t"] | None = None,
    ) -> tuple[Float[Array, "b t d"], DecoderCache]:
        """Run t new tokens (prefill or one step) through every layer; returns the normed hidden
        states of the new tokens and the updated cache. `segment`: a packed prefill into an
        empty cache (`packed_geometry`)."""
        if segment is None:
            positions, mask, valid = step_geometry(cache, new_mask)
        else:
            positions, mask, valid = packed_geometry(cache, new_mask, segment)
        cos, sin = rope_tables(positions, self.cfg.head_dim, self.cfg.rope_theta, self.policy.dtype)
        h = x.astype(self.policy.dtype)
        if self.policy.scan_layers:
            h, layers = self.layers(h, cos, sin, mask, cache.layers, cache.end)
        else:
            new_layers = []
            for layer, kv in zip(self.layers, cache.layers):
                h, kv = apply_layer(self, layer, h, cos, sin, mask, kv, cache.end)
                new_layers.append(kv)
            layers = tuple(new_layers)
        new_cache = DecoderCache(layers, valid, cache.end + x.shape[1])
        return self.norm(h), new_cache
