"""Frozen configs of the 12 Hz speech tokenizer, parsed from `speech_tokenizer/config.json`.

Mirrors `qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2`
(`Qwen3TTSTokenizerV2Config`, `Qwen3TTSTokenizerV2DecoderConfig`) and the transformers
`MimiConfig` used as its encoder config. The decoder class defaults are NOT the released values
(hidden 1024 / intermediate 3072 vs 512 / 1024, no `codebook_dim` at all), so every field that
decides a shape is read from the JSON and a missing one is an error naming the file and field.
Fields that only pick a behaviour get the reference's own default when absent.

Everything is hashable (tuples, not lists) so configs can be static jit arguments; change one
with `dataclasses.replace`, never by mutation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qwen3tts_jax.config import ConfigError, _Fields, read_json

MODEL_TYPE = "qwen3_tts_tokenizer_12hz"
CONFIG_FILE = "config.json"

__all__ = ["MODEL_TYPE", "MimiEncoderConfig", "DecoderConfig", "Qwen3TTSTokenizerV2Config", "ConfigError"]


def _ints(f: _Fields, name: str, default: Any = ...) -> tuple[int, ...]:
    value = f.get(name, (list, tuple)) if default is ... else f.get(name, (list, tuple), default)
    if not value or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in value):
        raise ConfigError(f"{f.where(name)} must be a non-empty list of positive integers, got {value!r}")
    return tuple(int(v) for v in value)


def _check_rope_scaling(f: _Fields) -> None:
    rope_scaling = f.get("rope_scaling", dict, None)
    if rope_scaling is not None:
        kind = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
        if kind != "default":
            raise ConfigError(f"{f.where('rope_scaling')}: rope_type {kind!r} is not supported (only 'default')")


@dataclasses.dataclass(frozen=True)
class MimiEncoderConfig:
    """`encoder_config`: a transformers `MimiConfig` (the encoder half of Mimi is used).

    Shape-deciding fields are required; the rest default to `MimiConfig`'s own defaults.
    """

    sampling_rate: int
    hidden_size: int
    num_filters: int
    num_residual_layers: int
    upsampling_ratios: tuple[int, ...]  # encoder strides are these, reversed
    kernel_size: int
    last_kernel_size: int
    residual_kernel_size: int
    dilation_growth_rate: int
    compress: int
    codebook_size: int
    codebook_dim: int
    num_quantizers: int
    num_semantic_quantizers: int
    vector_quantization_hidden_dimension: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    frame_rate: float
    audio_channels: int = 1
    use_causal_conv: bool = True
    pad_mode: str = "constant"
    use_conv_shortcut: bool = False
    trim_right_ratio: float = 1.0
    upsample_groups: int = 512
    hidden_act: str = "gelu"
    max_position_embeddings: int = 8000
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    # Honoured only by the flash-attention-2 path of the reference; eager/sdpa (what the official
    # loader runs) attend fully causally. Kept for the record.
    sliding_window: int = 250
    layer_scale_initial_scale: float = 0.01
    attention_bias: bool = False

    @property
    def hop_length(self) -> int:
        """Samples per frame of the SEANet encoder (960 at 24 kHz: 25 Hz)."""
        return math.prod(self.upsampling_ratios)

    @property
    def encodec_frame_rate(self) -> int:
        """`MimiConfig.encodec_frame_rate`: the SEANet output rate (25)."""
        return math.ceil(self.sampling_rate / self.hop_length)

    @property
    def has_downsample(self) -> bool:
        """`MimiModel` builds `downsample` (stride 2, replicate padding) iff the rates differ."""
        return self.frame_rate != self.encodec_frame_rate

    @property
    def downsample_kernel_size(self) -> int:
        """`2 * int(encodec_frame_rate / frame_rate)` (4 for 25 → 12.5 Hz)."""
        return 2 * int(self.encodec_frame_rate / self.frame_rate)

    @property
    def downsample_stride(self) -> int:
        return 2 if self.has_downsample else 1

    @property
    def frame_size(self) -> int:
        """Samples per code frame (1920)."""
        return self.hop_length * self.downsample_stride

    @property
    def num_acoustic_quantizers(self) -> int:
        return self.num_quantizers - self.num_semantic_quantizers

    @property
    def uses_quantizer_projections(self) -> bool:
        """`MimiResidualVectorQuantizer` has input/output_proj iff the VQ width differs."""
        return self.vector_quantization_hidden_dimension != self.hidden_size

    @staticmethod
    def parse(f: _Fields) -> MimiEncoderConfig:
        hidden = f.positive("hidden_size")
        heads = f.positive("num_attention_heads")
        kv_heads = f.positive("num_key_value_heads")
        if heads % kv_heads:
            raise ConfigError(
                f"{f.where('num_attention_heads')}={heads} is not a multiple of num_key_value_heads={kv_heads}"
            )
        sampling_rate = f.positive("sampling_rate")
        ratios = _ints(f, "upsampling_ratios")
        num_q = f.positive("num_quantizers")
        num_sem = f.positive("num_semantic_quantizers")
        if num_sem >= num_q:
            raise ConfigError(f"{f.where('num_semantic_quantizers')}={num_sem} must be < num_quantizers={num_q}")
        if not f.get("use_causal_conv", bool, True):
            raise ConfigError(f"{f.where('use_causal_conv')}=false is not supported (the 12 Hz tokenizer is causal)")
        act = f.get("hidden_act", str, "gelu")
        if act != "gelu":
            raise ConfigError(f"{f.where('hidden_act')}={act!r} is not supported (only 'gelu')")
        _check_rope_scaling(f)
        # The JSON stores the frame rate as `_frame_rate` (what `save_pretrained` writes); without
        # it MimiConfig computes sampling_rate / frame_size (frame_size assumes a stride-2
        # downsample, as `MimiConfig.frame_size` does).
        frame_rate = f.get("_frame_rate", float, None)
        if frame_rate is None:
            frame_rate = f.get("frame_rate", float, None)
        if frame_rate is None:
            frame_rate = sampling_rate / (math.prod(ratios) * 2)
        return MimiEncoderConfig(
            sampling_rate=sampling_rate,
            hidden_size=hidden,
            num_filters=f.positive("num_filters"),
            num_residual_layers=f.positive("num_residual_layers"),
            upsampling_ratios=ratios,
            kernel_size=f.positive("kernel_size"),
            last_kernel_size=f.positive("last_kernel_size"),
            residual_kernel_size=f.positive("residual_kernel_size"),
            dilation_growth_rate=f.positive("dilation_growth_rate"),
            compress=f.positive("compress"),
            codebook_size=f.positive("codebook_size"),
            codebook_dim=f.positive("codebook_dim"),
            num_quantizers=num_q,
            num_semantic_quantizers=num_sem,
            vector_quantization_hidden_dimension=f.positive("vector_quantization_hidden_dimension"),
            num_hidden_layers=f.positive("num_hidden_layers"),
            intermediate_size=f.positive("intermediate_size"),
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=f.positive("head_dim", hidden // heads),
            frame_rate=float(frame_rate),
            audio_channels=f.positive("audio_channels", 1),
            use_causal_conv=True,
            pad_mode=f.get("pad_mode", str, "constant"),
            use_conv_shortcut=f.get("use_conv_shortcut", bool, False),
            trim_right_ratio=f.get("trim_right_ratio", float, 1.0),
            upsample_groups=f.positive("upsample_groups", 512),
            hidden_act=act,
            max_position_embeddings=f.positive("max_position_embeddings", 8000),
            norm_eps=f.get("norm_eps", float, 1e-5),
            rope_theta=f.get("rope_theta", float, 10000.0),
            sliding_window=f.positive("sliding_window", 250),
            layer_scale_initial_scale=f.get("layer_scale_initial_scale", float, 0.01),
            attention_bias=f.get("attention_bias", bool, False),
        )


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """`decoder_config`: `Qwen3TTSTokenizerV2DecoderConfig` (+ the kwargs-only `codebook_dim`).

    `semantic_codebook_size`, `num_semantic_quantizers` and `vector_quantization_hidden_dimension`
    appear in the released JSON but no code reads them; they are not parsed.
    """

    codebook_size: int  # entries per codebook, semantic one included (2048)
    codebook_dim: int  # quantizer in/out width (512); the codebook vectors are codebook_dim // 2
    latent_dim: int  # pre_conv output / upsampler width (1024)
    hidden_size: int  # pre-transformer width (512)
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    num_quantizers: int  # 16: 1 semantic (rvq_first) + 15 acoustic (rvq_rest)
    upsample_rates: tuple[int, ...]  # waveform decoder blocks (8, 5, 4, 3)
    upsampling_ratios: tuple[int, ...]  # ConvNeXt upsamplers (2, 2)
    decoder_dim: int  # waveform decoder input width (1536), halved by each block
    sliding_window: int = 72  # keys (q - window, q]: inclusive of self
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 8000
    attention_bias: bool = False
    layer_scale_initial_scale: float = 0.01
    hidden_act: str = "silu"

    @property
    def codebook_vector_dim(self) -> int:
        """`SplitResidualVectorQuantizer(dimension=codebook_dim // 2)`: 256 at release."""
        return self.codebook_dim // 2

    @property
    def total_upsample(self) -> int:
        """Samples per code frame: prod(upsample_rates + upsampling_ratios) (1920)."""
        return math.prod(self.upsample_rates) * math.prod(self.upsampling_ratios)

    @property
    def output_dim(self) -> int:
        """Channels into the final SnakeBeta + conv (96 at release)."""
        return self.decoder_dim // 2 ** len(self.upsample_rates)

    def block_dims(self, i: int) -> tuple[int, int]:
        """(in, out) channels of waveform decoder block i (`Qwen3TTSTokenizerV2DecoderDecoderBlock`)."""
        return self.decoder_dim // 2**i, self.decoder_dim // 2 ** (i + 1)

    @staticmethod
    def parse(f: _Fields) -> DecoderConfig:
        hidden = f.positive("hidden_size")
        heads = f.positive("num_attention_heads")
        kv_heads = f.positive("num_key_value_heads")
        if heads % kv_heads:
            raise ConfigError(
                f"{f.where('num_attention_heads')}={heads} is not a multiple of num_key_value_heads={kv_heads}"
            )
        codebook_dim = f.positive("codebook_dim")
        if codebook_dim % 2:
            raise ConfigError(
                f"{f.where('codebook_dim')}={codebook_dim} must be even (codebook vectors are codebook_dim // 2)"
            )
        num_q = f.positive("num_quantizers")
        if num_q < 2:
            raise ConfigError(f"{f.where('num_quantizers')}={num_q} must be > 1 (one semantic + acoustic quantizers)")
        rates = _ints(f, "upsample_rates")
        decoder_dim = f.positive("decoder_dim")
        if decoder_dim % 2 ** len(rates):
            raise ConfigError(
                f"{f.where('decoder_dim')}={decoder_dim} is not divisible by 2**len(upsample_rates)={2 ** len(rates)}"
            )
        act = f.get("hidden_act", str, "silu")
        if act != "silu":
            raise ConfigError(f"{f.where('hidden_act')}={act!r} is not supported (only 'silu')")
        _check_rope_scaling(f)
        return DecoderConfig(
            codebook_size=f.positive("codebook_size"),
            codebook_dim=codebook_dim,
            latent_dim=f.positive("latent_dim"),
            hidden_size=hidden,
            intermediate_size=f.positive("intermediate_size"),
            num_hidden_layers=f.positive("num_hidden_layers"),
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=f.positive("head_dim", hidden // heads),
            num_quantizers=num_q,
            upsample_rates=rates,
            upsampling_ratios=_ints(f, "upsampling_ratios"),
            decoder_dim=decoder_dim,
            sliding_window=f.positive("sliding_window"),
            rms_norm_eps=f.get("rms_norm_eps", float, 1e-5),
            rope_theta=f.get("rope_theta", float, 10000.0),
            max_position_embeddings=f.positive("max_position_embeddings", 8000),
            attention_bias=f.get("attention_bias", bool, False),
            layer_scale_initial_scale=f.get("layer_scale_initial_scale", float, 0.01),
            hidden_act=act,
        )


@dataclasses.dataclass(frozen=True)
class Qwen3TTSTokenizerV2Config:
    """`Qwen3TTSTokenizerV2Config`: the `speech_tokenizer/config.json` of a model folder."""

    encoder: MimiEncoderConfig
    decoder: DecoderConfig
    encoder_valid_num_quantizers: int  # codes kept per frame (16 of Mimi's 32)
    input_sample_rate: int
    output_sample_rate: int
    decode_upsample_rate: int  # samples per frame the decode lengths assume (1920)
    encode_downsample_rate: int  # samples per frame the encode lengths assume (1920)

    @property
    def encoder_config(self) -> MimiEncoderConfig:  # the reference's attribute names
        return self.encoder

    @property
    def decoder_config(self) -> DecoderConfig:
        return self.decoder

    @staticmethod
    def from_dict(data: Mapping[str, Any], source: str = CONFIG_FILE) -> Qwen3TTSTokenizerV2Config:
        f = _Fields(data, source)
        model_type = f.get("model_type", str)
        if model_type != MODEL_TYPE:
            raise ConfigError(f"{f.where('model_type')}={model_type!r} is not {MODEL_TYPE!r}")
        encoder = MimiEncoderConfig.parse(f.sub("encoder_config"))
        decoder = DecoderConfig.parse(f.sub("decoder_config"))
        cfg = Qwen3TTSTokenizerV2Config(
            encoder=encoder,
            decoder=decoder,
            encoder_valid_num_quantizers=f.positive("encoder_valid_num_quantizers"),
            input_sample_rate=f.positive("input_sample_rate"),
            output_sample_rate=f.positive("output_sample_rate"),
            decode_upsample_rate=f.positive("decode_upsample_rate"),
            encode_downsample_rate=f.positive("encode_downsample_rate"),
        )
        # Consistency the reference silently assumes (its length bookkeeping mixes these numbers).
        if cfg.decode_upsample_rate != decoder.total_upsample:
            raise ConfigError(
                f"{f.where('decode_upsample_rate')}={cfg.decode_upsample_rate} differs from the decoder's "
                f"prod(upsample_rates + upsampling_ratios)={decoder.total_upsample}"
            )
        if cfg.encode_downsample_rate != encoder.frame_size:
            raise ConfigError(
                f"{f.where('encode_downsample_rate')}={cfg.encode_downsample_rate} differs from the encoder's "
                f"frame size {encoder.frame_size} (prod(upsampling_ratios) x downsample stride)"
            )
        if cfg.encoder_valid_num_quantizers != decoder.num_quantizers:
            raise ConfigError(
                f"{f.where('encoder_valid_num_quantizers')}={cfg.encoder_valid_num_quantizers} differs from "
                f"decoder_config.num_quantizers={decoder.num_quantizers}"
            )
        if cfg.encoder_valid_num_quantizers > encoder.num_quantizers:
            raise ConfigError(
                f"{f.where('encoder_valid_num_quantizers')}={cfg.encoder_valid_num_quantizers} exceeds "
                f"encoder_config.num_quantizers={encoder.num_quantizers}"
            )
        return cfg

    @staticmethod
    def from_model_dir(model_dir: str | Path) -> Qwen3TTSTokenizerV2Config:
        """Read `<dir>/config.json` (`dir` is the speech_tokenizer folder)."""
        path = Path(model_dir) / CONFIG_FILE
        return Qwen3TTSTokenizerV2Config.from_dict(read_json(path), str(path))
