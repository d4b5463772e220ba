"""Linear and embedding layers stored in the checkpoint's own layout.

Mirrors `torch.nn.Linear` / `torch.nn.Embedding`. The kernel keeps PyTorch's `(out, in)` layout:
no transpose at load, and at small batch XLA:CPU runs the weight-stationary `(out, in)` dot about
twice as fast as `(in, out)` (see shared perf notes). Params are named `weight`/`bias` like the
checkpoint so the key table stays readable.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from qwen3tts_jax.typing import Array, Float, Int


def precision(dtype) -> jax.lax.Precision:
    """fp32 compute means fp32 products: on GPUs XLA's default would run fp32 dots as TF32 (~1e-3
    relative error), which breaks parity with the fp32 reference. Lower dtypes take the default."""
    return jax.lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else jax.lax.Precision.DEFAULT


def linear(x: Float[Array, "... i"], weight: Float[Array, "o i"], bias: Float[Array, "o"] | None = None) -> Float[Array, "... o"]:
    """`x @ weight.T + bias` in x's dtype."""
    y = jnp.einsum("...i,oi->...o", x, weight.astype(x.dtype), precision=precision(x.dtype))
    return y if bias is None else y + bias.astype(x.dtype)


class Linear(nn.Module):
    """`torch.nn.Linear(in, features, bias=use_bias)` with weight `(features, in)`."""

    features: int
    use_bias: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "... i"]) -> Float[Array, "... o"]:
        init = nn.initializers.lecun_normal(in_axis=1, out_axis=0)
        weight = self.param("weight", init, (self.features, x.shape[-1]), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype) if self.use_bias else None
        return linear(x.astype(self.dtype), weight, bias)


class Embedding(nn.Module):
    """`torch.nn.Embedding(num, features)`: a `(num, features)` table looked up by id."""

    num: int
    features: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids: Int[Array, "..."]) -> Float[Array, "... d"]:
        table = self.param("weight", nn.initializers.normal(0.02), (self.num, self.features), self.param_dtype)
        return jnp.take(table, ids, axis=0).astype(self.dtype)
