"""The code predictor (sub-talker / MTP): codebooks 1..15 of a frame from the talker's hidden
state and codebook 0.

Mirrors `Qwen3TTSTalkerCodePredictorModelForConditionalGeneration` and
`Qwen3TTSTalkerCodePredictorModel`. Indexing trap kept as in the reference: embedding j and head j
serve codebook j+1; codebook 0 is embedded by the *talker's* `codec_embedding`; the predictor's
embeddings have the talker's width, and `small_to_mtp_projection` (present only when the talker
and predictor widths differ, i.e. 1.7B) maps every predictor input — the talker hidden state too.

Per frame the predictor runs on a fresh cache of `num_code_groups` slots: a 2-token prefill
`[proj(past_hidden), proj(C0(code0))]` at positions 0, 1 → head 0 → code 1, then 14 single steps
`proj(emb_{j-1}(code_j))` → head j → code j+1.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from qwen3tts_jax.config import Policy, TalkerConfig
from qwen3tts_jax.nn.linear import Embedding, Linear, linear
from qwen3tts_jax.nn.transformer import DecoderCache, DecoderStack, init_cache
from qwen3tts_jax.typing import Array, Bool, Float, Int


class CodePredictorModel(DecoderStack):
    """`Qwen3TTSTalkerCodePredictorModel`: decoder stack + 15 codebook embeddings (talker width)."""

    num_embeddings: int = 0
    codebook_size: int = 0
    embedding_dim: int = 0

    def setup(self):
        super().setup()
        p = self.policy
        self.codec_embedding = [
            Embedding(self.codebook_size, self.embedding_dim, p.dtype, p.param_dtype)
            for _ in range(self.num_embeddings)
        ]


class CodePredictor(nn.Module):
    talker_cfg: TalkerConfig
    policy: Policy

    def setup(self):
        cp, p = self.talker_cfg.code_predictor, self.policy
        talker_hidden = self.talker_cfg.transformer.hidden_size
        n = cp.num_code_groups - 1
        self.model = CodePredictorModel(
            cp.transformer, p, num_embeddings=n, codebook_size=cp.vocab_size, embedding_dim=talker_hidden
        )
        self.lm_head = [
            Linear(cp.vocab_size, False, p.dtype, p.param_dtype, p.matmul, out_dtype=jnp.float32) for _ in range(n)
        ]
        if self.has_projection:
            self.small_to_mtp_projection = Linear(cp.transformer.hidden_size, True, p.dtype, p.param_dtype, p.matmul)

    @property
    def has_projection(self) -> bool:
        return self.talker_cfg.code_predictor.transformer.hidden_size != self.talker_cfg.transformer.hidden_size

    def project(self, x: Float[Array, "... d"]) -> Float[Array, "... c"]:
        """`small_to_mtp_projection` (1.7B) or identity (0.6B)."""
        return self.small_to_mtp_projection(x) if self.has_projection else x.astype(self.policy.dtype)

    def embed(self, j: int, ids: Int[Array, "*n"]) -> Float[Array, "*n d"]:
        """Embedding j (of codebook j+1), in the talker's width, before projection."""
        return self.model.codec_embedding[j](ids)

    def head(self, j: int, hidden: Float[Array, "*n c"]) -> Float[Array, "*n v"]:
        """Head j (predicts codebook j+1), fp32 logits."""
        return self.lm_head[j](hidden).astype(jnp.float32)

    def __call__(
        self, inputs: Float[Array, "b t d"], mask: Bool[Array, "b t"], cache: DecoderCache
    ) -> tuple[Float[Array, "b t c"], DecoderCache]:
        """Project talker-width inputs and run them through the stack (prefill or step)."""
        return self.model(self.project(inputs), mask, cache)


def predictor_cache(cfg: TalkerConfig, policy: Policy, batch: int) -> DecoderCache:
    """A fresh per-frame cache: 2 prefill slots + 14 steps = num_code_groups slots."""
    return init_cache(cfg.code_predictor.transformer, policy, batch, cfg.code_predictor.num_code_groups)


def embed_codes(params: dict, j: int, ids: Int[Array, "*_"], policy: Policy) -> Float[Array, "... d"]:
    """`CodePredictor.embed(j, ids)` on the predictor's param tree, without a Flax `apply`
    (each apply sets up the whole module tree: tens of ms of tracing, ×28 per frame step)."""
    return jnp.take(params["model"][f"codec_embedding_{j}"]["weight"], ids, axis=0).astype(policy.dtype)


def head_logits(params: dict, j: int, hidden: Float[Array, "... c"], policy: Policy) -> Float[Array, "... v"]:
    """`CodePredictor.head(j, hidden)` on the predictor's param tree, without a Flax `apply`."""
    weight = params[f"lm_head_{j}"]["weight"]
    return linear(hidden.astype(policy.dtype), weight, form=policy.matmul, out_dtype=jnp.float32)
