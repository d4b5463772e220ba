"""The 12 Hz tokenizer's decoder: codes (b, 16, t) → waveform (b, t·1920).

Mirrors `Qwen3TTSTokenizerV2Decoder` (modeling_qwen3_tts_tokenizer_v2.py) and, for the
batch/length handling, `Qwen3TTSTokenizerV2Model.decode` with its `chunked_decode`:

    quantizer.decode → pre_conv (causal k3) → pre_transformer (sliding window 72, layer scale)
    → 2 × [causal transposed conv ×2, ConvNeXt] → causal conv k7 → 4 × [SnakeBeta, causal
    transposed conv ×r, 3 residual units (dilation 1, 3, 9)] → SnakeBeta → causal conv k7 → clamp

Every stage is causal, and the modules always run as a stream: given each row's previous conv
input tails and attention keys/values (a `DecoderState`, `codec/state.py`; the modules produce
it, `init_state` reads its shapes from them), a call on the next k frames produces exactly the
next k·1920 samples; `state=None` is the zero state, i.e. the one-shot forward. The jitted
`stream_step` is the one step every decode path runs (`chunked_decode`, `decode` through
`codec/slots.py`, `codec/streaming.py`). Activations are channels-last `(b, t, c)` (see
`nn/conv.py` for the measured reason).

The module-tree names are the checkpoint's (`pre_transformer/layers_3/self_attn/q_proj/weight`,
`upsample_0_1/dwconv/conv/weight`, `decoder_2/block_3/conv1/conv/weight`): params from
`load_codec_params(...)["decoder"]` apply directly.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from qwen3tts_jax.codec.config import DecoderConfig
from qwen3tts_jax.codec.pieces import CALL_OVERHEAD, MAX_PIECE, padded_length, runs, split
from qwen3tts_jax.codec.quantizer import SplitResidualVectorQuantizer
from qwen3tts_jax.codec.state import DecoderState
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
    "DecoderState",
    "Qwen3TTSTokenizerV2Decoder",
    "chunked_decode",
    "decode",
    "decode_codes",
    "init_state",
    "prepare_params",
    "stream_program",
    "stream_step",
]

CHUNK_SIZE = 300  # `chunked_decode(chunk_size=300)`: frames per independent forward
LEFT_CONTEXT = 25  # `chunked_decode(left_context_size=25)`

History = Mapping[str, Float[Array, "b _h _c"]]  # a module's conv histories, keyed by path below it


def _conv_step(
    conv: nn.Module, x: Float[Array, "b t c"], history: History | None, name: str, new: dict
) -> Float[Array, "b t2 o"]:
    """Run causal conv `name` continuing its history (the previous `conv.context` input frames;
    zeros when `history` is None, which is exactly the one-shot forward's left padding) and
    record its new history in `new` (none for a conv without context: k1, k = stride)."""
    b, t, c = x.shape
    ctx = conv.context
    past = jnp.zeros((b, ctx, c), x.dtype) if history is None or ctx == 0 else history[name].astype(x.dtype)
    y = conv(x, past)
    if ctx:
        new[name] = jnp.concatenate([past, x], axis=1)[:, t:]
    return y


def _below(history: History | None, name: str) -> History | None:
    """The entries of child module `name`, keyed relative to it."""
    if history is None:
        return None
    p = name + "/"
    return {k[len(p) :]: v for k, v in history.items() if k.startswith(p)}


def _child(name: str, sub: History, new: dict) -> None:
    """Record a child module's new histories under its name."""
    new.update({f"{name}/{k}": v for k, v in sub.items()})


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
        scale = existing_param(
            self, "scale", nn.initializers.constant(self.init_scale), (x.shape[-1],), self.param_dtype
        )
        return scale.astype(x.dtype) * x


class ConvNeXtBlock(nn.Module):
    """`Qwen3TTSTokenizerV2ConvNeXtBlock`: x + gamma · pwconv2(GELU(pwconv1(LN(dwconv(x)))))."""

    dim: int
    policy: Policy = Policy()
    kernel_layout: str = "OIH"

    @nn.compact
    def __call__(
        self, x: Float[Array, "b t c"], history: History | None = None
    ) -> tuple[Float[Array, "b t c"], History]:
        p = self.policy
        dw = CausalConv1d(
            self.dim,
            7,
            groups=self.dim,
            dtype=p.dtype,
            param_dtype=p.param_dtype,
            kernel_layout=self.kernel_layout,
            name="dwconv",
        )
        new: dict = {}
        h = _conv_step(dw, x, history, "dwconv", new)
        h = LayerNorm(1e-6, p.param_dtype, name="norm")(h)
        h = Linear(4 * self.dim, True, p.dtype, p.param_dtype, p.matmul, name="pwconv1")(h)
        h = jax.nn.gelu(h, approximate=False)  # torch nn.GELU(): exact erf form
        h = Linear(self.dim, True, p.dtype, p.param_dtype, p.matmul, name="pwconv2")(h)
        gamma = existing_param(self, "gamma", nn.initializers.constant(1e-6), (self.dim,), p.param_dtype)
        return x + gamma.astype(h.dtype) * h, new


class ResidualUnit(nn.Module):
    """`Qwen3TTSTokenizerV2DecoderDecoderResidualUnit`: x + conv2(act2(conv1_dil(act1(x))))."""

    dim: int
    dilation: int
    policy: Policy = Policy()
    kernel_layout: str = "OIH"

    @nn.compact
    def __call__(
        self, x: Float[Array, "b n c"], history: History | None = None
    ) -> tuple[Float[Array, "b n c"], History]:
        p, kl = self.policy, self.kernel_layout
        new: dict = {}
        h = SnakeBeta(p.param_dtype, p.snake_sine, name="act1")(x)
        conv1 = CausalConv1d(
            self.dim,
            7,
            dilation=self.dilation,
            dtype=p.dtype,
            param_dtype=p.param_dtype,
            kernel_layout=kl,
            name="conv1",
        )
        h = _conv_step(conv1, h, history, "conv1", new)
        h = SnakeBeta(p.param_dtype, p.snake_sine, name="act2")(h)
        conv2 = CausalConv1d(self.dim, 1, dtype=p.dtype, param_dtype=p.param_dtype, kernel_layout=kl, name="conv2")
        h = _conv_step(conv2, h, history, "conv2", new)  # k1: no context, no history
        return h + x, new


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
            SnakeBeta(p.param_dtype, p.snake_sine),
            CausalConvTranspose1d(self.out_dim, 2 * self.rate, self.rate, p.dtype, p.param_dtype, kl),
            *(ResidualUnit(self.out_dim, d, p, kl) for d in (1, 3, 9)),
        ]

    def __call__(
        self, x: Float[Array, "b n c"], history: History | None = None
    ) -> tuple[Float[Array, "b m o"], History]:
        new: dict = {}
        h = self.block[0](x)
        h = _conv_step(self.block[1], h, history, "block_1", new)
        for i in (2, 3, 4):
            h, sub = self.block[i](h, _below(history, f"block_{i}"))
            _child(f"block_{i}", sub, new)
        return h, new


class TransformerLayer(nn.Module):
    """`Qwen3TTSTokenizerV2DecoderTransformerLayer`: pre-RMSNorm attention and SwiGLU, each
    residual branch scaled by a learned LayerScale vector."""

    cfg: DecoderConfig
    policy: Policy = Policy()

    @nn.compact
    def __call__(self, h, cos, sin, mask, kv: KVCache, write_index) -> tuple[Float[Array, "b t d"], KVCache]:
        cfg, p = self.cfg, self.policy
        attn = Attention(
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
            qk_norm=False,
            use_bias=cfg.attention_bias,
            dtype=p.dtype,
            param_dtype=p.param_dtype,
            matmul=p.matmul,
            few_query=p.few_query_attention,
            name="self_attn",
        )
        a, kv = attn(
            RMSNorm(cfg.rms_norm_eps, p.param_dtype, name="input_layernorm")(h), cos, sin, mask, kv, write_index
        )
        h = h + LayerScale(cfg.layer_scale_initial_scale, p.param_dtype, name="self_attn_layer_scale")(a)
        m = SwiGLU(cfg.intermediate_size, p.dtype, p.param_dtype, p.matmul, name="mlp")(
            RMSNorm(cfg.rms_norm_eps, p.param_dtype, name="post_attention_layernorm")(h)
        )
        h = h + LayerScale(cfg.layer_scale_initial_scale, p.param_dtype, name="mlp_layer_scale")(m)
        return h, kv


def window_mask(query_pos: Int[Array, "b t"], key_pos: Int[Array, "b s"], window: int) -> Bool[Array, "b t s"]:
    """Sliding-window causal mask: query q sees keys (q - window, q] at non-negative positions."""
    q, k = query_pos[:, :, None], key_pos[:, None, :]
    return (k >= 0) & (k <= q) & (k > q - window)


class PreTransformer(nn.Module):
    """`Qwen3TTSTokenizerV2DecoderTransformerModel`: input_proj, layers, norm, output_proj.

    Always run as a stream: each row continues from its position `pos` with, per layer, the
    keys/values of its previous `window - 1` frames (None: position 0 and zero keys, which the
    mask drops — the one-shot forward). The new frames' keys are appended, query q sees keys
    (q - window, q], and the last `window - 1` keys/values are carried on: a shifting window of
    exactly what the mask can reach, whatever the row's position.
    """

    cfg: DecoderConfig
    policy: Policy = Policy()

    def setup(self):
        cfg, p = self.cfg, self.policy
        self.input_proj = Linear(cfg.hidden_size, True, p.dtype, p.param_dtype, p.matmul)
        self.layers = [TransformerLayer(cfg, p) for _ in range(cfg.num_hidden_layers)]
        self.norm = RMSNorm(cfg.rms_norm_eps, p.param_dtype)
        self.output_proj = Linear(cfg.latent_dim, True, p.dtype, p.param_dtype, p.matmul)

    @property
    def past(self) -> int:
        """Frames of keys/values a stream carries: all the inclusive window can reach."""
        return self.cfg.sliding_window - 1

    def __call__(
        self, x: Float[Array, "b t l"], pos: Int[Array, " b"] | None = None, kv: tuple[KVCache, ...] | None = None
    ) -> tuple[Float[Array, "b t l"], Int[Array, " b"], tuple[KVCache, ...]]:
        cfg, p, past = self.cfg, self.policy, self.past
        b, t, _ = x.shape
        h = self.input_proj(x.astype(p.dtype))
        if pos is None:
            pos = jnp.zeros((b,), jnp.int32)
        if kv is None:
            kv = tuple(KVCache.zeros(b, past, cfg.num_key_value_heads, cfg.head_dim, p.dtype) for _ in self.layers)
        query_pos = pos[:, None] + jnp.arange(t, dtype=jnp.int32)  # b t
        key_pos = pos[:, None] - past + jnp.arange(past + t, dtype=jnp.int32)  # b s: the window, then the new frames
        mask = window_mask(query_pos, key_pos, cfg.sliding_window)  # b t s
        cos, sin = rope_tables(query_pos, cfg.head_dim, cfg.rope_theta, p.dtype)
        new_kv = []
        for layer, old in zip(self.layers, kv, strict=True):
            fresh = jnp.zeros((b, t, cfg.num_key_value_heads, cfg.head_dim), old.k.dtype)
            cache = KVCache(jnp.concatenate([old.k, fresh], 1), jnp.concatenate([old.v, fresh], 1))
            h, cache = apply_layer(self, layer, h, cos, sin, mask, cache, jnp.asarray(past, jnp.int32))
            new_kv.append(KVCache(cache.k[:, t:], cache.v[:, t:]))
        return self.output_proj(self.norm(h)), pos + t, tuple(new_kv)


class Qwen3TTSTokenizerV2Decoder(nn.Module):
    """`Qwen3TTSTokenizerV2Decoder.forward`: codes (b, q, t) → waveform (b, t·total_upsample),
    clamped to [-1, 1]. With a `DecoderState` (`codec/state.py`) it continues one stream per row
    and also returns the new state; with `stages=True` it also returns the intermediate
    activations (channels-last) for parity tests.

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
            SnakeBeta(p.param_dtype, p.snake_sine),
            CausalConv1d(1, 7, dtype=p.dtype, param_dtype=p.param_dtype, kernel_layout=kl),
        ]
        assert len(self.decoder) == n + 3

    def step(
        self, codes: Int[Array, "b q t"], state: DecoderState | None = None
    ) -> tuple[Float[Array, "b n"], DecoderState, dict[str, Float[Array, "b _t _c"]]]:
        """Decode the next t frames of each row's stream: (waveform, the new state, the
        intermediate stages). `state=None` starts every row fresh (the one-shot forward)."""
        cfg = self.cfg
        if codes.shape[1] != cfg.num_quantizers:
            raise ValueError(
                f"Qwen3TTSTokenizerV2Decoder: expected {cfg.num_quantizers} codebooks, got codes of shape {codes.shape}"
            )
        history = None if state is None else state.history
        new: dict = {}
        seen: dict = {}
        h = self.quantizer(codes)  # b t codebook_dim
        seen["quantizer"] = h
        h = _conv_step(self.pre_conv, h, history, "pre_conv", new)
        seen["pre_conv"] = h
        h, pos, kv = self.pre_transformer(h, None if state is None else state.pos, None if state is None else state.kv)
        seen["pre_transformer"] = h
        for i, (trans, convnext) in enumerate(self.upsample):
            h = _conv_step(trans, h, history, f"upsample_{i}_0", new)
            h, sub = convnext(h, _below(history, f"upsample_{i}_1"))
            _child(f"upsample_{i}_1", sub, new)
            seen[f"upsample_{i}"] = h
        n = len(cfg.upsample_rates)
        w = _conv_step(self.decoder[0], h, history, "decoder_0", new)
        for i in range(1, n + 1):
            w, sub = self.decoder[i](w, _below(history, f"decoder_{i}"))
            _child(f"decoder_{i}", sub, new)
            seen[f"decoder_{i}"] = w
        w = self.decoder[n + 1](w)
        w = _conv_step(self.decoder[n + 2], w, history, f"decoder_{n + 2}", new)
        wav = jnp.clip(w[..., 0], -1.0, 1.0)  # b n
        return wav, DecoderState(pos, kv, new), seen

    def __call__(self, codes: Int[Array, "b q t"], state: DecoderState | None = None, stages: bool = False):
        """`wav`, or `(wav, new_state)` when continuing a `state`; `stages=True` appends the
        intermediate activations (channels-last) for parity tests."""
        wav, new, seen = self.step(codes, state)
        out = (wav,) if state is None else (wav, new)
        if stages:
            out = (*out, seen)
        return out[0] if len(out) == 1 else out


# --------------------------------------------------------------------------------------------
# Jitted entry points
# --------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("cfg",))
def prepare_params(params: dict, cfg: DecoderConfig) -> dict:
    """Decoder params with every conv kernel in "HIO" layout (transposed convs in polyphase
    form), for `Qwen3TTSTokenizerV2Decoder(kernel_layout="HIO")`. Same tree, same names; only
    the conv `weight` leaves change shape. Jitted (one program per config, placed like
    `params`); do it once per loaded model."""
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


@functools.cache
def _row_state(cfg: DecoderConfig, policy: Policy) -> DecoderState:
    """The shapes and dtypes of one row's state, as the decoder's modules produce it (abstract:
    `eval_shape` of a 1-frame forward, params included, computes nothing)."""
    module = Qwen3TTSTokenizerV2Decoder(cfg, policy, "HIO")
    codes = jax.ShapeDtypeStruct((1, cfg.num_quantizers, 1), jnp.int32)

    def run(c):
        (_, state, _), _ = module.init_with_output(jax.random.key(0), c, method="step")
        return state

    return jax.eval_shape(run, codes)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def init_state(cfg: DecoderConfig, batch: int, policy: Policy = Policy()) -> DecoderState:
    """The state before every row's first frame: zero histories (= the one-shot zero padding),
    zero keys at negative positions, position 0. One compiled program, and its result is
    uncommitted, so a step on params placed elsewhere (a mesh) takes it where they are."""
    return jax.tree.map(lambda a: jnp.zeros((batch, *a.shape[1:]), a.dtype), _row_state(cfg, policy))


def _step(
    params: dict,
    state: DecoderState,
    codes: Int[Array, "b q k"],
    cfg: DecoderConfig,
    policy: Policy = Policy(),
    prepared: bool = False,
) -> tuple[Float[Array, "b n"], DecoderState]:
    if not prepared:
        params = prepare_params(params, cfg)
    return Qwen3TTSTokenizerV2Decoder(cfg, policy, "HIO").apply({"params": params}, codes, state)


_STATIC = ("cfg", "policy", "prepared")
_step_donating = jax.jit(_step, static_argnames=_STATIC, donate_argnames=("state",))
_step_copying = jax.jit(_step, static_argnames=_STATIC)


def stream_program(policy: Policy = Policy()):
    """The jitted program `stream_step` calls under `policy` (donating its state or not): call
    `.lower(params, state, codes, cfg, policy, prepared).compile()` on it to compile a step
    ahead of time, nothing run (a server compiles its codec shapes before its first client)."""
    return _step_donating if policy.donate_codec_state else _step_copying


def stream_step(
    params: dict,
    state: DecoderState,
    codes: Int[Array, "b q k"],
    cfg: DecoderConfig,
    policy: Policy = Policy(),
    prepared: bool = False,
) -> tuple[Float[Array, "b n"], DecoderState]:
    """Decode the next k frames of every row: their k·total_upsample samples and the new state.

    The one streaming step, jitted once per (rows, k). Pass `prepare_params(params, cfg)` with
    `prepared=True`: with the checkpoint's kernel layout every step re-lays every conv kernel
    out. `policy.donate_codec_state` donates the state (GPU/TPU; on XLA:CPU donating it made a
    full-size 1-frame step 2x slower) — treat the passed state as consumed either way."""
    return stream_program(policy)(params, state, codes, cfg, policy, prepared)


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


def chunked_decode(
    params: dict,
    codes: Int[Array | np.ndarray, "b q t"],
    cfg: DecoderConfig,
    policy: Policy = Policy(),
    chunk_size: int = CHUNK_SIZE,
    left_context_size: int = LEFT_CONTEXT,
    *,
    prepared: bool = False,
    max_piece: int = MAX_PIECE,
    call_overhead: float = CALL_OVERHEAD,
) -> Float[Array, "b n"]:
    """`Qwen3TTSTokenizerV2Decoder.chunked_decode`: independent forwards over 300-frame chunks,
    each with up to 25 frames of left context whose samples are dropped (positions and conv
    state restart in every chunk, exactly as the reference; a single forward differs after
    frame 300). Every row has the same length; `decode` handles a ragged batch.

    Each chunk is a fresh stream of the streaming step (`codec/pieces.py`: pieces of fixed
    sizes, only the last one padded with code-0 frames), so all lengths share a few compiled
    programs and nothing is decoded twice. Exact, not approximate: the decoder is causal end
    to end, and the stream equals the one-shot forward of the same frames. The result stays on
    the device, placed like `codes` and `params` (a mesh: `sharding.decode_audio`)."""
    codes = jnp.asarray(codes, jnp.int32)
    b, _, t = codes.shape
    up = cfg.total_upsample
    if t == 0:
        return jnp.zeros((b, 0), policy.dtype)
    if not prepared:
        params = prepare_params(params, cfg)
    plan = runs(0, t, chunk_size, left_context_size)
    total = plan[-1].first + padded_length(t - plan[-1].first, max_piece, call_overhead)
    if total > t:  # the last piece's code-0 padding
        codes = jnp.pad(codes, ((0, 0), (0, 0), (0, total - t)))
    wavs = []
    for i, run in enumerate(plan):
        stop = total if i == len(plan) - 1 else run.stop
        state, at, pieces = init_state(cfg, b, policy), run.first, []
        for k in split(stop - run.first, max_piece):
            wav, state = stream_step(
                params, state, jax.lax.dynamic_slice_in_dim(codes, at, k, axis=2), cfg, policy, True
            )
            pieces.append(wav)
            at += k
        wav = pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=-1)
        wavs.append(wav[:, (run.emit - run.first) * up : (run.stop - run.first) * up])
    return wavs[0] if len(wavs) == 1 else jnp.concatenate(wavs, axis=-1)


def decode(
    params: dict, audio_codes, cfg: DecoderConfig, policy: Policy = Policy(), *, prepared: bool = False
) -> list[np.ndarray]:
    """`Qwen3TTSTokenizerV2Model.decode`: `audio_codes (b, t, q)` right-padded with -1 →
    one float32 waveform per item, `(codebook-0 codes > -1 count) × 1920` samples long.

    Each item is decoded to its own length only (no padding frames but a tail piece's): the
    items are the rows of a `CodecSlots`, which batches whichever rows share a piece size."""
    from qwen3tts_jax.codec.slots import CodecSlots  # slots builds on this module

    codes = np.asarray(audio_codes)
    if codes.ndim != 3 or codes.shape[-1] != cfg.num_quantizers:
        raise ValueError(f"decode: audio_codes must be (batch, frames, {cfg.num_quantizers}), got shape {codes.shape}")
    lengths = (codes[..., 0] > -1).sum(1)
    codes = np.clip(codes, 0, None)
    if codes.size and codes.max() >= cfg.codebook_size:
        raise ValueError(f"decode: code {int(codes.max())} out of range for codebook_size={cfg.codebook_size}")
    if codes.shape[0] == 0:
        return []
    slots = CodecSlots(params, cfg, policy, codes.shape[0], prepared=prepared)
    for row in range(codes.shape[0]):
        slots.start(row)
    out = slots.push({row: codes[row, : int(n)] for row, n in enumerate(lengths)}, final=range(codes.shape[0]))
    return [out[row] for row in range(codes.shape[0])]
