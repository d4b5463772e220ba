"""Rotary position embedding (NeoX rotate-half). Mirrors `Qwen3TTSRotaryEmbedding`,
`Qwen3TTSTalkerRotaryEmbedding` and `apply_rotary_pos_emb`.

The talker's config asks for "interleaved M-RoPE" with mrope_section [24, 20, 20], but every code
path of the reference feeds three identical position rows, and then the interleaved M-RoPE selects,
for each frequency, the same angle as plain RoPE: it is exactly plain RoPE (tests/test_rope.py
proves it against the reference class). Angles are computed in fp32 and cast to the activation
dtype afterwards, as the reference does.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from qwen3tts_jax.typing import Array, Float, Int


def inv_frequencies(head_dim: int, theta: float) -> Float[Array, " half"]:
    """`1 / theta^(2i/head_dim)`, the reference's non-persistent `inv_freq` buffer.

    A trace-time constant. The power is taken in float64 and rounded to float32 before the fp32
    reciprocal: that reproduces torch's fp32 buffer bit for bit in almost every entry (a 1-ulp
    difference would grow to ~1e-5 in the angle at position 100), where jnp's fp32 power does not.
    """
    exponent = np.arange(0, head_dim, 2).astype(np.float32) / np.float32(head_dim)
    power = np.power(np.float64(np.float32(theta)), exponent.astype(np.float64)).astype(np.float32)
    return jnp.asarray(np.float32(1.0) / power)


def rope_tables(
    positions: Int[Array, "b t"], head_dim: int, theta: float, dtype=jnp.float32
) -> tuple[Float[Array, "b t x"], Float[Array, "b t x"]]:
    """cos/sin tables for the given positions: `emb = concat(freqs, freqs)`."""
    freqs = positions.astype(jnp.float32)[..., None] * inv_frequencies(head_dim, theta)  # b t x/2
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype)


def rotate_half(x: Float[Array, "... x"]) -> Float[Array, "... x"]:
    half = x.shape[-1] // 2
    return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(
    x: Float[Array, "b t n x"], cos: Float[Array, "b t x"], sin: Float[Array, "b t x"]
) -> Float[Array, "b t n x"]:
    """Rotate heads `n` of x by the per-position angles."""
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    return x * cos + rotate_half(x) * sin
