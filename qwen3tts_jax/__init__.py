"""qwen3tts-jax: Qwen3-TTS (12 Hz family) in JAX/Flax.

Public API (the names of the official `qwen_tts` package):

    from qwen3tts_jax import Qwen3TTSModel, Qwen3TTSTokenizer, VoiceClonePromptItem

The functional layer underneath (configs, modules, key tables, the compiled decoder) lives in
the submodules: `config`, `talker`, `code_predictor`, `speaker_encoder`, `codec`, `generate`,
`sampling`, `prompt`, `text`, `weights`.
"""

from qwen3tts_jax.api import Qwen3TTSModel
from qwen3tts_jax.prompt import VoiceClonePromptItem
from qwen3tts_jax.speech_tokenizer import Qwen3TTSTokenizer

__version__ = "0.1.0"
__all__ = ["Qwen3TTSModel", "Qwen3TTSTokenizer", "VoiceClonePromptItem", "__version__"]
