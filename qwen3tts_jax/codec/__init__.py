"""The 12 Hz speech tokenizer (`Qwen3TTSTokenizerV2Model`): config, key table, quantizer,
decoder, streaming decoder (and the Mimi encoder)."""

from qwen3tts_jax.codec.config import DecoderConfig, MimiEncoderConfig, Qwen3TTSTokenizerV2Config
from qwen3tts_jax.codec.weights import codec_entries, load_codec_params

__all__ = ["DecoderConfig", "MimiEncoderConfig", "Qwen3TTSTokenizerV2Config", "codec_entries", "load_codec_params"]
