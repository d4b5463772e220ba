"""Activations with parameters: SnakeBeta (the codec's waveform decoder).

Mirrors `qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2.SnakeBeta`:
`x + 1 / (exp(beta) + 1e-9) * sin(x * exp(alpha))^2` with per-channel `alpha`, `beta` stored in
log space (init 0). The op order is the reference's (exp, then the reciprocal of beta + eps, then
the product), so fp32 results agree to rounding. Channels-last.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from qwen3tts_jax.nn.params import existing_param
from qwen3tts_jax.typing import Array, Float, HostArray

SNAKE_EPS = 1e-9  # `SnakeBeta.no_div_by_zero`


def snake_beta(
    x: Float[Array, "... c"], alpha: Float[HostArray, " c"], beta: Float[HostArray, " c"]
) -> Float[Array, "... c"]:
    a = jnp.exp(alpha.astype(x.dtype))
    b = jnp.exp(beta.astype(x.dtype))
    return x + (1.0 / (b + SNAKE_EPS)) * jnp.square(jnp.sin(x * a))


class SnakeBeta(nn.Module):
    """`SnakeBeta(in_features)`: params `alpha`, `beta` of shape `(c,)`."""

    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "... c"]) -> Float[Array, "... c"]:
        c = x.shape[-1]
        alpha = existing_param(self, "alpha", nn.initializers.zeros, (c,), self.param_dtype)
        beta = existing_param(self, "beta", nn.initializers.zeros, (c,), self.param_dtype)
        return snake_beta(x, alpha, beta)
