"""Linear and embedding layers stored in the checkpoint's own layout.

Mirrors `torch.nn.Linear` / `torch.nn.Embedding`. The kernel keeps PyTorch's `(out, in)` layout:
no transpose at load, and at small batch XLA:CPU runs the weight-stationary `(out, in)` dot about
twice as fast as `(in, out)` (see shared perf notes). Params are named `weight`/`bias` like the
checkpoint so the key table stays readable.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from qwen3tts_jax.nn.params import existing_param
from qwen3tts_jax.typing import Array, Float, HostArray, Int

__all__ = ["Embedding", "Linear", "existing_param", "linear", "precision"]


def precision(dtype) -> jax.lax.Precision:
    """fp32 compute means fp32 products: on GPUs XLA's default would run fp32 dots as TF32 (~1e-3
    relative error), which breaks parity with the fp32 reference. Lower dtypes take the default."""
    return jax.lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else jax.lax.Precision.DEFAULT


# Up to this many rows `x @ weight.T` runs weight-stationary on CPU (see `linear`). Measured on
# the 2-core CPU machine, 12 of the 0.6B talker's weights in one program (benchmarks/RESULTS.md,
# "matmul forms"): weight-stationary / XLA's own form = 2.55x at 8 rows, 2.05x at 32, 1.46x at
# 64, 1.19x at 128, 0.96x at 256, 0.92x at 512; the crossover lies between 128 and 256.
WEIGHT_STATIONARY_ROWS = 192


def linear(x: Float[Array, "... i"], weight: Float[HostArray, "o i"], bias: Float[HostArray, " o"] | None = None) -> Float[Array, "... o"]:
    """`x @ weight.T + bias` in x's dtype.

    On XLA:CPU, for few rows (decode steps, short prefills) the product is computed as
    `weight · xᵀ → (o, n)` and transposed afterwards: the `(o, i)` weight streams through once
    with the n rows held, the form that keeps a batch-8 step as fast as batch 1. The
    optimization barrier stops XLA's algebraic simplifier from folding the transpose back into
    the dot (which would restore the `(n, o)` form, 2.5-3x slower at n = 4..16)."""
    w = weight.astype(x.dtype)
    rows = math.prod(x.shape[:-1])
    if 1 < rows <= WEIGHT_STATIONARY_ROWS and jax.default_backend() == "cpu":
        x2 = x.reshape(rows, x.shape[-1])
        y = jax.lax.dot_general(w, x2, (((1,), (1,)), ((), ())), precision=precision(x.dtype))  # o n
        y = jax.lax.optimization_barrier(y).T.reshape(*x.shape[:-1], w.shape[0])
    else:
        y = jnp.einsum("...i,oi->...o", x, w, precision=precision(x.dtype))
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
        weight = existing_param(self, "weight", init, (self.features, x.shape[-1]), self.param_dtype)
        bias = existing_param(self, "bias", nn.initializers.zeros, (self.features,), self.param_dtype) if self.use_bias else None
        return linear(x.astype(self.dtype), weight, bias)


class Embedding(nn.Module):
    """`torch.nn.Embedding(num, features)`: a `(num, features)` table looked up by id."""

    num: int
    features: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids: Int[Array, "*_"]) -> Float[Array, "... d"]:
        table = existing_param(self, "weight", nn.initializers.normal(0.02), (self.num, self.features), self.param_dtype)
        return jnp.take(table, ids, axis=0).astype(self.dtype)
