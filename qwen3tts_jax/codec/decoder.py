"""The 12 Hz tokenizer's decoder: codes (b, 16, t) → waveform (b, t·1920).

Mirrors `Qwen3TTSTokenizerV2Decoder` (modeling_qwen3_tts_tokenizer_v2.py) and, for the
batch/length handling, `Qwen3TTSTokenizerV2Model.decode` with its `chunked_decode`:

    quantizer.decode → pre_conv (causal k3) → pre_transformer (sliding window 72, layer scale)
    → 2 × [causal transposed conv ×2, ConvNeXt] → causal conv k7 → 4 × [SnakeBeta, causal
    transposed conv ×r, 3 residual units (dilation 1, 3, 9)] → SnakeBeta → causal conv k7 → clamp

Every stage is causal, so the same modules run one-shot (`state=None`) or streaming: given the
previous frames' conv input tails and attention keys/values (`codec/streaming.py` owns that
state), a call on the next k frames produces exactly the next k·1920 samples. Activations are
channels-last `(b, t, c)` (see `nn/conv.py` for the measured reason).

The module-tree names are the checkpoint's (`pre_transformer/layers_3/self_attn/q_proj/weight`,
`upsample_0_1/dwconv/conv/weight`, `decoder_2/block_3/conv1/conv/weight`): params from
`load_codec_params(...)["decoder"]` apply directly.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from qwen3tts_jax.codec.config import DecoderConfig
from qwen3tts_jax.codec.quantizer import SplitResidualVectorQuantizer
from qwen3tts_jax.config import Policy
from qwen3tts_jax.nn.activations import SnakeBeta
from qwen3tts_jax.nn.attention import Attention, KVCache
from qwen3tts_jax.nn.conv import CausalConv1d, CausalConvTranspose1d, to_hio, transposed_to_hio
from qwen3tts_jax.nn.linear import Linear
from qwen3tts_jax.nn.mlp import SwiGLU
from qwen3tts_jax.nn.norms import RMSNorm
from qwen3tts_jax.nn.params import existing_param
from qwen3tts_jax.nn.rope import rope_tables
from qwen3tts_jax.nn.shared_layer import apply_layer
from qwen3tts_jax.typing import Array, Bool, Float, Int

__all__ = [
    "CHUNK_SIZE",
    "LEFT_CONTEXT",
    "Qwen3TTSTokenizerV2Decoder",
    "chunked_decode",
    "decode",
    "decode_codes",
    "prepare_params",
]

CHUNK_SIZE = 300  # `chunked_decode(chunk_size=300)`: frames per independent forward
LEFT_CONTEXT = 25  # `chunked_decode(left_context_size=25)`

State = dict  # a nested dict of arrays; see `codec/streaming.py: init_state`


def _conv_step(conv: nn.Module, x, history):
    """Run a causal conv one-shot (history None) or streaming; return (y, new history)."""
    if history is None:
        return conv(x), None
    y = conv(x, history)
    ctx = history.shape[1]
    return y, jnp.concatenate([history.astype(x.dtype), x], axis=1)[:, x.shape[1] + history.shape[1] - ctx :]


class LayerNorm(nn.Module):
    """`torch.nn.LayerNorm(dim, eps)` with params `weight`, `bias` (statistics in fp32)."""

    eps: float = 1e-5
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "... c"]) -> Float[Array, "... c"]:
        c = x.shape[-1]
        weight = existing_param(self, "weight", nn.initializers.ones, (c,), self.param_dtype)
        bias = existing_param(self, "bias", nn.initializers.zeros, (c,), self.param_dtype)
        xf = x.astype(jnp.float32)
        mean = jnp.mean(xf, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
        y = (xf - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * weight.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)


class LayerScale(nn.Module):
    """`Qwen3TTSTokenizerV2DecoderLayerScale` (also Mimi's): `scale * x`, param `scale (d,)`."""

    init_scale: float = 0.01
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Float[Array, "... d"]) -> Float[Array, "... d"]:
        scale = existing_param(self, "scale", nn.initializers.constant(self.init_scale), (x.shape[-1],), self.param_dtype)
        return scale.astype(x.dtype) * x


class ConvNeXtBlock(nn.Module):
    """`Qwen3TTSTokenizerV2ConvNeXtBlock`: x + gamma · pwconv2(GELU(pwconv1(LN(dwconv(x)))))."""

    dim: int
    policy: Policy = Policy()
    kernel_layout: str = "OIH"

    @nn.compact
    def __call__(self, x: Float[Array, "b t c"], state: State | None = None) -> tuple[Float[Array, "b t c"], State | None]:
        p = self.policy
        dw = CausalConv1d(
            self.dim, 7, groups=self.dim, dtype=p.dtype, param_dtype=p.param_dtype, kernel_layout=self.kernel_layout, name="dwconv"
        )
        h, dw_state = _conv_step(dw, x, None if state is None else state["dwconv"])
        h = LayerNorm(1e-6, p.param_dtype, name="norm")(h)
        h = Linear(4 * self.dim, True, p.dtype, p.param_dtype, p.matmul, name="pwconv1")(h)
        h = jax.nn.gelu(h, approximate=False)  # torch nn.GELU(): exact erf form
        h = Linear(self.dim, True, p.dtype, p.param_dtype, p.matmul, name="pwconv2")(h)
        gamma = existing_param(self, "gamma", nn.initializers.constant(1e-6), (self.dim,), p.param_dtype)
        return x + gamma.astype(h.dtype) * h, None if state is None else {"dwconv": dw_state}


class ResidualUnit(nn.Module):
    """`Qwen3TTSTokenizerV2DecoderDecoderResidualUnit`: x + conv2(act2(conv1_dil(act1(x))))."""

    dim: int
    dilation: int
    policy: Policy = Policy()
    kernel_layout: str = "OIH"

    @nn.compact
    def __call__(self, x: Float[Array, "b n c"], state: State | None = None) -> tuple[Float[Array, "b n c"], State | None]:
        p, kl = self.policy, self.kernel_layout
        h = SnakeBeta(p.param_dtype, name="act1")(x)
        conv1 = CausalConv1d(
            self.dim, 7, dilation=self.dilation, dtype=p.dtype, param_dtype=p.param_dtype, kernel_layout=kl, name="conv1"
        )
        h, s1 = _conv_step(conv1, h, None if state is None else state["conv1"])
        h = SnakeBeta(p.param_dtype, name="act2")(h)
        conv2 = CausalConv1d(self.dim, 1, dtype=p.dtype, param_dtype=p.param_dtype, kernel_layout=kl, name="conv2")
        h = conv2(h)  # k1: stateless
        return h + x, None if state is None else {"conv1": s1}


class DecoderBlock(nn.Module):
    """`Qwen3TTSTokenizerV2DecoderDecoderBlock`: SnakeBeta, causal transposed conv (2r, r), then
    residual units with dilations 1, 3, 9 (`block_0..block_4`)."""

    out_dim: int
    rate: int
    policy: Policy = Policy()
    kernel_layout: str = "OIH"

    def setup(self):
        p, kl = self.policy, self.kernel_layout
        self.block = [
            SnakeBeta(p.param_dtype),
            CausalConvTranspose1d(self.out_dim, 2 * self.rate, self.rate, p.dtype, p.param_dtype, kl),
            *(ResidualUnit(self.out_dim, d, p, kl) for d in (1, 3, 9)),
        ]

    def __call__(self, x: Float[Array, "b n c"], state: State | None = None) -> tuple[Float[Array, "b m o"], State | None]:
        h = self.block[0](x)
        h, s1 = _conv_step(self.block[1], h, None if state is None else state["block_1"])
        new = {"block_1": s1}
        for i in (2, 3, 4):
            h, new[f"block_{i}"] = self.block[i](h, None if state is None else state[f"block_{i}"])
        return h, None if state is None else new


class TransformerLayer(nn.Module):
    """`Qwen3TTSTokenizerV2DecoderTransformerLayer`: pre-RMSNorm attention and SwiGLU, each
    residual branch scaled by a learned LayerScale vector."""

    cfg: DecoderConfig
    policy: Policy = Policy()

    @nn.compact
    def __call__(self, h, cos, sin, mask, kv: KVCache, write_index) -> tuple[Float[Array, "b t d"], KVCache]:
        cfg, p = self.cfg, self.policy
        attn = Attention(
            cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, qk_norm=False,
            use_bias=cfg.attention_bias, dtype=p.dtype, param_dtype=p.param_dtype, matmul=p.matmul,
            few_query=p.few_query_attention, name="self_attn",
        )
        a, kv = attn(RMSNorm(cfg.rms_norm_eps, p.param_dtype, name="input_layernorm")(h), cos, sin, mask, kv, write_index)
        h = h + LayerScale(cfg.layer_scale_initial_scale, p.param_dtype, name="self_attn_layer_scale")(a)
        m = SwiGLU(cfg.intermediate_size, p.dtype, p.param_dtype, p.matmul, name="mlp")(
            RMSNorm(cfg.rms_norm_eps, p.param_dtype, name="post_attention_layernorm")(h)
        )
        h = h + LayerScale(cfg.layer_scale_initial_scale, p.param_dtype, name="mlp_layer_scale")(m)
        return h, kv


def window_mask(query_pos: Int[Array, "t"], key_pos: Int[Array, "s"], window: int) -> Bool[Array, "t s"]:
    """Sliding-window causal mask: query q sees keys (q - window, q] at non-negative positions."""
    q, k = query_pos[:, None], key_pos[None, :]
    return (k >= 0) & (k <= q) & (k > q - window)


class PreTransformer(nn.Module):
    """`Qwen3TTSTokenizerV2DecoderTransformerModel`: input_proj, layers, norm, output_proj.

    One-shot (`state=None`): positions 0..t-1 and a sliding-window mask over the t frames.
    Streaming: `state = {"pos": first position, "layers_i": KVCache of the previous window-1
    frames}`; the new frames' keys are appended, attention sees (q - window, q], and the last
    window-1 keys/values are carried on (a shifting window of exactly what the mask can reach).
    """

    cfg: DecoderConfig
    policy: Policy = Policy()

    def setup(self):
        cfg, p = self.cfg, self.policy
        self.input_proj = Linear(cfg.hidden_size, True, p.dtype, p.param_dtype, p.matmul)
        self.layers = [TransformerLayer(cfg, p) for _ in range(cfg.num_hidden_layers)]
        self.norm = RMSNorm(cfg.rms_norm_eps, p.param_dtype)
        self.output_proj = Linear(cfg.latent_dim, True, p.dtype, p.param_dtype, p.matmul)

    def __call__(self, x: Float[Array, "b t l"], state: State | None = None) -> tuple[Float[Array, "b t l"], State | None]:
        cfg, p = self.cfg, self.policy
        b, t, _ = x.shape
        h = self.input_proj(x.astype(p.dtype))
        if state is None:
            pos0, past = jnp.zeros((), jnp.int32), 0
        else:
            pos0, past = state["pos"], cfg.sliding_window - 1
        query_pos = pos0 + jnp.arange(t, dtype=jnp.int32)
        key_pos = pos0 - past + jnp.arange(past + t, dtype=jnp.int32)
        mask = jnp.broadcast_to(window_mask(query_pos, key_pos, cfg.sliding_window), (b, t, past + t))
        cos, sin = rope_tables(jnp.broadcast_to(query_pos, (b, t)), cfg.head_dim, cfg.rope_theta, p.dtype)
        new_state = None if state is None else {"pos": pos0 + t}
        for i, layer in enumerate(self.layers):
            if state is None:
                kv = KVCache.zeros(b, t, cfg.num_key_value_heads, cfg.head_dim, p.dtype)
            else:
                old = state[f"layers_{i}"]
                fresh = jnp.zeros((b, t, cfg.num_key_value_heads, cfg.head_dim), old.k.dtype)
                kv = KVCache(jnp.concatenate([old.k, fresh], 1), jnp.concatenate([old.v, fresh], 1))
            h, kv = apply_layer(self, layer, h, cos, sin, mask, kv, jnp.asarray(past, jnp.int32))
            if state is not None:
                new_state[f"layers_{i}"] = KVCache(kv.k[:, t:], kv.v[:, t:])
        return self.output_proj(self.norm(h)), new_state


class Qwen3TTSTokenizerV2Decoder(nn.Module):
    """`Qwen3TTSTokenizerV2Decoder.forward`: codes (b, q, t) → waveform (b, t·total_upsample),
    clamped to [-1, 1]. With `state` (see `codec/streaming.py`) it continues a stream and also
    returns the new state; with `stages=True` it also returns the intermediate activations
    (channels-last) for parity tests.

    `kernel_layout="HIO"` takes params converted once by `prepare_params` (conv kernels in the
    layout XLA:CPU wants; see `nn/conv.py`), "OIH" the checkpoint's tensors as loaded."""

    cfg: DecoderConfig
    policy: Policy = Policy()
    kernel_layout: str = "OIH"

    def setup(self):
        cfg, p, kl = self.cfg, self.policy, self.kernel_layout
        self.quantizer = SplitResidualVectorQuantizer(cfg, p.dtype)
        self.pre_conv = CausalConv1d(cfg.latent_dim, 3, dtype=p.dtype, param_dtype=p.param_dtype, kernel_layout=kl)
        self.pre_transformer = PreTransformer(cfg, p)
        self.upsample = [
            [
                CausalConvTranspose1d(cfg.latent_dim, f, f, p.dtype, p.param_dtype, kl),
                ConvNeXtBlock(cfg.latent_dim, p, kl),
            ]
            for f in cfg.upsampling_ratios
        ]
        n = len(cfg.upsample_rates)
        self.decoder = [
            CausalConv1d(cfg.decoder_dim, 7, dtype=p.dtype, param_dtype=p.param_dtype, kernel_layout=kl),
            *(DecoderBlock(cfg.block_dims(i)[1], r, p, kl) for i, r in enumerate(cfg.upsample_rates)),
            SnakeBeta(p.param_dtype),
            CausalConv1d(1, 7, dtype=p.dtype, param_dtype=p.param_dtype, kernel_layout=kl),
        ]
        assert len(self.decoder) == n + 3

    def __call__(self, codes: Int[Array, "b q t"], state: State | None = None, stages: bool = False):
        cfg = self.cfg
        if codes.shape[1] != cfg.num_quantizers:
            raise ValueError(f"Qwen3TTSTokenizerV2Decoder: expected {cfg.num_quantizers} codebooks, got codes of shape {codes.shape}")
        get = (lambda name: None) if state is None else (lambda name: state[name])  # noqa: E731
        new: dict = {}
        seen: dict = {}
        h = self.quantizer(codes)  # b t codebook_dim
        seen["quantizer"] = h
        h, new["pre_conv"] = _conv_step(self.pre_conv, h, get("pre_conv"))
        seen["pre_conv"] = h
        h, new["pre_transformer"] = self.pre_transformer(h, get("pre_transformer"))
        seen["pre_transformer"] = h
        for i, (trans, convnext) in enumerate(self.upsample):
            h, new[f"upsample_{i}_0"] = _conv_step(trans, h, get(f"upsample_{i}_0"))
            h, new[f"upsample_{i}_1"] = convnext(h, get(f"upsample_{i}_1"))
            seen[f"upsample_{i}"] = h
        n = len(cfg.upsample_rates)
        w, new["decoder_0"] = _conv_step(self.decoder[0], h, get("decoder_0"))
        for i in range(1, n + 1):
            w, new[f"decoder_{i}"] = self.decoder[i](w, get(f"decoder_{i}"))
            seen[f"decoder_{i}"] = w
        w = self.decoder[n + 1](w)
        w, new[f"decoder_{n + 2}"] = _conv_step(self.decoder[n + 2], w, get(f"decoder_{n + 2}"))
        wav = jnp.clip(w[..., 0], -1.0, 1.0)  # b n
        out = (wav,) if state is None else (wav, new)
        if stages:
            out = (*out, seen)
        return out[0] if len(out) == 1 else out


# --------------------------------------------------------------------------------------------
# Jitted entry points
# --------------------------------------------------------------------------------------------


def prepare_params(params: dict, cfg: DecoderConfig) -> dict:
    """Decoder params with every conv kernel in "HIO" layout (transposed convs in polyphase
    form), for `Qwen3TTSTokenizerV2Decoder(kernel_layout="HIO")`. Same tree, same names; only
    the conv `weight` leaves change shape. Pure and jit-able; do it once per loaded model."""
    out = jax.tree.map(lambda a: a, params)  # a fresh dict tree (leaves shared)

    def conv(node: dict) -> None:
        node["conv"] = dict(node["conv"], weight=to_hio(node["conv"]["weight"]))

    def transposed(node: dict, stride: int) -> None:
        node["conv"] = dict(node["conv"], weight=transposed_to_hio(node["conv"]["weight"], stride))

    conv(out["pre_conv"])
    for i, f in enumerate(cfg.upsampling_ratios):
        transposed(out[f"upsample_{i}_0"], f)
        conv(out[f"upsample_{i}_1"]["dwconv"])
    conv(out["decoder_0"])
    for i, rate in enumerate(cfg.upsample_rates):
        block = out[f"decoder_{i + 1}"]
        transposed(block["block_1"], rate)
        for u in (2, 3, 4):
            conv(block[f"block_{u}"]["conv1"])
            conv(block[f"block_{u}"]["conv2"])
    conv(out[f"decoder_{len(cfg.upsample_rates) + 2}"])
    return out


@functools.partial(jax.jit, static_argnames=("cfg", "policy", "prepared"))
def decode_codes(
    params: dict, codes: Int[Array, "b q t"], cfg: DecoderConfig, policy: Policy = Policy(), prepared: bool = False
) -> Float[Array, "b n"]:
    """One forward of the decoder (no chunking): codes (b, 16, t) → waveform (b, t·1920).

    `params` is `load_codec_params(...)["decoder"]` (or `prepare_params` of it with
    `prepared=True`, which skips re-laying the kernels out on every call). Compiles once per
    (b, t); see `chunked_decode` for arbitrary lengths at a bounded number of shapes."""
    if not prepared:
        params = prepare_params(params, cfg)
    return Qwen3TTSTokenizerV2Decoder(cfg, policy, "HIO").apply({"params": params}, codes)


_prepare_jit = jax.jit(prepare_params, static_argnames=("cfg",))


def _bucket(n: int, cap: int) -> int:
    """The padded frame count for a chunk of n frames: the next power of two ≥ 16, at most cap."""
    return min(max(16, 1 << (n - 1).bit_length()), max(cap, n))


def chunked_decode(
    params: dict,
    codes: Int[Array, "b q t"],
    cfg: DecoderConfig,
    policy: Policy = Policy(),
    chunk_size: int = CHUNK_SIZE,
    left_context_size: int = LEFT_CONTEXT,
) -> Float[Array, "b n"]:
    """`Qwen3TTSTokenizerV2Decoder.chunked_decode` (`params` as loaded): independent forwards over 300-frame chunks,
    each with up to 25 frames of left context whose samples are dropped (positions and conv
    state restart in every chunk, exactly as the reference; a single forward differs after
    frame 300).

    Each chunk is padded at the END with code-0 frames to a bucketed length (powers of two from
    16, capped at chunk_size + left_context_size), so all lengths share at most ~6 compiled
    shapes. Exact, not approximate: every stage is causal (convs left-padded, transposed convs
    keep their first t·r samples, attention masks the future), so frames appended after a chunk
    cannot change its first samples — `tests/test_codec_decoder.py` checks this against the
    reference at lengths that are not bucket sizes."""
    codes = jnp.asarray(codes)
    b, _, t = codes.shape
    up = cfg.total_upsample
    if t > chunk_size:  # several forwards: lay the kernels out once
        params, prepared = _prepare_jit(params, cfg), True
    else:
        prepared = False
    cap = chunk_size + left_context_size
    wavs = []
    start = 0
    while start < t:
        end = min(start + chunk_size, t)
        ctx = left_context_size if start - left_context_size > 0 else start
        chunk = codes[..., start - ctx : end]
        n = chunk.shape[-1]
        padded = _bucket(n, cap)
        if padded > n:
            chunk = jnp.pad(chunk, ((0, 0), (0, 0), (0, padded - n)))
        wav = decode_codes(params, chunk, cfg, policy, prepared)
        wavs.append(wav[:, ctx * up : n * up])
        start = end
    if not wavs:
        return jnp.zeros((b, 0), policy.dtype)
    return jnp.concatenate(wavs, axis=-1)


def decode(params: dict, audio_codes, cfg: DecoderConfig, policy: Policy = Policy()) -> list[np.ndarray]:
    """`Qwen3TTSTokenizerV2Model.decode`: `audio_codes (b, t, q)` right-padded with -1 →
    one float32 waveform per item, `(codebook-0 codes > -1 count) × 1920` samples long.

    Padding frames are clamped to code 0 and decoded with the batch, then cut away per item (the
    decoder is causal, so they never touch the kept samples)."""
    codes = np.asarray(audio_codes)
    if codes.ndim != 3 or codes.shape[-1] != cfg.num_quantizers:
        raise ValueError(
            f"decode: audio_codes must be (batch, frames, {cfg.num_quantizers}), got shape {codes.shape}"
        )
    lengths = (codes[..., 0] > -1).sum(1) * cfg.total_upsample
    codes = np.clip(codes, 0, None).astype(np.int32).transpose(0, 2, 1)  # b q t
    if codes.size and codes.max() >= cfg.codebook_size:
        raise ValueError(f"decode: code {int(codes.max())} out of range for codebook_size={cfg.codebook_size}")
    wav = np.asarray(chunked_decode(params, codes, cfg, policy), dtype=np.float32)
    return [wav[i, : int(n)] for i, n in enumerate(lengths)]
