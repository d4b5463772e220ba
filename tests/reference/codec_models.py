"""Tiny (and full-size) reference speech tokenizers built from the official `qwen_tts` classes.

`codec_config_dict(**sizes)` is a `speech_tokenizer/config.json` in the released layout at a tiny
size (same structure: 16 decoder quantizers with a split RVQ, 32 Mimi quantizers of which 16 are
kept, 8-layer-style stacks shrunk to 2, sliding window 72 kept so T=100 crosses it, 64 samples per
frame by default). `fullsize_codec_config_dict()` is the released file. `build_reference_tokenizer`
initialises EVERY tensor itself, seeded: the library init leaves codebooks at zero and layer
scales at 0.01, which would hide those paths from a parity test.

The dict helpers do not import torch, so JAX-only tests may use them.
"""

from __future__ import annotations

import copy
import json
import math
import sys
from pathlib import Path

STUBS = str(Path(__file__).parent / "stubs")
if STUBS not in sys.path:
    sys.path.insert(0, STUBS)

REAL_UPSAMPLE_RATES = (8, 5, 4, 3)


def codec_config_dict(
    *,
    # decoder
    hidden: int = 32,
    intermediate: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 4,
    head_dim: int = 8,
    codebook_dim: int = 32,
    latent_dim: int = 32,
    decoder_dim: int = 64,
    sliding_window: int = 72,
    upsample_rates: tuple[int, ...] = (2, 2, 2, 2),
    upsampling_ratios: tuple[int, ...] = (2, 2),
    codebook_size: int = 2048,
    num_quantizers: int = 16,
    # encoder (Mimi)
    enc_hidden: int = 32,
    enc_filters: int = 4,
    enc_layers: int = 2,
    enc_heads: int = 4,
    enc_head_dim: int = 8,
    enc_intermediate: int = 64,
    enc_ratios: tuple[int, ...] = (4, 2, 2, 2),
    enc_codebook_dim: int = 16,
    enc_num_quantizers: int = 32,
) -> dict:
    """A speech_tokenizer config.json in the released layout, at a tiny size.

    Rates stay consistent as the reference assumes: decode_upsample_rate =
    prod(upsample_rates + upsampling_ratios), encode_downsample_rate = prod(enc_ratios) * 2.
    `upsample_rates=REAL_UPSAMPLE_RATES` gives the released 1920 samples per frame.
    """
    decode_rate = math.prod(upsample_rates) * math.prod(upsampling_ratios)
    hop = math.prod(enc_ratios)
    return {
        "architectures": ["Qwen3TTSTokenizerV2Model"],
        "model_type": "qwen3_tts_tokenizer_12hz",
        "encoder_valid_num_quantizers": num_quantizers,
        "input_sample_rate": 24000,
        "output_sample_rate": 24000,
        "decode_upsample_rate": decode_rate,
        "encode_downsample_rate": hop * 2,
        "encoder_config": {
            "_frame_rate": 24000 / (hop * 2),
            "audio_channels": 1,
            "codebook_dim": enc_codebook_dim,
            "codebook_size": codebook_size,
            "compress": 2,
            "dilation_growth_rate": 2,
            "head_dim": enc_head_dim,
            "hidden_act": "gelu",
            "hidden_size": enc_hidden,
            "intermediate_size": enc_intermediate,
            "kernel_size": 7,
            "last_kernel_size": 3,
            "layer_scale_initial_scale": 0.01,
            "max_position_embeddings": 8000,
            "model_type": "mimi",
            "norm_eps": 1e-05,
            "num_attention_heads": enc_heads,
            "num_filters": enc_filters,
            "num_hidden_layers": enc_layers,
            "num_key_value_heads": enc_heads,
            "num_quantizers": enc_num_quantizers,
            "num_residual_layers": 1,
            "num_semantic_quantizers": 1,
            "pad_mode": "constant",
            "residual_kernel_size": 3,
            "rope_theta": 10000.0,
            "sampling_rate": 24000,
            "sliding_window": 250,
            "trim_right_ratio": 1.0,
            "upsample_groups": enc_hidden,
            "upsampling_ratios": list(enc_ratios),
            "use_cache": False,
            "use_causal_conv": True,
            "use_conv_shortcut": False,
            "vector_quantization_hidden_dimension": enc_codebook_dim,
        },
        "decoder_config": {
            "attention_bias": False,
            "attention_dropout": 0.0,
            "codebook_dim": codebook_dim,
            "codebook_size": codebook_size,
            "decoder_dim": decoder_dim,
            "head_dim": head_dim,
            "hidden_act": "silu",
            "hidden_size": hidden,
            "intermediate_size": intermediate,
            "latent_dim": latent_dim,
            "layer_scale_initial_scale": 0.01,
            "max_position_embeddings": 8000,
            "num_attention_heads": heads,
            "num_hidden_layers": layers,
            "num_key_value_heads": kv_heads,
            "num_quantizers": num_quantizers,
            "rms_norm_eps": 1e-05,
            "rope_theta": 10000,
            "sliding_window": sliding_window,
            "upsample_rates": list(upsample_rates),
            "upsampling_ratios": list(upsampling_ratios),
            # present in the released JSON, read by no code
            "semantic_codebook_size": 4096,
            "num_semantic_quantizers": 1,
            "vector_quantization_hidden_dimension": codebook_dim,
        },
    }


def fullsize_codec_config_dict() -> dict:
    """The released speech_tokenizer/config.json (architecture part), section 6.1."""
    cfg = codec_config_dict(
        hidden=512,
        intermediate=1024,
        layers=8,
        heads=16,
        kv_heads=16,
        head_dim=64,
        codebook_dim=512,
        latent_dim=1024,
        decoder_dim=1536,
        sliding_window=72,
        upsample_rates=REAL_UPSAMPLE_RATES,
        upsampling_ratios=(2, 2),
        codebook_size=2048,
        num_quantizers=16,
        enc_hidden=512,
        enc_filters=64,
        enc_layers=8,
        enc_heads=8,
        enc_head_dim=64,
        enc_intermediate=2048,
        enc_ratios=(8, 6, 5, 4),
        enc_codebook_dim=256,
        enc_num_quantizers=32,
    )
    cfg["encoder_config"]["upsample_groups"] = 512
    cfg["decoder_config"]["vector_quantization_hidden_dimension"] = 512
    return cfg


def reference_tokenizer_config(cfg: dict):
    """The official `Qwen3TTSTokenizerV2Config` with eager attention on every sub-config (the
    top-level `attn_implementation` does not reach them)."""
    from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Config

    config = Qwen3TTSTokenizerV2Config(**copy.deepcopy(cfg))
    for c in (config, config.encoder_config, config.decoder_config):
        c._attn_implementation = "eager"
    return config


def randomize_codec_(model, seed: int, usage_clamped: int = 4):
    """Seeded init of every parameter and float buffer of a `Qwen3TTSTokenizerV2Model`.

    * conv / linear weights ~ N(0, 1/fan_in) with the true fan-in (ConvTranspose1d: in·k/stride),
      biases ~ 0.1·N;
    * norm weights, layer scales, ConvNeXt gamma ~ 1 + 0.1·N (unit scale: the 0.01 / 1e-6 init
      would hide the residual branches); norm biases ~ 0.1·N;
    * SnakeBeta alpha, beta (log space) ~ 0.2·N: exp(·) ≈ 1, non-zero;
    * codebooks: centroids E ~ N(0, 1), cluster_usage ~ U(0.5, 2), sum = E · usage; in every
      codebook `usage_clamped` entries get usage 1e-7 (below the 1e-5 clamp) with a small sum, so
      the clamp path is exercised; encoder `initialized` flags stay 1;
    * the waveform decoder's residual-unit `conv2` weights ×0.3 and its last conv ×0.2, so the
      output stays mostly inside the final clamp (std ≈ 0.4, ~1-6 % of samples clamped).
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=gen)
    snake_names = set()
    with torch.no_grad():
        for mname, mod in model.named_modules():
            if type(mod).__name__ == "SnakeBeta":
                snake_names.update({f"{mname}.alpha", f"{mname}.beta"})
        transposed = {f"{n}.weight": m for n, m in model.named_modules() if isinstance(m, torch.nn.ConvTranspose1d)}
        convs = {f"{n}.weight": m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv1d)}
        tensors = dict(model.named_parameters())
        tensors.update(dict(model.named_buffers()))
        codebooks: dict[str, dict[str, torch.Tensor]] = {}
        for name in sorted(tensors):
            t = tensors[name]
            if not t.is_floating_point() or name.endswith(".initialized") or name.endswith("inv_freq"):
                continue
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("cluster_usage", "embedding_sum", "embed_sum"):
                codebooks.setdefault(name.rsplit(".", 1)[0], {})[leaf] = t
            elif name in snake_names:
                t.copy_(randn(t.shape) * 0.2)
            elif name in transposed:
                m = transposed[name]
                t.copy_(randn(t.shape) / math.sqrt(m.in_channels * m.kernel_size[0] / m.stride[0]))
            elif name in convs:
                m = convs[name]
                t.copy_(randn(t.shape) / math.sqrt(m.in_channels // m.groups * m.kernel_size[0]))
            elif t.ndim >= 2:
                t.copy_(randn(t.shape) / math.sqrt(math.prod(t.shape[1:])))
            elif leaf == "bias":
                t.copy_(randn(t.shape) * 0.1)
            else:  # norm weights, layer scales, gamma
                t.copy_(1.0 + randn(t.shape) * 0.1)
        for prefix in sorted(codebooks):
            fields = codebooks[prefix]
            usage = fields["cluster_usage"]
            total = fields.get("embedding_sum", fields.get("embed_sum"))
            u = 0.5 + 1.5 * torch.rand(usage.shape, generator=gen)
            idx = torch.randperm(usage.shape[0], generator=gen)[:usage_clamped]
            u[idx] = 1e-7
            centroids = randn(total.shape)
            s = centroids * u[:, None]
            s[idx] = centroids[idx] * 1e-6  # E = sum / 1e-5 = 0.1·N: finite, clamp-dependent
            usage.copy_(u)
            total.copy_(s)
        # Keep the waveform mostly inside the final clamp to [-1, 1] (a saturated output would
        # compare equal whatever came before): without this each decoder block's three residual
        # units roughly triple the signal (std ≈ 60 at the output).
        decoder = getattr(model, "decoder", None)
        if decoder is not None and hasattr(decoder, "decoder"):
            for name, t in decoder.decoder.named_parameters():
                if name.endswith("conv2.conv.weight"):
                    t.mul_(0.3)
            decoder.decoder[-1].conv.weight.mul_(0.2)
    return model


def build_reference_tokenizer(cfg: dict, seed: int = 0):
    """`Qwen3TTSTokenizerV2Model` with every tensor seeded, fp32, eval mode, eager attention."""
    import torch
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Model

    torch.manual_seed(seed)
    model = Qwen3TTSTokenizerV2Model(reference_tokenizer_config(cfg)).float().eval()
    return randomize_codec_(model, seed)


PREPROCESSOR_CONFIG = {
    "chunk_length_s": None,
    "feature_extractor_type": "EncodecFeatureExtractor",
    "feature_size": 1,
    "overlap": None,
    "padding_side": "right",
    "padding_value": 0.0,
    "return_attention_mask": True,
    "sampling_rate": 24000,
}


def save_reference_tokenizer(model, out_dir: Path) -> Path:
    """Write the released `speech_tokenizer/` layout: config.json, model.safetensors and the
    preprocessor_config.json that `Qwen3TTSTokenizer.from_pretrained` hands to
    `AutoFeatureExtractor` (an `EncodecFeatureExtractor`)."""
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    pre = dict(PREPROCESSOR_CONFIG, sampling_rate=int(model.config.input_sample_rate))
    (out_dir / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    return out_dir


def reference_state_numel(model) -> int:
    """Parameters + persistent buffers, i.e. what `state_dict()` holds (170,557,441 at release)."""
    return sum(t.numel() for t in model.state_dict().values())
