"""The 12 Hz tokenizer's encoder: Mimi's SEANet + transformer + downsample + split RVQ.

Mirrors `Qwen3TTSTokenizerV2Encoder` (qwen_tts/core/tokenizer_12hz/modeling_qwen3_tts_tokenizer_v2.py,
a transformers `MimiModel` with its decoder half removed) and `Qwen3TTSTokenizerV2Model.encode`.
Module by module (transformers/models/mimi/modeling_mimi.py):

    MimiConv1d                 → `MimiConv1d` (causal: left pad k_eff - stride, right pad to ceil(L/stride))
    MimiResnetBlock            → `MimiResnetBlock` (ELU, conv k3, ELU, conv k1, identity shortcut)
    MimiEncoder                → `SEANetEncoder`
    MimiTransformerLayer/Model → `MimiTransformerLayer` / `MimiTransformer` (LayerNorm+bias, MHA with
                                  RoPE, layer scale, GELU(erf) MLP; no final norm)
    MimiSplitResidualVectorQuantizer / MimiResidualVectorQuantizer / MimiEuclideanCodebook
                               → `SplitRVQEncoder` / `RVQEncoder` / `Codebook` (the distance and
                                  centroid helpers are `codec.quantizer`'s)

Attention is FULL causal: the reference runs eager/sdpa, where `create_causal_mask` ignores the
250-frame sliding window (only its flash-attention-2 path would honour it).

Exact lengths without recompiling per length
--------------------------------------------
The reference encodes a batch right-padded with zeros to its longest item (`EncodecFeatureExtractor`)
and keeps `ceil(valid/1920)` frames per item. Every layer is causal, except that each STRIDED conv
pads its input on the right (zeros; the downsample replicates its last frame) up to a multiple of
the stride, and what it pads depends on the sequence length at that layer. So when a batch's
length `P` is not a multiple of 1920, the last frame's codes depend on that edge treatment:
zero-padding the waveform further is NOT exact for that frame (the padded positions of the
intermediate activations are not zeros there). We therefore run on a buffer of any bucket length
`>= P` and reproduce the reference at length `P` exactly: before each strided conv, positions at or
beyond that layer's valid length `L` are set to what the reference pads with (0, or `x[L-1]` for the
replicate-padded downsample). Stride-1 causal convs and causal attention never read ahead, so they
need no mask. `P` is a traced scalar: one compile per bucket shape, not per length.

Consequence kept from the reference: in a batch, an item shorter than the longest is encoded as if
zero-padded to the longest one, so its last frame can differ from encoding it alone.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from qwen3tts_jax.codec.config import MimiEncoderConfig, Qwen3TTSTokenizerV2Config
from qwen3tts_jax.codec.decoder import LayerNorm, LayerScale
from qwen3tts_jax.codec.quantizer import residual_quantize
from qwen3tts_jax.nn.attention import attend
from qwen3tts_jax.nn.conv import Conv1d
from qwen3tts_jax.nn.linear import Linear
from qwen3tts_jax.nn.params import existing_param
from qwen3tts_jax.nn.rope import apply_rope, rope_tables
from qwen3tts_jax.typing import Array, Bool, Float, HostArray, Int, Params

__all__ = [
    "Qwen3TTSTokenizerV2Encoder",
    "encode",
    "encoder_stages",
    "num_frames",
    "bucket_samples",
]


def _ceil_div(a, b: int):
    return -(-a // b)


# --------------------------------------------------------------------------------------------
# Convolutions (torch layouts: weight (out, in/groups, k), via `nn.conv.Conv1d`)
# --------------------------------------------------------------------------------------------


class MimiConv1d(nn.Module):
    """`MimiConv1d` (causal): left pad `k_eff - stride`, right pad so the output has
    `ceil(L/stride)` frames; zeros, or edge values with `pad_mode="replicate"`.

    `valid` is the sequence length the reference would see at this layer (a traced scalar, `<=`
    the buffer length); returns the output and its valid length `ceil(valid/stride)`. Not
    `nn.conv.CausalConv1d`: that one pads for the buffer length, and the valid-length edge
    emulation has to sit between the masking and the padding.
    """

    features: int
    kernel_size: int
    stride: int = 1
    dilation: int = 1
    use_bias: bool = True
    pad_mode: str = "constant"
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "b t c"], valid: Int[Array, ""]) -> tuple[Float[Array, "b u o"], Int[Array, ""]]:
        k_eff = (self.kernel_size - 1) * self.dilation + 1
        left = k_eff - self.stride
        t = x.shape[1]
        right = _ceil_div(t, self.stride) * self.stride - t  # extra padding for the buffer length
        if self.pad_mode not in ("constant", "replicate"):
            raise ValueError(f"MimiConv1d: pad_mode {self.pad_mode!r} is not supported (constant, replicate)")
        if self.stride > 1:
            # What the reference at length `valid` pads its right edge with (see module docstring).
            beyond = (jnp.arange(t) >= valid)[None, :, None]  # 1 t 1
            if self.pad_mode == "replicate":
                last = jax.lax.dynamic_slice_in_dim(x, valid - 1, 1, axis=1)  # b 1 c
                x = jnp.where(beyond, last, x)
            else:
                x = jnp.where(beyond, jnp.zeros((), x.dtype), x)
        mode = "edge" if self.pad_mode == "replicate" else "constant"
        x = jnp.pad(x, ((0, 0), (left, right), (0, 0)), mode=mode)
        y = Conv1d(
            self.features,
            self.kernel_size,
            self.stride,
            self.dilation,
            use_bias=self.use_bias,
            dtype=x.dtype,
            param_dtype=self.param_dtype,
            name="conv",
        )(x)
        return y, _ceil_div(valid, self.stride)


class MimiResnetBlock(nn.Module):
    """`MimiResnetBlock`: `x + conv_1x1(ELU(conv_k(ELU(x))))` (block.1, block.3), identity or
    1x1-conv shortcut."""

    dim: int
    hidden: int
    kernel_size: int
    dilation: int
    use_conv_shortcut: bool = False
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "b t c"], valid: Int[Array, ""]) -> Float[Array, "b t c"]:
        h, _ = MimiConv1d(
            self.hidden, self.kernel_size, dilation=self.dilation, param_dtype=self.param_dtype, name="block_1"
        )(jax.nn.elu(x), valid)
        h, _ = MimiConv1d(self.dim, 1, param_dtype=self.param_dtype, name="block_3")(jax.nn.elu(h), valid)
        if self.use_conv_shortcut:
            x, _ = MimiConv1d(self.dim, 1, param_dtype=self.param_dtype, name="shortcut")(x, valid)
        return x + h


class SEANetEncoder(nn.Module):
    """`MimiEncoder`: conv, then per ratio (reversed `upsampling_ratios`) residual blocks, ELU and
    a strided conv doubling the channels; then ELU and the last conv to `hidden_size`.
    Submodule `layers_i` is the reference's `layers.i` (ELUs hold the indices between)."""

    cfg: MimiEncoderConfig
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "b n c"], valid: Int[Array, ""]) -> tuple[Float[Array, "b t d"], Int[Array, ""]]:
        cfg, i = self.cfg, 0
        conv = lambda *a, **k: MimiConv1d(*a, **k, param_dtype=self.param_dtype, name=f"layers_{i}")
        x, valid = conv(cfg.num_filters, cfg.kernel_size)(x, valid)
        i += 1
        scale = 1
        for ratio in reversed(cfg.upsampling_ratios):
            dim = scale * cfg.num_filters
            for j in range(cfg.num_residual_layers):
                x = MimiResnetBlock(
                    dim,
                    dim // cfg.compress,
                    cfg.residual_kernel_size,
                    cfg.dilation_growth_rate**j,
                    cfg.use_conv_shortcut,
                    self.param_dtype,
                    name=f"layers_{i}",
                )(x, valid)
                i += 1
            x = jax.nn.elu(x)
            i += 1
            x, valid = conv(dim * 2, ratio * 2, stride=ratio)(x, valid)
            i += 1
            scale *= 2
        x = jax.nn.elu(x)
        i += 1
        x, valid = conv(cfg.hidden_size, cfg.last_kernel_size)(x, valid)
        return x, valid


# --------------------------------------------------------------------------------------------
# Transformer
# --------------------------------------------------------------------------------------------


class MimiAttention(nn.Module):
    """`MimiAttention` (eager) / `MimiSdpaAttention`: q/k/v/o projections, RoPE (rotate-half), no
    q/k norm, scale head_dim^-0.5, softmax in fp32, under the caller's mask."""

    cfg: MimiEncoderConfig
    param_dtype: Any = jnp.float32
    matmul: str = "weight_stationary"  # `Policy.matmul`

    @nn.compact
    def __call__(
        self,
        x: Float[Array, "b t d"],
        cos: Float[Array, "b t x"],
        sin: Float[Array, "b t x"],
        mask: Bool[Array, "b t s"],
    ) -> Float[Array, "b t d"]:
        cfg = self.cfg
        b, t, d = x.shape
        dense = lambda n, name: Linear(n, cfg.attention_bias, x.dtype, self.param_dtype, self.matmul, name=name)
        q = dense(cfg.num_attention_heads * cfg.head_dim, "q_proj")(x).reshape(
            b, t, cfg.num_attention_heads, cfg.head_dim
        )
        k = dense(cfg.num_key_value_heads * cfg.head_dim, "k_proj")(x).reshape(
            b, t, cfg.num_key_value_heads, cfg.head_dim
        )
        v = dense(cfg.num_key_value_heads * cfg.head_dim, "v_proj")(x).reshape(
            b, t, cfg.num_key_value_heads, cfg.head_dim
        )
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = attend(q, k, v, mask, 1.0 / math.sqrt(cfg.head_dim))  # b t h x
        return dense(d, "o_proj")(out.reshape(b, t, cfg.num_attention_heads * cfg.head_dim))


class MimiMLP(nn.Module):
    """`MimiMLP`: `fc2(gelu_erf(fc1(x)))`, no biases."""

    cfg: MimiEncoderConfig
    param_dtype: Any = jnp.float32
    matmul: str = "weight_stationary"  # `Policy.matmul`

    @nn.compact
    def __call__(self, x: Float[Array, "b t d"]) -> Float[Array, "b t d"]:
        h = Linear(self.cfg.intermediate_size, False, x.dtype, self.param_dtype, self.matmul, name="fc1")(x)
        h = jax.nn.gelu(h, approximate=False)
        return Linear(x.shape[-1], False, x.dtype, self.param_dtype, self.matmul, name="fc2")(h)


class MimiTransformerLayer(nn.Module):
    """`MimiTransformerLayer`: `h += ls1 * attn(LN(h))`, `h += ls2 * mlp(LN(h))`."""

    cfg: MimiEncoderConfig
    param_dtype: Any = jnp.float32
    matmul: str = "weight_stationary"  # `Policy.matmul`

    @nn.compact
    def __call__(
        self,
        h: Float[Array, "b t d"],
        cos: Float[Array, "b t x"],
        sin: Float[Array, "b t x"],
        mask: Bool[Array, "b t s"],
    ) -> Float[Array, "b t d"]:
        cfg, pd = self.cfg, self.param_dtype
        attn = MimiAttention(cfg, pd, self.matmul, name="self_attn")
        a = attn(LayerNorm(cfg.norm_eps, pd, name="input_layernorm")(h), cos, sin, mask)
        h = h + LayerScale(cfg.layer_scale_initial_scale, pd, name="self_attn_layer_scale")(a)
        m = MimiMLP(cfg, pd, self.matmul, name="mlp")(LayerNorm(cfg.norm_eps, pd, name="post_attention_layernorm")(h))
        return h + LayerScale(cfg.layer_scale_initial_scale, pd, name="mlp_layer_scale")(m)


class MimiTransformer(nn.Module):
    """`MimiTransformerModel` as the encoder runs it: positions 0..t-1, full causal mask, no final
    norm. Layers unrolled over per-layer params `layers_i` (8 layers; the checkpoint's layout)."""

    cfg: MimiEncoderConfig
    param_dtype: Any = jnp.float32
    matmul: str = "weight_stationary"  # `Policy.matmul`

    @nn.compact
    def __call__(self, h: Float[Array, "b t d"]) -> Float[Array, "b t d"]:
        b, t, _ = h.shape
        positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        cos, sin = rope_tables(positions, self.cfg.head_dim, self.cfg.rope_theta, h.dtype)
        mask = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (b, t, t))
        for i in range(self.cfg.num_hidden_layers):
            h = MimiTransformerLayer(self.cfg, self.param_dtype, self.matmul, name=f"layers_{i}")(h, cos, sin, mask)
        return h


# --------------------------------------------------------------------------------------------
# Split residual vector quantizer (encode direction)
# --------------------------------------------------------------------------------------------


class Codebook(nn.Module):
    """`MimiEuclideanCodebook`'s saved buffers (`cluster_usage`, `embed_sum`; `initialized` is not loaded)."""

    size: int
    dim: int

    @nn.compact
    def __call__(self) -> tuple[Float[Array, "v e"], Float[Array, " v"]]:
        usage = existing_param(self, "cluster_usage", nn.initializers.ones, (self.size,), jnp.float32)
        embed_sum = existing_param(self, "embed_sum", nn.initializers.normal(1.0), (self.size, self.dim), jnp.float32)
        return embed_sum, usage


class _VQLayer(nn.Module):
    """`MimiVectorQuantization`: holds `codebook`."""

    size: int
    dim: int

    @nn.compact
    def __call__(self):
        return Codebook(self.size, self.dim, name="codebook")()


class RVQEncoder(nn.Module):
    """`MimiResidualVectorQuantizer.encode`: `input_proj` (1x1 conv, no bias), then for each of the
    first `num_used` layers: nearest code of the residual, subtract its centroid.

    All `num_layers` codebooks and `output_proj` are declared (they are in the checkpoint) even
    though encoding uses only the first `num_used` and never `output_proj`."""

    cfg: MimiEncoderConfig
    num_layers: int
    num_used: int
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: Float[Array, "b t d"]) -> tuple[Int[Array, "b t q"], Float[Array, "b t e"]]:
        cfg = self.cfg
        vq = cfg.vector_quantization_hidden_dimension
        if cfg.uses_quantizer_projections:
            z = Conv1d(vq, 1, use_bias=False, dtype=h.dtype, param_dtype=self.param_dtype, name="input_proj")(h)
            # Declared for checkpoint coverage only (XLA drops the unused result); decoding is the
            # codec decoder's job.
            Conv1d(cfg.hidden_size, 1, use_bias=False, dtype=h.dtype, param_dtype=self.param_dtype, name="output_proj")(
                z
            )
        else:
            z = h
        books = [_VQLayer(cfg.codebook_size, cfg.codebook_dim, name=f"layers_{j}")() for j in range(self.num_layers)]
        used = books[: self.num_used]
        codes = residual_quantize(z, [s for s, _ in used], [u for _, u in used])  # q b t
        return jnp.moveaxis(codes, 0, -1), z


class SplitRVQEncoder(nn.Module):
    """`MimiSplitResidualVectorQuantizer.encode`: the semantic RVQ and the acoustic RVQ each
    project the SAME latent with their own `input_proj` (the acoustic one does not see the
    semantic residual); codes = semantic codes then acoustic codes."""

    cfg: MimiEncoderConfig
    num_codes: int  # codes kept per frame (`encoder_valid_num_quantizers`)
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: Float[Array, "b t d"]) -> dict[str, Array]:
        cfg = self.cfg
        n_sem = cfg.num_semantic_quantizers
        sem_codes, sem_z = RVQEncoder(
            cfg, n_sem, min(n_sem, self.num_codes), self.param_dtype, name="semantic_residual_vector_quantizer"
        )(h)
        n_ac_used = max(self.num_codes - n_sem, 0)
        ac_codes, ac_z = RVQEncoder(
            cfg,
            cfg.num_acoustic_quantizers,
            max(n_ac_used, 1),
            self.param_dtype,
            name="acoustic_residual_vector_quantizer",
        )(h)
        codes = jnp.concatenate([sem_codes, ac_codes[..., :n_ac_used]], axis=-1)
        return {"codes": codes, "semantic_latent": sem_z, "acoustic_latent": ac_z}


# --------------------------------------------------------------------------------------------
# The encoder
# --------------------------------------------------------------------------------------------


class Qwen3TTSTokenizerV2Encoder(nn.Module):
    """`Qwen3TTSTokenizerV2Encoder` (`MimiModel` encode path): SEANet → transformer → downsample →
    split RVQ. Param tree = the checkpoint's `encoder.*` keys (`encoder`, `encoder_transformer`,
    `downsample`, `quantizer`).

    `__call__(wav, boundary)` returns every stage (for parity tests) and the codes for all frames
    of the buffer; `boundary` is the length the reference sees (its batch's padded length).
    """

    cfg: MimiEncoderConfig
    num_codes: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    matmul: str = "weight_stationary"  # `Policy.matmul`

    @nn.compact
    def __call__(self, wav: Float[HostArray, "b n"], boundary: Int[Array, ""]) -> dict[str, Array]:
        cfg = self.cfg
        x = wav.astype(self.dtype)[..., None]  # b n 1 (channels last)
        seanet, valid = SEANetEncoder(cfg, self.param_dtype, name="encoder")(x, boundary)  # b t25 d
        h = MimiTransformer(cfg, self.param_dtype, self.matmul, name="encoder_transformer")(seanet)
        down = h
        if cfg.has_downsample:
            down, valid = MimiConv1d(
                cfg.hidden_size,
                cfg.downsample_kernel_size,
                stride=cfg.downsample_stride,
                use_bias=False,
                pad_mode="replicate",
                param_dtype=self.param_dtype,
                name="downsample",
            )(h, valid)
        out = SplitRVQEncoder(cfg, self.num_codes, self.param_dtype, name="quantizer")(down)
        return {"seanet": seanet, "transformer": h, "downsample": down, **out}


def num_frames(num_samples, frame_size: int):
    """Codes per item: `ceil(samples / 1920)` (the reference's `-(-mask.sum() // rate)`)."""
    return _ceil_div(num_samples, frame_size)


# Buffer lengths in frames: 16·{1, 1.5} · 2^k, so padding wastes < 50% and there are O(log n) compiles.
def bucket_samples(num_samples: int, frame_size: int, min_frames: int = 16) -> int:
    """The buffer length (samples) `encode` is compiled for when given `num_samples`."""
    frames = max(int(num_frames(num_samples, frame_size)), 1)
    size = min_frames
    while size < frames:
        size = size * 3 // 2 if (size & (size - 1)) == 0 else size * 4 // 3
    return size * frame_size


def _module(cfg: Qwen3TTSTokenizerV2Config, dtype, matmul: str = "weight_stationary") -> Qwen3TTSTokenizerV2Encoder:
    return Qwen3TTSTokenizerV2Encoder(cfg.encoder, cfg.encoder_valid_num_quantizers, dtype=dtype, matmul=matmul)


@functools.partial(jax.jit, static_argnames=("cfg", "dtype"))
def encoder_stages(
    params: Params,
    cfg: Qwen3TTSTokenizerV2Config,
    wav: Float[HostArray, "b n"],
    boundary: Int[Array, ""],
    dtype: Any = jnp.float32,
) -> dict[str, Array]:
    """All intermediate stages (`seanet`, `transformer`, `downsample`, `semantic_latent`,
    `acoustic_latent`, `codes`) of the buffer `wav`, as the reference computes them at length
    `boundary`. `params` is the `encoder` tree of `load_codec_params`."""
    return _module(cfg, dtype).apply({"params": params}, wav, boundary)


@functools.partial(jax.jit, static_argnames=("cfg", "dtype", "matmul"))
def encode(
    params: Params,
    cfg: Qwen3TTSTokenizerV2Config,
    wav: Float[HostArray, "b n"],
    lengths: Int[HostArray, " b"],
    dtype: Any = jnp.float32,
    matmul: str = "weight_stationary",
) -> Int[Array, "b t q"]:
    """`Qwen3TTSTokenizerV2Model.encode` of a right-padded batch → codes `(b, ceil(n/1920), 16)`.

    `lengths` are the valid samples per item; samples beyond are ignored (treated as zeros, as
    the feature extractor pads). Item i keeps `ceil(lengths[i]/1920)` frames; later frames are
    -1 (the padding value the decoder expects). The batch is encoded as the reference encodes it
    padded to `max(lengths)`; `n` may be any larger buffer length (see the module docstring).
    """
    b, n = wav.shape
    lengths = jnp.asarray(lengths, jnp.int32)
    wav = jnp.where(jnp.arange(n)[None, :] < lengths[:, None], wav, jnp.zeros((), wav.dtype))
    boundary = jnp.max(lengths)
    codes = _module(cfg, dtype, matmul).apply({"params": params}, wav, boundary)["codes"]  # b t q
    t = codes.shape[1]
    keep = jnp.arange(t)[None, :] < num_frames(lengths, cfg.encoder.frame_size)[:, None]  # b t
    return jnp.where(keep[..., None], codes, -1)
