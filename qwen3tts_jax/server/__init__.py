"""The speech server: Qwen3-TTS behind an OpenAI-compatible `/v1/audio/speech` (plus vllm-omni's
extensions), on the continuous-batching engine. `qwen3tts-jax serve` starts it; `create_app`
builds the FastAPI app over a `SpeechService` for embedding or tests.

Needs the `serve` extra (`pip install 'qwen3tts-jax[serve]'`): FastAPI, uvicorn, python-multipart.
"""

from qwen3tts_jax.server.settings import ServerConfig

__all__ = ["ServerConfig", "create_app", "SpeechService"]


def __getattr__(name):
    # The FastAPI-dependent parts load on use, so `qwen3tts-jax --help` works without the extra.
    if name == "create_app":
        from qwen3tts_jax.server.app import create_app

        return create_app
    if name == "SpeechService":
        from qwen3tts_jax.server.service import SpeechService

        return SpeechService
    raise AttributeError(name)
