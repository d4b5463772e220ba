"""SwiGLU MLP. Mirrors `Qwen3TTSTalkerTextMLP` (talker, code predictor) and the codec decoder's
`Qwen3TTSTokenizerV2DecoderMlp`: `down(silu(gate(x)) * up(x))`, no biases."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from qwen3tts_jax.nn.linear import Linear
from qwen3tts_jax.typing import Array, Float


class SwiGLU(nn.Module):
    intermediate_size: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    matmul: str = "weight_stationary"  # `Policy.matmul`, passed to every projection

    @nn.compact
    def __call__(self, x: Float[Array, "... d"]) -> Float[Array, "... d"]:
        dense = lambda n, name: Linear(n, dtype=self.dtype, param_dtype=self.param_dtype, matmul=self.matmul, name=name)
        h = jax.nn.silu(dense(self.intermediate_size, "gate_proj")(x)) * dense(self.intermediate_size, "up_proj")(x)
        return dense(x.shape[-1], "down_proj")(h)
