"""The released configurations (architecture part), for random-weight models and benchmarks.

Values are those of the released `config.json` / `speech_tokenizer/config.json` /
`generation_config.json` of the Qwen3-TTS 12 Hz family (see README, "Released configurations").
A model folder's own JSON always wins; these only build `random:<name>` models on machines
without the weights, and the `tiny` preset for fast smoke tests.
"""

from __future__ import annotations

import copy

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

# Random weights almost never sample the end-of-speech token, so a `random:` model would run to
# the released budget of 8192 tokens (11 minutes of audio; about an hour on a CPU at 0.6B). Its
# generation config gets this budget instead: 95 frames, 7.6 s of audio. `max_new_tokens=` wins.
RANDOM_MAX_NEW_TOKENS = 96


def random_generation_config() -> dict:
    """generation_config.json of a `random:` model: the released sampling values, a short budget."""
    return {**GENERATION_CONFIG, "max_new_tokens": RANDOM_MAX_NEW_TOKENS}


def model_config(tts_model_type: str, size: str) -> dict:
    """config.json of a released model: `tts_model_type` in base / custom_voice / voice_design,
    `size` in 0b6 / 1b7 (or "tiny": the same structure at toy width, for smoke tests)."""
    if size not in ("0b6", "1b7", "tiny"):
        raise ValueError(f"size={size!r}: expected '0b6', '1b7' or 'tiny'")
    if tts_model_type not in ("base", "custom_voice", "voice_design"):
        raise ValueError(f"tts_model_type={tts_model_type!r}: expected base, custom_voice or voice_design")
    tiny = size == "tiny"
    hidden = {"0b6": 1024, "1b7": 2048, "tiny": 64}[size]
    heads, kv, head_dim = (4, 2, 16) if tiny else (16, 8, 128)
    cp_hidden = 64 if tiny else 1024
    custom = tts_model_type == "custom_voice"
    return {
        "architectures": ["Qwen3TTSForConditionalGeneration"],
        "model_type": "qwen3_tts",
        "tokenizer_type": "qwen3_tts_tokenizer_12hz",
        "tts_model_size": "0b6" if tiny else size,
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
            **(
                {
                    "enc_channels": [32, 32, 32, 32, 96],
                    "enc_attention_channels": 16,
                    "enc_se_channels": 16,
                    "enc_res2net_scale": 4,
                }
                if tiny
                else {}
            ),
        },
        "talker_config": {
            "attention_bias": False,
            "head_dim": head_dim,
            "hidden_act": "silu",
            "hidden_size": hidden,
            "intermediate_size": 96 if tiny else 3 * hidden,
            "max_position_embeddings": 32768,
            "num_attention_heads": heads,
            "num_code_groups": 16,
            "num_hidden_layers": 3 if tiny else 28,
            "num_key_value_heads": kv,
            "position_id_per_seconds": 13,
            "rms_norm_eps": 1e-06,
            "rope_scaling": {
                "interleaved": True,
                "mrope_section": [3, 2, 3] if tiny else [24, 20, 20],
                "rope_type": "default",
            },
            "rope_theta": 1000000,
            "text_hidden_size": 48 if tiny else 2048,
            "text_vocab_size": 151936,
            "vocab_size": 3072,
            "codec_bos_id": 2149,
            "codec_eos_token_id": 2150,
            "codec_pad_id": 2148,
            "codec_think_id": 2154,
            "codec_nothink_id": 2155,
            "codec_think_bos_id": 2156,
            "codec_think_eos_id": 2157,
            "codec_language_id": dict(LANGUAGES),
            "spk_id": copy.deepcopy(SPEAKERS) if custom else {},
            "spk_is_dialect": {k: DIALECTS.get(k, False) for k in SPEAKERS} if custom else {},
            "code_predictor_config": {
                "attention_bias": False,
                "head_dim": head_dim,
                "hidden_act": "silu",
                "hidden_size": cp_hidden,
                "intermediate_size": 96 if tiny else 3072,
                "max_position_embeddings": 65536,
                "num_attention_heads": heads,
                "num_code_groups": 16,
                "num_hidden_layers": 2 if tiny else 5,
                "num_key_value_heads": kv,
                "rms_norm_eps": 1e-06,
                "rope_theta": 1000000,
                "vocab_size": 2048,
                "rope_scaling": None,
                "layer_types": ["full_attention"] * (2 if tiny else 5),
            },
        },
    }


def tokenizer_config(tiny: bool = False) -> dict:
    """speech_tokenizer/config.json: the released 12 Hz tokenizer (or a toy-width one, 1920
    samples per frame kept so audio lengths are real)."""
    w = lambda full, small: small if tiny else full
    return {
        "architectures": ["Qwen3TTSTokenizerV2Model"],
        "model_type": "qwen3_tts_tokenizer_12hz",
        "encoder_valid_num_quantizers": 16,
        "input_sample_rate": 24000,
        "output_sample_rate": 24000,
        "decode_upsample_rate": 1920,
        "encode_downsample_rate": 1920,
        "encoder_config": {
            "_frame_rate": 12.5,
            "audio_channels": 1,
            "codebook_dim": w(256, 16),
            "codebook_size": 2048,
            "compress": 2,
            "dilation_growth_rate": 2,
            "head_dim": w(64, 8),
            "hidden_act": "gelu",
            "hidden_size": w(512, 32),
            "intermediate_size": w(2048, 64),
            "kernel_size": 7,
            "last_kernel_size": 3,
            "layer_scale_initial_scale": 0.01,
            "max_position_embeddings": 8000,
            "model_type": "mimi",
            "norm_eps": 1e-05,
            "num_attention_heads": w(8, 4),
            "num_filters": w(64, 4),
            "num_hidden_layers": w(8, 2),
            "num_key_value_heads": w(8, 4),
            "num_quantizers": 32,
            "num_residual_layers": 1,
            "num_semantic_quantizers": 1,
            "pad_mode": "constant",
            "residual_kernel_size": 3,
            "rope_theta": 10000.0,
            "sampling_rate": 24000,
            "sliding_window": 250,
            "trim_right_ratio": 1.0,
            "upsample_groups": w(512, 32),
            "upsampling_ratios": [8, 6, 5, 4],
            "use_cache": False,
            "use_causal_conv": True,
            "use_conv_shortcut": False,
            "vector_quantization_hidden_dimension": w(256, 16),
        },
        "decoder_config": {
            "attention_bias": False,
            "attention_dropout": 0.0,
            "codebook_dim": w(512, 32),
            "codebook_size": 2048,
            "decoder_dim": w(1536, 64),
            "head_dim": w(64, 8),
            "hidden_act": "silu",
            "hidden_size": w(512, 32),
            "intermediate_size": w(1024, 64),
            "latent_dim": w(1024, 32),
            "layer_scale_initial_scale": 0.01,
            "max_position_embeddings": 8000,
            "num_attention_heads": w(16, 4),
            "num_hidden_layers": w(8, 2),
            "num_key_value_heads": w(16, 4),
            "num_quantizers": 16,
            "rms_norm_eps": 1e-05,
            "rope_theta": 10000,
            "sliding_window": 72,
            "upsample_rates": [8, 5, 4, 3],
            "upsampling_ratios": [2, 2],
            "semantic_codebook_size": 4096,
            "num_semantic_quantizers": 1,
            "vector_quantization_hidden_dimension": w(512, 32),
        },
    }


# `random:<name>` model names → (tts_model_type, size). The tiny ones are the released structure
# at toy width (hidden size 64); their config.json says size 0b6 (the loader knows no other).
RANDOM_MODELS = {
    "0.6b-base": ("base", "0b6"),
    "0.6b-customvoice": ("custom_voice", "0b6"),
    "1.7b-base": ("base", "1b7"),
    "1.7b-customvoice": ("custom_voice", "1b7"),
    "1.7b-voicedesign": ("voice_design", "1b7"),
    "tiny": ("custom_voice", "tiny"),
    "tiny-base": ("base", "tiny"),
    "tiny-voicedesign": ("voice_design", "tiny"),
}


def random_model_names() -> list[str]:
    return sorted("random:" + k for k in RANDOM_MODELS)


def describe_random_models() -> str:
    """One line per `random:` name (for --help and the README)."""
    kinds = {
        "base": "Base (voice clone)",
        "custom_voice": "CustomVoice (preset speakers)",
        "voice_design": "VoiceDesign",
    }
    sizes = {"0b6": "0.6B", "1b7": "1.7B", "tiny": "tiny (hidden 64, seconds to build)"}
    return "\n".join(f"  random:{k:<18} {kinds[t]}, {sizes[s]}" for k, (t, s) in sorted(RANDOM_MODELS.items()))
