"""The key table of the speech tokenizer's `model.safetensors` (encoder AND decoder).

Mirrors the state_dict of `Qwen3TTSTokenizerV2Model`: `encoder.*` is a transformers `MimiModel`
without its decoder half, `decoder.*` is `Qwen3TTSTokenizerV2Decoder`. Built with the machinery
of `qwen3tts_jax.weights` (same `Entry`, same `flax_path` naming: `layers.3.x` → `layers_3/x`),
so a load checks every key both ways and names the file, key and shapes on any mismatch.

* Conv weights keep torch layout: Conv1d `(out, in/groups, k)`, ConvTranspose1d `(in, out, k)`.
* RVQ codebook accumulators (`embedding_sum` / `embed_sum`, `cluster_usage`) stay fp32 whatever
  the load dtype: `E = sum / clamp(usage, 1e-5)` must not be divided in bf16.
* Explicitly not loaded: the encoder codebooks' `initialized` flags (always 1 in a trained
  model), the non-persistent buffers a file may still hold (`rotary_emb.inv_freq`, MimiConv1d
  `stride` / `kernel_size` / `padding_total`), and the decoder quantizers' `input_proj`
  (present in the file, used only for encoding, which the decoder never does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qwen3tts_jax.codec.config import DecoderConfig, MimiEncoderConfig, Qwen3TTSTokenizerV2Config
from qwen3tts_jax.weights import Checkpoint, Entry, conv1d, conv_transpose1d, linear, load_tree, vector

__all__ = [
    "CODEC_IGNORED",
    "codec_entries",
    "decoder_entries",
    "encoder_entries",
    "load_codec_params",
]

# Keys a tokenizer file may hold that are deliberately not loaded (see the module docstring).
CODEC_IGNORED: tuple[str, ...] = (
    r"encoder\.quantizer\.[a-z_]+_residual_vector_quantizer\.layers\.\d+\.codebook\.initialized",
    r"decoder\.quantizer\.rvq_(first|rest)\.input_proj\.weight",
    r".*\.rotary_emb\.inv_freq",
    r"encoder\..*\.(stride|kernel_size|padding_total)",
)


def _codebook(prefix: str, size: int, dim: int, sum_name: str) -> list[Entry]:
    return [
        Entry(f"{prefix}.cluster_usage", (size,), keep_fp32=True),
        Entry(f"{prefix}.{sum_name}", (size, dim), keep_fp32=True),
    ]


# --------------------------------------------------------------------------------------------
# Decoder (`Qwen3TTSTokenizerV2Decoder`)
# --------------------------------------------------------------------------------------------


def decoder_entries(cfg: DecoderConfig, prefix: str = "decoder") -> list[Entry]:
    p = prefix
    cd, vd, size = cfg.codebook_dim, cfg.codebook_vector_dim, cfg.codebook_size
    entries: list[Entry] = []
    # quantizer (`SplitResidualVectorQuantizer`, force_projection=True: both projections exist)
    for group, n in (("rvq_first", 1), ("rvq_rest", cfg.num_quantizers - 1)):
        q = f"{p}.quantizer.{group}"
        entries += conv1d(f"{q}.output_proj", cd, vd, 1, bias=False)
        for j in range(n):
            entries += _codebook(f"{q}.vq.layers.{j}._codebook", size, vd, "embedding_sum")
    entries += conv1d(f"{p}.pre_conv.conv", cfg.latent_dim, cd, 3)
    # pre-transformer (`Qwen3TTSTokenizerV2DecoderTransformerModel`)
    t, d, b = f"{p}.pre_transformer", cfg.hidden_size, cfg.attention_bias
    hx, kx = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    entries += linear(f"{t}.input_proj", d, cfg.latent_dim, bias=True)
    for i in range(cfg.num_hidden_layers):
        lp = f"{t}.layers.{i}"
        a = f"{lp}.self_attn"
        entries += [
            *linear(f"{a}.q_proj", hx, d, b),
            *linear(f"{a}.k_proj", kx, d, b),
            *linear(f"{a}.v_proj", kx, d, b),
        ]
        entries += linear(f"{a}.o_proj", d, hx, b)
        entries += linear(f"{lp}.mlp.gate_proj", cfg.intermediate_size, d)
        entries += linear(f"{lp}.mlp.up_proj", cfg.intermediate_size, d)
        entries += linear(f"{lp}.mlp.down_proj", d, cfg.intermediate_size)
        entries += [vector(f"{lp}.input_layernorm.weight", d), vector(f"{lp}.post_attention_layernorm.weight", d)]
        entries += [vector(f"{lp}.self_attn_layer_scale.scale", d), vector(f"{lp}.mlp_layer_scale.scale", d)]
    entries += [vector(f"{t}.norm.weight", d)]
    entries += linear(f"{t}.output_proj", cfg.latent_dim, d, bias=True)
    # upsamplers: [CausalTransConvNet(k=s=factor), ConvNeXtBlock]
    ld = cfg.latent_dim
    for i, factor in enumerate(cfg.upsampling_ratios):
        u = f"{p}.upsample.{i}"
        entries += conv_transpose1d(f"{u}.0.conv", ld, ld, factor)
        c = f"{u}.1"
        entries += [vector(f"{c}.gamma", ld), *conv1d(f"{c}.dwconv.conv", ld, ld, 7, groups=ld)]
        entries += [vector(f"{c}.norm.weight", ld), vector(f"{c}.norm.bias", ld)]
        entries += [*linear(f"{c}.pwconv1", 4 * ld, ld, bias=True), *linear(f"{c}.pwconv2", ld, 4 * ld, bias=True)]
    # waveform decoder
    w = f"{p}.decoder"
    entries += conv1d(f"{w}.0.conv", cfg.decoder_dim, ld, 7)
    for i, rate in enumerate(cfg.upsample_rates):
        cin, cout = cfg.block_dims(i)
        blk = f"{w}.{i + 1}.block"
        entries += [vector(f"{blk}.0.alpha", cin), vector(f"{blk}.0.beta", cin)]
        entries += conv_transpose1d(f"{blk}.1.conv", cin, cout, 2 * rate)
        for u in (2, 3, 4):  # residual units with dilations 1, 3, 9
            r = f"{blk}.{u}"
            for act in ("act1", "act2"):
                entries += [vector(f"{r}.{act}.alpha", cout), vector(f"{r}.{act}.beta", cout)]
            entries += conv1d(f"{r}.conv1.conv", cout, cout, 7)
            entries += conv1d(f"{r}.conv2.conv", cout, cout, 1)
    n = len(cfg.upsample_rates)
    entries += [vector(f"{w}.{n + 1}.alpha", cfg.output_dim), vector(f"{w}.{n + 1}.beta", cfg.output_dim)]
    entries += conv1d(f"{w}.{n + 2}.conv", 1, cfg.output_dim, 7)
    return entries


# --------------------------------------------------------------------------------------------
# Encoder (transformers `MimiModel` minus upsample / decoder_transformer / decoder)
# --------------------------------------------------------------------------------------------


def seanet_layers(cfg: MimiEncoderConfig) -> list[tuple[str, tuple]]:
    """The `MimiEncoder.layers` list as `(kind, args)`: ("conv", (cin, cout, k, stride)),
    ("resnet", (dim, hidden, ((k, dilation), (1, 1)))), ("elu", ()). Index i is `layers.i`."""
    layers: list[tuple[str, tuple]] = [("conv", (cfg.audio_channels, cfg.num_filters, cfg.kernel_size, 1))]
    scale = 1
    for ratio in reversed(cfg.upsampling_ratios):
        dim = scale * cfg.num_filters
        for j in range(cfg.num_residual_layers):
            dil = cfg.dilation_growth_rate**j
            layers.append(("resnet", (dim, dim // cfg.compress, ((cfg.residual_kernel_size, dil), (1, 1)))))
        layers.append(("elu", ()))
        layers.append(("conv", (dim, dim * 2, ratio * 2, ratio)))
        scale *= 2
    layers.append(("elu", ()))
    layers.append(("conv", (scale * cfg.num_filters, cfg.hidden_size, cfg.last_kernel_size, 1)))
    return layers


def encoder_entries(cfg: MimiEncoderConfig, prefix: str = "encoder") -> list[Entry]:
    p = prefix
    entries: list[Entry] = []
    for i, (kind, args) in enumerate(seanet_layers(cfg)):
        lp = f"{p}.encoder.layers.{i}"
        if kind == "conv":
            cin, cout, k, _ = args
            entries += conv1d(f"{lp}.conv", cout, cin, k)
        elif kind == "resnet":
            dim, hidden, ((k, _), _) = args
            entries += conv1d(f"{lp}.block.1.conv", hidden, dim, k)
            entries += conv1d(f"{lp}.block.3.conv", dim, hidden, 1)
            if cfg.use_conv_shortcut:
                entries += conv1d(f"{lp}.shortcut.conv", dim, dim, 1)
    t, d, b = f"{p}.encoder_transformer", cfg.hidden_size, cfg.attention_bias
    hx, kx = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    for i in range(cfg.num_hidden_layers):
        lp = f"{t}.layers.{i}"
        a = f"{lp}.self_attn"
        entries += [
            *linear(f"{a}.q_proj", hx, d, b),
            *linear(f"{a}.k_proj", kx, d, b),
            *linear(f"{a}.v_proj", kx, d, b),
        ]
        entries += linear(f"{a}.o_proj", d, hx, b)
        entries += [
            *linear(f"{lp}.mlp.fc1", cfg.intermediate_size, d),
            *linear(f"{lp}.mlp.fc2", d, cfg.intermediate_size),
        ]
        for norm in ("input_layernorm", "post_attention_layernorm"):
            entries += [vector(f"{lp}.{norm}.weight", d), vector(f"{lp}.{norm}.bias", d)]
        entries += [vector(f"{lp}.self_attn_layer_scale.scale", d), vector(f"{lp}.mlp_layer_scale.scale", d)]
    if cfg.has_downsample:
        entries += conv1d(f"{p}.downsample.conv", d, d, cfg.downsample_kernel_size, bias=False)
    vq = cfg.vector_quantization_hidden_dimension
    for group, n in (("semantic", cfg.num_semantic_quantizers), ("acoustic", cfg.num_acoustic_quantizers)):
        q = f"{p}.quantizer.{group}_residual_vector_quantizer"
        if cfg.uses_quantizer_projections:
            entries += conv1d(f"{q}.input_proj", vq, d, 1, bias=False)
            entries += conv1d(f"{q}.output_proj", d, vq, 1, bias=False)
        for j in range(n):
            entries += _codebook(f"{q}.layers.{j}.codebook", cfg.codebook_size, cfg.codebook_dim, "embed_sum")
    return entries


def codec_entries(cfg: Qwen3TTSTokenizerV2Config) -> list[Entry]:
    """Every tensor of a speech tokenizer's `model.safetensors`."""
    return encoder_entries(cfg.encoder) + decoder_entries(cfg.decoder)


def load_codec_params(
    model_dir: str | Path, dtype: Any = None, cfg: Qwen3TTSTokenizerV2Config | None = None, shardings: Any = None
) -> dict:
    """Load `<model_dir>/model.safetensors` → `{"encoder": ..., "decoder": ...}` param trees.

    `model_dir` is the speech_tokenizer folder (its config.json is read unless `cfg` is given).
    Floats are cast to `dtype` when given, except the codebook accumulators (kept fp32).
    `shardings`: place each tensor on a mesh as it is read (see `weights.load_tree`).
    """
    model_dir = Path(model_dir)
    cfg = cfg or Qwen3TTSTokenizerV2Config.from_model_dir(model_dir)
    ckpt = Checkpoint.open(model_dir)
    source = str(sorted(set(ckpt.files.values()))[0]) if ckpt.files else str(model_dir)
    tree = load_tree(ckpt, codec_entries(cfg), CODEC_IGNORED, dtype=dtype, source=source, shardings=shardings)
    return {"encoder": tree["encoder"], "decoder": tree["decoder"]}
