"""The ECAPA-TDNN speaker encoder of the Base models: log-mel → x-vector of the talker's width.

Mirrors `Qwen3TTSSpeakerEncoder` and its parts in `qwen_tts/core/models/modeling_qwen3_tts.py`
(architecture notes §5, trap 21): no BatchNorm anywhere, every Conv1d is `padding="same",
padding_mode="reflect"`, the attentive statistics pooling clamps variances at 1e-12 inside the
sqrt. `extract_speaker_embedding` mirrors `Qwen3TTSForConditionalGeneration.extract_speaker_embedding`
(24 kHz mono waveform → mel front end in `mel.py` → encoder → row 0).

Layout: activations are time-major `(b, t, c)` (the reference runs `(b, c, t)`); conv weights keep
torch's `(out, in/groups, k)` so they load untransformed. Submodule and param names equal the
checkpoint keys with ModuleList indices folded (`blocks.1.res2net_block.blocks.0.conv.weight` →
`blocks_1/res2net_block/blocks_0/conv/weight`), matching `weights.speaker_encoder_entries`.

Use it purely: `SpeakerEncoder(cfg, policy).apply({"params": p}, mels)` → `(b, enc_dim)`.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from qwen3tts_jax.config import Policy, Qwen3TTSConfig, SpeakerEncoderConfig
from qwen3tts_jax.mel import SPEAKER_MEL, log_mel_spectrogram
from qwen3tts_jax.nn.linear import precision
from qwen3tts_jax.nn.params import existing_param
from qwen3tts_jax.typing import Array, Float, HostArray, Params

# `AttentiveStatisticsPooling.eps`: the floor of every variance before its sqrt.
ASP_EPS = 1e-12


# --------------------------------------------------------------------------------------------
# Conv1d with torch's "same" + reflect padding
# --------------------------------------------------------------------------------------------


def same_padding(kernel_size: int, dilation: int) -> tuple[int, int]:
    """torch's `padding="same"`: total `d·(k-1)`, the odd sample (even k) going to the right."""
    total = dilation * (kernel_size - 1)
    return total // 2, total - total // 2


def conv1d_same_reflect(
    x: Float[Array, "b t i"], weight: Float[HostArray, "o i k"], bias: Float[HostArray, " o"] | None, dilation: int = 1
) -> Float[Array, "b t o"]:
    """`torch.nn.Conv1d(..., padding="same", padding_mode="reflect")` on time-major input.

    Reflect padding (edge sample not repeated, as torch/numpy "reflect") needs `pad < t`; callers
    check lengths at the boundary (`min_samples`), since jnp.pad would silently fold instead.
    """
    left, right = same_padding(weight.shape[-1], dilation)
    if left or right:
        x = jnp.pad(x, ((0, 0), (left, right), (0, 0)), mode="reflect")  # (b, t + d·(k-1), i)
    y = jax.lax.conv_general_dilated(
        x,
        weight.astype(x.dtype),
        window_strides=(1,),
        padding="VALID",
        rhs_dilation=(dilation,),
        dimension_numbers=("NWC", "OIW", "NWC"),
        precision=precision(x.dtype),
    )
    return y if bias is None else y + bias.astype(x.dtype)


class Conv1d(nn.Module):
    """`nn.Conv1d(in, features, kernel_size, dilation=…, padding="same", padding_mode="reflect")`
    with torch's weight layout `(features, in, k)` and a bias."""

    features: int
    kernel_size: int = 1
    dilation: int = 1
    policy: Policy = Policy()

    @nn.compact
    def __call__(self, x: Float[Array, "b t i"]) -> Float[Array, "b t o"]:
        init = nn.initializers.lecun_normal(in_axis=(1, 2), out_axis=0)
        shape = (self.features, x.shape[-1], self.kernel_size)
        weight = existing_param(self, "weight", init, shape, self.policy.param_dtype)
        bias = existing_param(self, "bias", nn.initializers.zeros, (self.features,), self.policy.param_dtype)
        return conv1d_same_reflect(x.astype(self.policy.dtype), weight, bias, self.dilation)


# --------------------------------------------------------------------------------------------
# ECAPA-TDNN blocks
# --------------------------------------------------------------------------------------------


class TimeDelayNetBlock(nn.Module):
    """`TimeDelayNetBlock`: Conv1d then ReLU (no BatchNorm in this ECAPA variant)."""

    features: int
    kernel_size: int = 1
    dilation: int = 1
    policy: Policy = Policy()

    def setup(self):
        self.conv = Conv1d(self.features, self.kernel_size, self.dilation, self.policy)

    def __call__(self, x: Float[Array, "b t i"]) -> Float[Array, "b t o"]:
        return jax.nn.relu(self.conv(x))


class Res2NetBlock(nn.Module):
    """`Res2NetBlock`: split channels into `scale` groups; group 0 passes through, group k ≥ 1 is
    `tdnn_{k-1}(x_k + y_{k-1})` (no addend for k = 1), then concatenate."""

    features: int
    scale: int
    kernel_size: int
    dilation: int
    policy: Policy = Policy()

    def setup(self):
        width = self.features // self.scale
        self.blocks = [
            TimeDelayNetBlock(width, self.kernel_size, self.dilation, self.policy) for _ in range(self.scale - 1)
        ]

    def __call__(self, x: Float[Array, "b t c"]) -> Float[Array, "b t c"]:
        parts = jnp.split(x, self.scale, axis=-1)  # scale × (b, t, c/scale), torch.chunk's order
        outputs = [parts[0]]
        for k in range(1, self.scale):
            inp = parts[k] if k == 1 else parts[k] + outputs[-1]
            outputs.append(self.blocks[k - 1](inp))
        return jnp.concatenate(outputs, axis=-1)


class SqueezeExcitationBlock(nn.Module):
    """`SqueezeExcitationBlock`: `x · sigmoid(conv2(relu(conv1(mean_t x))))`, per channel."""

    se_channels: int
    features: int
    policy: Policy = Policy()

    def setup(self):
        self.conv1 = Conv1d(self.se_channels, 1, 1, self.policy)
        self.conv2 = Conv1d(self.features, 1, 1, self.policy)

    def __call__(self, x: Float[Array, "b t c"]) -> Float[Array, "b t c"]:
        # a statistic: averaged in fp32 whatever the activation dtype (policy), then cast back
        s = jnp.mean(x.astype(jnp.float32), axis=1, keepdims=True).astype(x.dtype)  # (b, 1, c)
        s = jax.nn.sigmoid(self.conv2(jax.nn.relu(self.conv1(s))))  # (b, 1, c)
        return x * s


class SqueezeExcitationRes2NetBlock(nn.Module):
    """`SqueezeExcitationRes2NetBlock`: TDNN(1×1) → Res2Net → TDNN(1×1) → SE, plus the input."""

    features: int
    res2net_scale: int
    se_channels: int
    kernel_size: int
    dilation: int
    policy: Policy = Policy()

    def setup(self):
        p = self.policy
        self.tdnn1 = TimeDelayNetBlock(self.features, 1, 1, p)
        self.res2net_block = Res2NetBlock(self.features, self.res2net_scale, self.kernel_size, self.dilation, p)
        self.tdnn2 = TimeDelayNetBlock(self.features, 1, 1, p)
        self.se_block = SqueezeExcitationBlock(self.se_channels, self.features, p)

    def __call__(self, x: Float[Array, "b t c"]) -> Float[Array, "b t c"]:
        h = self.se_block(self.tdnn2(self.res2net_block(self.tdnn1(x))))
        return h + x


def _weighted_stats(
    x: Float[Array, "b t c"], w: Float[Array, "b t #c"]
) -> tuple[Float[Array, "b c"], Float[Array, "b c"]]:
    """`AttentiveStatisticsPooling._compute_statistics`: weighted mean and clamped std over t."""
    mean = jnp.sum(w * x, axis=1)  # (b, c)
    var = jnp.sum(w * (x - mean[:, None, :]) ** 2, axis=1)
    return mean, jnp.sqrt(jnp.maximum(var, ASP_EPS))


class AttentiveStatisticsPooling(nn.Module):
    """`AttentiveStatisticsPooling`: channel-wise attention over time from `[x, mean, std]`, then
    the attention-weighted mean and std, concatenated `(b, 2c)`.

    The reference masks padding, but its lengths are always the full sequence, so the mask is all
    ones and is dropped here. Statistics and the softmax run in fp32 (project policy); with the
    fp32 policy this is exactly the reference's arithmetic, including its `sum(x · 1/t)` mean.
    """

    channels: int
    attention_channels: int
    policy: Policy = Policy()

    def setup(self):
        self.tdnn = TimeDelayNetBlock(self.attention_channels, 1, 1, self.policy)
        self.conv = Conv1d(self.channels, 1, 1, self.policy)

    def __call__(self, x: Float[Array, "b t c"]) -> Float[Array, "b c2"]:
        t = x.shape[1]
        x32 = x.astype(jnp.float32)
        mean, std = _weighted_stats(x32, jnp.full((1, t, 1), 1.0 / t, jnp.float32))  # (b, c) each
        # every frame also sees the utterance's global mean and std
        context = [jnp.broadcast_to(s[:, None, :], x32.shape) for s in (mean, std)]
        attn_in = jnp.concatenate([x32, *context], axis=-1).astype(x.dtype)  # (b, t, 3c)
        logits = self.conv(jnp.tanh(self.tdnn(attn_in)))  # (b, t, c): one distribution per channel
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=1)
        mean, std = _weighted_stats(x32, weights)
        return jnp.concatenate([mean, std], axis=-1).astype(x.dtype)


class SpeakerEncoder(nn.Module):
    """`Qwen3TTSSpeakerEncoder`: TDNN → SE-Res2Net × (n−2) → MFA → ASP → fc.

    `blocks_0` is the initial TDNN, `blocks_1..n-2` the SE-Res2Net blocks; `mfa` takes the
    concatenation of the SE-Res2Net outputs (the reference declares its input width as
    `enc_channels[-1]`, which therefore must equal their summed widths).
    """

    cfg: SpeakerEncoderConfig
    policy: Policy = Policy()

    def setup(self):
        c, p = self.cfg, self.policy
        ch, ks, dil = c.enc_channels, c.enc_kernel_sizes, c.enc_dilations
        blocks: list[nn.Module] = [TimeDelayNetBlock(ch[0], ks[0], dil[0], p)]
        for i in range(1, len(ch) - 1):
            blocks.append(
                SqueezeExcitationRes2NetBlock(ch[i], c.enc_res2net_scale, c.enc_se_channels, ks[i], dil[i], p)
            )
        self.blocks = blocks
        self.mfa = TimeDelayNetBlock(ch[-1], ks[-1], dil[-1], p)
        self.asp = AttentiveStatisticsPooling(ch[-1], c.enc_attention_channels, p)
        self.fc = Conv1d(c.enc_dim, 1, 1, p)

    def __call__(self, mels: Float[Array, "b t m"]) -> Float[Array, "b d"]:
        h = mels.astype(self.policy.dtype)
        outs = []
        for block in self.blocks:
            h = block(h)
            outs.append(h)
        h = self.mfa(jnp.concatenate(outs[1:], axis=-1))  # (b, t, enc_channels[-1])
        pooled = self.asp(h)  # (b, 2·enc_channels[-1])
        return self.fc(pooled[:, None, :])[:, 0, :]  # a 1×1 conv on a length-1 sequence


# --------------------------------------------------------------------------------------------
# Waveform → embedding (the API boundary)
# --------------------------------------------------------------------------------------------


def max_reflect_pad(cfg: SpeakerEncoderConfig) -> int:
    """The widest one-sided reflect padding of any conv (the 1×1 convs pad nothing)."""
    ks, dil = cfg.enc_kernel_sizes, cfg.enc_dilations
    # blocks_0, the Res2Net convs of blocks_1..n-2, and mfa: kernel/dilation pairs by index
    return max(max(same_padding(k, d)) for k, d in zip(ks, dil))


def min_frames(cfg: SpeakerEncoderConfig) -> int:
    """torch's reflect padding requires `pad < t`; shorter inputs raise inside the reference."""
    return max_reflect_pad(cfg) + 1


def min_samples(cfg: SpeakerEncoderConfig) -> int:
    """Shortest waveform `extract_speaker_embedding` accepts (1280 samples ≈ 53 ms as released)."""
    return max(min_frames(cfg) * SPEAKER_MEL.hop, SPEAKER_MEL.min_samples())


@functools.partial(jax.jit, static_argnames=("cfg", "policy"))
def embed_waveform(
    params: Params, wav: Float[Array, "b n"], cfg: SpeakerEncoderConfig, policy: Policy = Policy()
) -> Float[Array, "b d"]:
    """Mel front end + encoder, one compile per (batch, length). No input checks: see
    `extract_speaker_embedding`. Padding to a length bucket would change the ASP statistics (the
    reference pools over every frame), so lengths are not bucketed."""
    mels = log_mel_spectrogram(wav, SPEAKER_MEL)  # (b, n // 256, 128), fp32
    return SpeakerEncoder(cfg, policy).apply({"params": params}, mels)


def check_config(cfg: SpeakerEncoderConfig) -> None:
    """Shape constraints the reference only meets by crashing mid-forward; named here instead."""
    where = "speaker_encoder_config"
    # The reference's front end hard-codes 24 kHz and 128 mel bins, whatever the config says.
    if cfg.sample_rate != SPEAKER_MEL.sample_rate:
        raise ValueError(
            f"{where}.sample_rate={cfg.sample_rate}: only {SPEAKER_MEL.sample_rate} is supported (the reference's "
            "mel front end is fixed at 24 kHz)"
        )
    if cfg.mel_dim != SPEAKER_MEL.n_mels:
        raise ValueError(
            f"{where}.mel_dim={cfg.mel_dim}: the reference's mel front end always gives {SPEAKER_MEL.n_mels} bins"
        )
    ch = cfg.enc_channels
    if len(ch) < 3:
        raise ValueError(f"{where}.enc_channels={ch}: need at least 3 entries (initial TDNN, SE-Res2Net blocks, MFA)")
    if any(ch[i] != ch[i - 1] for i in range(1, len(ch) - 1)):
        raise ValueError(
            f"{where}.enc_channels={ch}: every SE-Res2Net block adds its input, so enc_channels[0..-2] must be equal"
        )
    if sum(ch[1:-1]) != ch[-1]:
        raise ValueError(
            f"{where}.enc_channels={ch}: the MFA conv reads the concatenated SE-Res2Net outputs, so enc_channels[-1] "
            f"must be sum(enc_channels[1:-1])={sum(ch[1:-1])}"
        )
    if ch[0] % cfg.enc_res2net_scale:
        raise ValueError(f"{where}.enc_res2net_scale={cfg.enc_res2net_scale} must divide enc_channels[1..-2]={ch[0]}")


def validate_waveform(wav: Any, sr: int, cfg: SpeakerEncoderConfig) -> np.ndarray:
    """The checks `extract_speaker_embedding` runs before tracing; returns a float32 numpy copy."""
    if sr != cfg.sample_rate:
        raise ValueError(
            f"extract_speaker_embedding: sr={sr}, expected {cfg.sample_rate} Hz; resample the waveform first"
        )
    arr = np.asarray(wav)
    if arr.ndim != 1:
        raise ValueError(f"extract_speaker_embedding: wav_24k must be a mono 1-D waveform, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(
            f"extract_speaker_embedding: wav_24k must be a float waveform in [-1, 1], got dtype {arr.dtype}"
        )
    if arr.size == 0:
        raise ValueError("extract_speaker_embedding: wav_24k is empty (0 samples)")
    arr = arr.astype(np.float32)
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(
            f"extract_speaker_embedding: wav_24k has {int(bad.sum())} non-finite samples (first at index {first}: "
            f"{arr[first]})"
        )
    need = min_samples(cfg)
    if arr.size < need:
        raise ValueError(
            f"extract_speaker_embedding: wav_24k has {arr.size} samples ({arr.size / sr * 1000:.1f} ms); at least "
            f"{need} "
            f"({need / sr * 1000:.1f} ms) are needed for the encoder's reflect padding"
        )
    peak = float(np.max(np.abs(arr)))
    if peak > 1.0:
        # the reference only prints a warning and proceeds unnormalised; so do we
        warnings.warn(f"extract_speaker_embedding: wav_24k peaks at {peak:.3f} > 1.0 (not normalised)", stacklevel=3)
    return arr


def extract_speaker_embedding(
    params: Params,
    cfg: SpeakerEncoderConfig | Qwen3TTSConfig,
    wav_24k: Any,
    sr: int = 24000,
    policy: Policy = Policy(),
) -> Float[Array, " d"]:
    """`Qwen3TTSForConditionalGeneration.extract_speaker_embedding(audio, 24000)`: `(enc_dim,)`.

    `params` is the speaker-encoder subtree (`load_model_params(dir)["speaker_encoder"]`); given
    the whole model's params and its `Qwen3TTSConfig`, the subtree and sub-config are taken.
    `wav_24k` is a mono float waveform at 24 kHz (resample elsewhere). The result is in
    `policy.dtype`, like the reference's model-dtype output.
    """
    if isinstance(cfg, Qwen3TTSConfig):
        if cfg.speaker_encoder is None:
            raise ValueError("extract_speaker_embedding: this model has no speaker encoder (only Base models do)")
        cfg = cfg.speaker_encoder
        params = params.get("speaker_encoder", params)
    check_config(cfg)
    arr = validate_waveform(wav_24k, sr, cfg)
    return embed_waveform(params, jnp.asarray(arr)[None], cfg, policy)[0]
