"""Activations with parameters: SnakeBeta (the codec's waveform decoder).

Mirrors `qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2.SnakeBeta`:
`x + 1 / (exp(beta) + 1e-9) * sin(x * exp(alpha))^2` with per-channel `alpha`, `beta` stored in
log space (init 0). The op order is the reference's (exp, then the reciprocal of beta + eps, then
the product), so fp32 results agree to rounding. Channels-last.

`sin(·)²` is where the waveform decoder's elementwise time goes: XLA:CPU computes `sin` one
element at a time, so the decoder's 29 snakes cost about as much as its convolutions
(benchmarks/RESULTS.md, "Codec decode"). `sine="polynomial"` (the CPU policy) computes it
vectorised instead: a Cody–Waite reduction by π/2 and the minimax polynomials of Cephes `sinf` /
`cosf` (sin² of the reduced argument, or cos² in odd quadrants: the sign never matters), in fp32,
≤ 2e-7 from the exact value for |y| < 2^20 (XLA's `sin`: 9e-8). Beyond 2^20 the reduction loses
bits, so a tensor with any such element takes XLA's `sin` there (one `lax.cond`; a real decoder
never gets near it).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from qwen3tts_jax.nn.params import existing_param
from qwen3tts_jax.typing import Array, Float, HostArray

SNAKE_EPS = 1e-9  # `SnakeBeta.no_div_by_zero`
SINES = ("polynomial", "xla")
POLYNOMIAL_LIMIT = float(2**20)  # |y| below which the fp32 Cody–Waite reduction is exact enough

_TWO_OVER_PI = np.float32(0.636619772367581343)
# π/2 in three fp32 parts (Cephes' π/4 split, doubled); the first two have few enough bits that
# q·part is exact for the |q| < 2^20·2/π the polynomial path sees.
_PIO2 = (np.float32(1.5703125), np.float32(4.837512969970703125e-4), np.float32(7.54978995489188216e-8))
_SIN = (np.float32(-1.6666654611e-1), np.float32(8.3321608736e-3), np.float32(-1.9515295891e-4))
_COS = (np.float32(4.166664568298827e-2), np.float32(-1.388731625493765e-3), np.float32(2.443315711809948e-5))


def _sin_squared_polynomial(y: Float[Array, "*s"]) -> Float[Array, "*s"]:
    q = jnp.round(y * _TWO_OVER_PI)
    r = ((y - q * _PIO2[0]) - q * _PIO2[1]) - q * _PIO2[2]  # y - q·π/2, in [-π/4, π/4]
    z = r * r
    s = r + r * z * (_SIN[0] + z * (_SIN[1] + z * _SIN[2]))
    c = 1.0 - 0.5 * z + z * z * (_COS[0] + z * (_COS[1] + z * _COS[2]))
    v = jnp.where((q.astype(jnp.int32) & 1) == 1, c, s)  # sin(y) = ±sin r or ±cos r by quadrant
    return v * v


def sin_squared(y: Float[Array, "*s"], sine: str = "polynomial") -> Float[Array, "*s"]:
    """`sin(y)²`, elementwise; `sine` picks the form (module docstring). The polynomial runs in
    fp32 whatever `y`'s dtype, and returns `y`'s dtype."""
    if sine == "xla":
        return jnp.square(jnp.sin(y))
    if sine != "polynomial":
        raise ValueError(f"sine must be one of {SINES}, got {sine!r}")
    yf = y.astype(jnp.float32)
    out = jax.lax.cond(
        jnp.max(jnp.abs(yf), initial=0.0) >= POLYNOMIAL_LIMIT,
        lambda v: jnp.where(jnp.abs(v) < POLYNOMIAL_LIMIT, _sin_squared_polynomial(v), jnp.square(jnp.sin(v))),
        _sin_squared_polynomial,
        yf,
    )
    return out.astype(y.dtype)


def snake_beta(
    x: Float[Array, "... c"], alpha: Float[HostArray, " c"], beta: Float[HostArray, " c"], sine: str = "polynomial"
) -> Float[Array, "... c"]:
    a = jnp.exp(alpha.astype(x.dtype))
    b = jnp.exp(beta.astype(x.dtype))
    return x + (1.0 / (b + SNAKE_EPS)) * sin_squared(x * a, sine)


class SnakeBeta(nn.Module):
    """`SnakeBeta(in_features)`: params `alpha`, `beta` of shape `(c,)`; `sine`: `Policy.snake_sine`."""

    param_dtype: Any = jnp.float32
    sine: str = "polynomial"

    @nn.compact
    def __call__(self, x: Float[Array, "... c"]) -> Float[Array, "... c"]:
        c = x.shape[-1]
        alpha = existing_param(self, "alpha", nn.initializers.zeros, (c,), self.param_dtype)
        beta = existing_param(self, "beta", nn.initializers.zeros, (c,), self.param_dtype)
        return snake_beta(x, alpha, beta, self.sine)
