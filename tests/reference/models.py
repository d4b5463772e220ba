"""Tiny (and full-size) reference models built from the official `qwen_tts` classes.

Every tensor is initialised here, seeded, at a scale where it matters: the library's own init
leaves norms at exactly 1 and biases at 0, which would hide a missing weight or bias in a parity
test. Models are saved with `save_pretrained` into the released folder layout and loaded back by
our code.
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

import torch  # noqa: E402

LANGUAGES = {
    "chinese": 2055,
    "english": 2050,
    "german": 2053,
    "italian": 2070,
    "portuguese": 2071,
    "spanish": 2054,
    "japanese": 2058,
    "korean": 2064,
    "french": 2061,
    "russian": 2069,
    "beijing_dialect": 2074,
    "sichuan_dialect": 2062,
}
SPEAKERS = {
    "aiden": [2861],
    "sohee": [2864],
    "ono_anna": [2873],
    "eric": [2875],
    "dylan": [2878],
    "uncle_fu": [3010],
    "ryan": [3061],
    "vivian": [3065],
    "serena": [3066],
}
DIALECTS = {"eric": "sichuan_dialect", "dylan": "beijing_dialect"}
GENERATION_CONFIG = {
    "do_sample": True,
    "repetition_penalty": 1.05,
    "temperature": 0.9,
    "top_p": 1.0,
    "top_k": 50,
    "subtalker_dosample": True,
    "subtalker_temperature": 0.9,
    "subtalker_top_p": 1.0,
    "subtalker_top_k": 50,
    "max_new_tokens": 8192,
}


def config_dict(
    tts_model_type: str = "base",
    *,
    hidden: int = 64,
    predictor_hidden: int = 64,
    layers: int = 3,
    predictor_layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    head_dim: int = 16,
    intermediate: int = 96,
    text_hidden: int = 48,
    text_vocab: int = 151936,
    size: str | None = None,
    speaker_channels: tuple[int, ...] = (32, 32, 32, 32, 96),
) -> dict:
    """A config.json in the released layout, at a tiny size. `predictor_hidden != hidden` gives
    the 1.7B shape (with `small_to_mtp_projection`); `kv_heads == heads` gives MHA."""
    size = size or ("0b6" if predictor_hidden == hidden else "1b7")
    custom = tts_model_type == "custom_voice"
    return {
        "architectures": ["Qwen3TTSForConditionalGeneration"],
        "model_type": "qwen3_tts",
        "tokenizer_type": "qwen3_tts_tokenizer_12hz",
        "tts_model_size": size,
        "tts_model_type": tts_model_type,
        "im_start_token_id": 151644,
        "im_end_token_id": 151645,
        "assistant_token_id": 77091,
        "tts_pad_token_id": 151671,
        "tts_bos_token_id": 151672,
        "tts_eos_token_id": 151673,
        "speaker_encoder_config": {
            "enc_dim": hidden,
            "sample_rate": 24000,
            "enc_channels": list(speaker_channels),
            "enc_attention_channels": 16,
            "enc_se_channels": 16,
            "enc_res2net_scale": 4,
        },
        "talker_config": {
            "attention_bias": False,
            "head_dim": head_dim,
            "hidden_act": "silu",
            "hidden_size": hidden,
            "intermediate_size": intermediate,
            "max_position_embeddings": 32768,
            "num_attention_heads": heads,
            "num_code_groups": 16,
            "num_hidden_layers": layers,
            "num_key_value_heads": kv_heads,
            "position_id_per_seconds": 13,
            "rms_norm_eps": 1e-06,
            "rope_scaling": {"interleaved": True, "mrope_section": _mrope_section(head_dim), "rope_type": "default"},
            "rope_theta": 1000000,
            "text_hidden_size": text_hidden,
            "text_vocab_size": text_vocab,
            "vocab_size": 3072,
            "codec_bos_id": 2149,
            "codec_eos_token_id": 2150,
            "codec_pad_id": 2148,
            "codec_think_id": 2154,
            "codec_nothink_id": 2155,
            "codec_think_bos_id": 2156,
            "codec_think_eos_id": 2157,
            "codec_language_id": dict(LANGUAGES),
            "spk_id": dict(SPEAKERS) if custom else {},
            "spk_is_dialect": {k: DIALECTS.get(k, False) for k in SPEAKERS} if custom else {},
            "code_predictor_config": {
                "attention_bias": False,
                "head_dim": head_dim,
                "hidden_act": "silu",
                "hidden_size": predictor_hidden,
                "intermediate_size": intermediate,
                "max_position_embeddings": 65536,
                "num_attention_heads": heads,
                "num_code_groups": 16,
                "num_hidden_layers": predictor_layers,
                "num_key_value_heads": kv_heads,
                "rms_norm_eps": 1e-06,
                "rope_theta": 1000000,
                "vocab_size": 2048,
                "rope_scaling": None,
                "layer_types": ["full_attention"] * predictor_layers,
            },
        },
    }


def _mrope_section(head_dim: int) -> list[int]:
    """Scale the released [24, 20, 20] (head_dim 128) to a tiny head_dim, summing to head_dim/2."""
    half = head_dim // 2
    a = half * 24 // 64
    b = (half - a) // 2
    return [a, b, half - a - b]


def fullsize_config_dict(tts_model_type: str = "base", size: str = "0b6") -> dict:
    """The released config.json (architecture part), reconstructed."""
    big = size == "1b7"
    cfg = config_dict(
        tts_model_type,
        hidden=2048 if big else 1024,
        predictor_hidden=1024,
        layers=28,
        predictor_layers=5,
        heads=16,
        kv_heads=8,
        head_dim=128,
        intermediate=6144 if big else 3072,
        text_hidden=2048,
        size=size,
    )
    cfg["speaker_encoder_config"] = {"enc_dim": 2048 if big else 1024, "sample_rate": 24000}
    cfg["talker_config"]["code_predictor_config"]["intermediate_size"] = 3072
    return cfg


def reference_config(cfg: dict):
    """The official `Qwen3TTSConfig`, eager attention everywhere (exact numerics)."""
    from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSConfig

    config = Qwen3TTSConfig(**copy.deepcopy(cfg))
    for c in (config, config.talker_config, config.talker_config.code_predictor_config, config.speaker_encoder_config):
        c._attn_implementation = "eager"
    return config


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int, scale: float = 1.0) -> torch.nn.Module:
    """Seeded init of every parameter so each branch matters: matrices ~ N(0, 1/fan_in), norm /
    scale vectors ~ 1 + 0.1·N, biases ~ 0.1·N, embeddings ~ N(0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(module.named_parameters()):
        if p.ndim >= 2:
            fan_in = math.prod(p.shape[1:])
            std = 1.0 if "embedding" in name else scale / math.sqrt(fan_in)
            p.copy_(torch.randn(p.shape, generator=gen) * std)
        elif name.endswith("bias"):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        else:
            p.copy_(1.0 + torch.randn(p.shape, generator=gen) * 0.1)
    return module


def build_reference_model(cfg: dict, seed: int = 0):
    """`Qwen3TTSForConditionalGeneration` with seeded random weights, fp32, eval mode."""
    from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSForConditionalGeneration

    torch.manual_seed(seed)
    model = Qwen3TTSForConditionalGeneration(reference_config(cfg)).float().eval()
    return randomize_(model, seed)


def save_reference_model(model, out_dir: Path, generation_config: dict | None = None) -> Path:
    """`save_pretrained` in the released layout (+ generation_config.json)."""
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    cfg_path = out_dir / "config.json"
    data = json.loads(cfg_path.read_text())
    # save_pretrained writes "model_type": "" into speaker_encoder_config, which the official
    # loader then refuses; the released files have no such key.
    data.get("speaker_encoder_config", {}).pop("model_type", None)
    cfg_path.write_text(json.dumps(data, indent=2))
    (out_dir / "generation_config.json").write_text(json.dumps(generation_config or GENERATION_CONFIG, indent=2))
    return out_dir


# Tiny variants used across the suite: both head layouts (GQA/MHA), both predictor shapes (0.6B:
# same width, no projection; 1.7B: narrower predictor behind small_to_mtp_projection), and the
# three model types.
TINY_VARIANTS = {
    "base-0b6-gqa": dict(tts_model_type="base"),
    "base-1b7-mha": dict(tts_model_type="base", predictor_hidden=32, kv_heads=4, layers=2),
    "custom-0b6-gqa": dict(tts_model_type="custom_voice", kv_heads=1),
    "custom-1b7-gqa": dict(tts_model_type="custom_voice", predictor_hidden=48, heads=6, kv_heads=3, head_dim=8),
    "design-1b7-gqa": dict(tts_model_type="voice_design", predictor_hidden=32),
}


def meta_state_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Key → shape of the reference model's state_dict, built on the meta device (no memory)."""
    from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSForConditionalGeneration

    with torch.device("meta"):
        model = Qwen3TTSForConditionalGeneration(reference_config(cfg))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def write_sparse_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], dtype: str = "BF16") -> Path:
    """A valid safetensors file with the given keys/shapes whose data is all zeros, written as a
    sparse file: full-size checkpoints for header-level tools (inspect) at no disk or time cost."""
    size = {"BF16": 2, "F16": 2, "F32": 4}[dtype]
    header, offset = {}, 0
    for key in sorted(shapes):
        n = math.prod(shapes[key]) * size
        header[key] = {"dtype": dtype, "shape": list(shapes[key]), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little"))
        fh.write(raw)
        fh.truncate(8 + len(raw) + offset)
    return path
