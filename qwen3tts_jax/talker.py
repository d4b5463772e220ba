"""The talker: the codec language model that predicts codebook 0 of each 80 ms frame.

Mirrors `Qwen3TTSTalkerForConditionalGeneration` (text_projection, codec_head) and
`Qwen3TTSTalkerModel` (codec_embedding, text_embedding, 28 decoder layers, norm). The code
predictor is a separate module (`code_predictor.py`) whose params live under
`talker/code_predictor`, as in the checkpoint.

Use it purely: `Talker(cfg, policy).apply({"params": p}, embeds, mask, cache)` returns
`(hidden, new_cache)`; the other entry points are methods (`method=Talker.embed_text`, ...).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from qwen3tts_jax.config import Policy, TalkerConfig
from qwen3tts_jax.nn.linear import Embedding, Linear
from qwen3tts_jax.nn.transformer import DecoderCache, DecoderStack, init_cache
from qwen3tts_jax.typing import Array, Bool, Float, Int


class TalkerModel(DecoderStack):
    """`Qwen3TTSTalkerModel`: the decoder stack plus both input embedding tables."""

    codec_vocab_size: int = 0
    text_vocab_size: int = 0
    text_hidden_size: int = 0

    def setup(self):
        super().setup()
        p = self.policy
        self.codec_embedding = Embedding(self.codec_vocab_size, self.cfg.hidden_size, p.dtype, p.param_dtype)
        self.text_embedding = Embedding(self.text_vocab_size, self.text_hidden_size, p.dtype, p.param_dtype)


class TextProjection(nn.Module):
    """`Qwen3TTSTalkerResizeMLP`: `fc2(silu(fc1(x)))` with biases, text width → talker width."""

    intermediate_size: int
    output_size: int
    policy: Policy

    @nn.compact
    def __call__(self, x: Float[Array, "... e"]) -> Float[Array, "... d"]:
        p = self.policy
        h = Linear(self.intermediate_size, True, p.dtype, p.param_dtype, p.matmul, name="linear_fc1")(x)
        return Linear(self.output_size, True, p.dtype, p.param_dtype, p.matmul, name="linear_fc2")(jax.nn.silu(h))


class Talker(nn.Module):
    cfg: TalkerConfig
    policy: Policy

    def setup(self):
        cfg, p = self.cfg, self.policy
        self.model = TalkerModel(
            cfg.transformer,
            p,
            codec_vocab_size=cfg.vocab_size,
            text_vocab_size=cfg.text_vocab_size,
            text_hidden_size=cfg.text_hidden_size,
        )
        self.text_projection = TextProjection(cfg.text_hidden_size, cfg.transformer.hidden_size, p)
        self.codec_head = Linear(cfg.vocab_size, False, p.dtype, p.param_dtype, p.matmul, out_dtype=jnp.float32)

    def __call__(
        self,
        embeds: Float[Array, "b t d"],
        mask: Bool[Array, "b t"],
        cache: DecoderCache,
        segment: Int[Array, "b t"] | None = None,
    ) -> tuple[Float[Array, "b t d"], DecoderCache]:
        """Prefill (t > 1, padding marked False in `mask`; `segment`: prompts packed end to end,
        `prompt.PackedPrompts`) or one decode step (t = 1)."""
        return self.model(embeds, mask, cache, segment)

    def embed_text(self, ids: Int[Array, "*n"]) -> Float[Array, "*n d"]:
        """`text_projection(text_embedding(ids))`: every text-side vector of a prompt."""
        return self.text_projection(self.model.text_embedding(ids))

    def embed_codec(self, ids: Int[Array, "*n"]) -> Float[Array, "*n d"]:
        return self.model.codec_embedding(ids)

    def logits(self, hidden: Float[Array, "*n d"]) -> Float[Array, "*n v"]:
        """`codec_head` over the normed hidden states, upcast to fp32 as generation does."""
        return self.codec_head(hidden).astype(jnp.float32)


def talker_cache(cfg: TalkerConfig, policy: Policy, batch: int, slots: int) -> DecoderCache:
    return init_cache(cfg.transformer, policy, batch, slots)
