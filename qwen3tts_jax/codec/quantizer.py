"""Residual vector quantisation of the 12 Hz tokenizer: dequantise (decoder) and nearest-code
search (encoder).

Mirrors `SplitResidualVectorQuantizer.decode` / `EuclideanCodebook.decode` of the decoder and
`MimiEuclideanCodebook.quantize` / `MimiResidualVectorQuantizer.encode` of the encoder.

* A codebook is an EMA accumulator pair: `E = sum / clamp(usage, 1e-5)[:, None]`. Looking up
  codes we gather the `sum` rows and `usage` entries first and divide afterwards: elementwise,
  so bit-identical to dividing the whole table, at the cost of the gathered rows only (this keeps
  a streaming frame step from rebuilding 15 × 2048 × 256 tables each call).
* Split RVQ decode: codebook 0 through `rvq_first`, codebooks 1.. through `rvq_rest`; each group
  is summed in codebook order THEN projected by its own `output_proj` (a 1x1 conv), and the two
  are added. The codebooks stay fp32 (policy: never divide them in bf16); the sum is cast to the
  activation dtype before the projection.
* Nearest code: the reference's `torch.cdist(p=2)` over ≥ 25 vectors takes the matmul path
  `sqrt(clamp(|x|² + |e|² - 2 x·e, 0))`; we use the same formula in fp32 (and argmin's first
  index on ties) so the chosen codes agree except on genuine near-ties.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from qwen3tts_jax.codec.config import DecoderConfig
from qwen3tts_jax.nn.linear import precision
from qwen3tts_jax.typing import Array, Float, HostArray, Int

CODEBOOK_EPS = 1e-5  # `EuclideanCodebook.epsilon` / `MimiEuclideanCodebook.epsilon`

__all__ = [
    "CODEBOOK_EPS",
    "SplitResidualVectorQuantizer",
    "codebook_embedding",
    "codebook_lookup",
    "dequantize",
    "nearest_code",
    "residual_quantize",
]


def codebook_embedding(
    embed_sum: Float[HostArray, "v d"], cluster_usage: Float[HostArray, " v"]
) -> Float[Array, "v d"]:
    """The centroid table `E = sum / clamp(usage, 1e-5)[:, None]`, in fp32."""
    usage = jnp.maximum(cluster_usage.astype(jnp.float32), CODEBOOK_EPS)
    return embed_sum.astype(jnp.float32) / usage[:, None]


def codebook_lookup(
    embed_sum: Float[HostArray, "v d"], cluster_usage: Float[HostArray, " v"], codes: Int[Array, "*_"]
) -> Float[Array, "... d"]:
    """`E[codes]` in fp32, dividing only the gathered rows (bit-identical to `E` then gather)."""
    rows = jnp.take(embed_sum.astype(jnp.float32), codes, axis=0)
    usage = jnp.maximum(jnp.take(cluster_usage.astype(jnp.float32), codes, axis=0), CODEBOOK_EPS)
    return rows / usage[..., None]


def _proj(x: Float[Array, "b t i"], weight: Float[HostArray, "o i 1"]) -> Float[Array, "b t o"]:
    """A bias-free 1x1 Conv1d (`input_proj` / `output_proj`), channels-last."""
    return jnp.einsum("bti,oi->bto", x, weight[:, :, 0].astype(x.dtype), precision=precision(x.dtype))


def _group_sum(group: Mapping[str, Any], codes: Int[Array, "b n t"]) -> Float[Array, "b t d"]:
    """Σ_j E_j[codes[:, j]] in codebook order, fp32 (`ResidualVectorQuantization.decode`)."""
    layers = group["vq"]
    total = None
    for j in range(codes.shape[1]):
        cb = layers[f"layers_{j}"]["_codebook"]
        e = codebook_lookup(cb["embedding_sum"], cb["cluster_usage"], codes[:, j])  # b t d
        total = e if total is None else total + e
    return total


def dequantize(
    params: Mapping[str, Any], codes: Int[Array, "b q t"], dtype: Any = jnp.float32
) -> Float[Array, "b t c"]:
    """`SplitResidualVectorQuantizer.decode(codes)` → latents `(b, t, codebook_dim)` (channels-last).

    `params` is the decoder's `quantizer` subtree (`rvq_first`, `rvq_rest`, each with
    `output_proj/weight` and `vq/layers_j/_codebook/{embedding_sum, cluster_usage}`).
    """
    first = _group_sum(params["rvq_first"], codes[:, :1]).astype(dtype)
    out = _proj(first, params["rvq_first"]["output_proj"]["weight"])
    if codes.shape[1] > 1:
        rest = _group_sum(params["rvq_rest"], codes[:, 1:]).astype(dtype)
        out = out + _proj(rest, params["rvq_rest"]["output_proj"]["weight"])
    return out


def _init_group(key, cfg: DecoderConfig, n: int) -> dict:
    vd, cd, size = cfg.codebook_vector_dim, cfg.codebook_dim, cfg.codebook_size
    keys = jax.random.split(key, n + 1)
    layers = {
        f"layers_{j}": {
            "_codebook": {
                "cluster_usage": jnp.ones((size,), jnp.float32),
                "embedding_sum": jax.random.normal(keys[j], (size, vd), jnp.float32),
            }
        }
        for j in range(n)
    }
    return {"output_proj": {"weight": jax.random.normal(keys[-1], (cd, vd, 1)) / jnp.sqrt(vd)}, "vq": layers}


class SplitResidualVectorQuantizer(nn.Module):
    """The decoder's `quantizer` (decode only). Its params are nested dicts named exactly as the
    checkpoint (`rvq_first/vq/layers_0/_codebook/embedding_sum`, ...); the unused `input_proj`
    is not loaded."""

    cfg: DecoderConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, codes: Int[Array, "b q t"]) -> Float[Array, "b t c"]:
        first = self.param("rvq_first", lambda k: _init_group(k, self.cfg, 1))
        rest = self.param("rvq_rest", lambda k: _init_group(k, self.cfg, self.cfg.num_quantizers - 1))
        return dequantize({"rvq_first": first, "rvq_rest": rest}, codes, self.dtype)


# --------------------------------------------------------------------------------------------
# Encoder side: nearest-neighbour quantisation
# --------------------------------------------------------------------------------------------


def nearest_code(x: Float[Array, "... d"], embedding: Float[HostArray, "v d"]) -> Int[Array, "*_"]:
    """argmin_v ||x - E_v|| as `MimiEuclideanCodebook.quantize` computes it (fp32, cdist's matmul
    form `sqrt(clamp(|x|² + |e|² - 2 x·e, 0))`, first index on ties)."""
    x = x.astype(jnp.float32)
    e = embedding.astype(jnp.float32)
    x_norm = jnp.sum(x * x, axis=-1, keepdims=True)  # ... 1
    e_norm = jnp.sum(e * e, axis=-1)  # v
    d2 = x_norm + e_norm - 2.0 * jnp.einsum("...d,vd->...v", x, e, precision=jax.lax.Precision.HIGHEST)
    dist = jnp.sqrt(jnp.maximum(d2, 0.0))
    return jnp.argmin(dist, axis=-1).astype(jnp.int32)


def residual_quantize(
    x: Float[Array, "b t d"],
    embed_sums: Sequence[Float[Array, "v d"]],
    cluster_usages: Sequence[Float[Array, " v"]],
) -> Int[Array, "n b t"]:
    """`MimiResidualVectorQuantizer.encode` after `input_proj`: for each codebook j in order,
    idx_j = nearest(r), r -= E_j[idx_j] (r starts at x, fp32). Returns the codes `(n, b, t)`."""
    residual = x.astype(jnp.float32)
    codes = []
    for s, u in zip(embed_sums, cluster_usages):
        table = codebook_embedding(s, u)
        idx = nearest_code(residual, table)
        residual = residual - jnp.take(table, idx, axis=0)
        codes.append(idx)
    return jnp.stack(codes)
