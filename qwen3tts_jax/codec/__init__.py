"""The 12 Hz speech tokenizer (`Qwen3TTSTokenizerV2Model`): config, key table, quantizer,
decoder and its streaming state, per-slot streams, streaming decoder (and the Mimi encoder)."""

from qwen3tts_jax.codec.config import DecoderConfig, MimiEncoderConfig, Qwen3TTSTokenizerV2Config
from qwen3tts_jax.codec.decoder import (
    Qwen3TTSTokenizerV2Decoder,
    chunked_decode,
    decode,
    decode_codes,
    init_state,
    prepare_params,
    stream_step,
)
from qwen3tts_jax.codec.quantizer import codebook_embedding, dequantize, nearest_code, residual_quantize
from qwen3tts_jax.codec.slots import CodecSlots
from qwen3tts_jax.codec.state import DecoderState
from qwen3tts_jax.codec.streaming import StreamingDecoder
from qwen3tts_jax.codec.weights import codec_entries, load_codec_params

__all__ = [
    "CodecSlots",
    "DecoderConfig",
    "DecoderState",
    "MimiEncoderConfig",
    "Qwen3TTSTokenizerV2Config",
    "Qwen3TTSTokenizerV2Decoder",
    "StreamingDecoder",
    "chunked_decode",
    "codebook_embedding",
    "codec_entries",
    "decode",
    "decode_codes",
    "dequantize",
    "init_state",
    "load_codec_params",
    "nearest_code",
    "prepare_params",
    "residual_quantize",
    "stream_step",
]
