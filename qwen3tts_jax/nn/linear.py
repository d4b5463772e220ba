"""Linear and embedding layers stored in the checkpoint's own layout.

Mirrors `torch.nn.Linear` / `torch.nn.Embedding`. The kernel keeps PyTorch's `(out, in)` layout:
no transpose at load, and at small batch XLA:CPU runs the weight-stationary `(out, in)` dot about
twice as fast as `(in, out)` (see shared perf notes). Which form a product takes is the policy's
`matmul` field, passed down as an argument, never read from the backend here. Params are named
`weight`/`bias` like the checkpoint so the key table stays readable.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from qwen3tts_jax.nn.params import existing_param
from qwen3tts_jax.typing import Array, Float, HostArray, Int

__all__ = ["MATMUL_FORMS", "Embedding", "Linear", "existing_param", "linear", "precision"]

MATMUL_FORMS = ("weight_stationary", "xla")


def precision(dtype) -> jax.lax.Precision:
    """fp32 compute means fp32 products: on GPUs XLA's default would run fp32 dots as TF32 (~1e-3
    relative error), which breaks parity with the fp32 reference. Lower dtypes take the default."""
    return jax.lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else jax.lax.Precision.DEFAULT


# Up to this many rows `x @ weight.T` runs weight-stationary under `form="weight_stationary"`
# (see `linear`): the measured crossover with XLA's own form on the CPU (benchmarks/RESULTS.md,
# "matmul forms").
WEIGHT_STATIONARY_ROWS = 192


def linear(
    x: Float[Array, "... i"],
    weight: Float[HostArray, "o i"],
    bias: Float[HostArray, " o"] | None = None,
    form: str = "weight_stationary",
    out_dtype: Any = None,
) -> Float[Array, "... o"]:
    """`x @ weight.T + bias` computed in x's dtype with fp32 accumulation; the result in
    `out_dtype` (None: x's dtype; fp32 for logits, so a bf16 head is not rounded to bf16).

    `form` is `Policy.matmul`. "weight_stationary" (XLA:CPU): for few rows (decode steps, short
    prefills) the product is computed as `weight · xᵀ → (o, n)` and transposed afterwards: the
    `(o, i)` weight streams through once with the n rows held, the form that keeps a batch-8 step
    as fast as batch 1. The optimization barrier stops XLA's algebraic simplifier from folding
    the transpose back into the dot (which would restore the `(n, o)` form, 2.5-3x slower at
    n = 4..16). "xla" (GPU/TPU): one dot, laid out by the compiler."""
    if form not in MATMUL_FORMS:
        raise ValueError(f"linear: form must be one of {MATMUL_FORMS}, got {form!r}")
    out_dtype = jnp.dtype(out_dtype or x.dtype)
    w = weight.astype(x.dtype)
    rows = math.prod(x.shape[:-1])
    # fp32 accumulation whatever the input dtype; cast once at the end.
    acc = dict(precision=precision(x.dtype), preferred_element_type=jnp.float32)
    if form == "weight_stationary" and 1 < rows <= WEIGHT_STATIONARY_ROWS:
        x2 = x.reshape(rows, x.shape[-1])
        y = jax.lax.dot_general(w, x2, (((1,), (1,)), ((), ())), **acc)  # o n
        y = jax.lax.optimization_barrier(y).T.reshape(*x.shape[:-1], w.shape[0])
    else:
        y = jnp.einsum("...i,oi->...o", x, w, **acc)
    y = y.astype(out_dtype)
    return y if bias is None else y + bias.astype(out_dtype)


class Linear(nn.Module):
    """`torch.nn.Linear(in, features, bias=use_bias)` with weight `(features, in)`; `matmul` is
    the policy's product form, `out_dtype` as in `linear`."""

    features: int
    use_bias: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    matmul: str = "weight_stationary"
    out_dtype: Any = None

    @nn.compact
    def __call__(self, x: Float[Array, "... i"]) -> Float[Array, "... o"]:
        init = nn.initializers.lecun_normal(in_axis=1, out_axis=0)
        weight = existing_param(self, "weight", init, (self.features, x.shape[-1]), self.param_dtype)
        bias = (
            existing_param(self, "bias", nn.initializers.zeros, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        return linear(x.astype(self.dtype), weight, bias, self.matmul, self.out_dtype)


class Embedding(nn.Module):
    """`torch.nn.Embedding(num, features)`: a `(num, features)` table looked up by id."""

    num: int
    features: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids: Int[Array, "*_"]) -> Float[Array, "... d"]:
        table = existing_param(
            self, "weight", nn.initializers.normal(0.02), (self.num, self.features), self.param_dtype
        )
        return jnp.take(table, ids, axis=0).astype(self.dtype)
