"""RMSNorm. Mirrors `Qwen3TTSRMSNorm` (also used by the codec decoder's transformer).

The reference normalises in fp32, casts back to the activation dtype, and only then multiplies by
the weight; in bf16 that order changes the result, so we keep it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from qwen3tts_jax.nn.params import existing_param
from qwen3tts_jax.typing import Array, Float, HostArray


def rms_norm(x: Float[Array, "... d"], weight: Float[HostArray, " d"], eps: float) -> Float[Array, "... d"]:
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return weight.astype(x.dtype) * xf.astype(x.dtype)


class RMSNorm(nn.Module):
    eps: float = 1e-6
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "... d"]) -> Float[Array, "... d"]:
        weight = existing_param(self, "weight", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
        return rms_norm(x, weight, self.eps)
