"""The request body of `POST /v1/audio/speech`: OpenAI's fields plus vllm-omni's extensions and the
sampling fields of the Python API, with their exact names.

Mirrors OpenAI's `CreateSpeechRequest` and vllm-omni's `OpenAICreateSpeechRequest`
(`vllm_omni/entrypoints/openai/protocol/audio.py`). Strict: an unknown field, a value of the
wrong type (`"1"` for an int, `1` for a bool) or a sampling value out of range is refused here
(422, the error names the field). `long_form` is our extension: vllm-omni's speech request has
no field for cutting long text (its splitter is an option of its WebSocket, `split_granularity`).
What depends on the served model (voice, language, task type, the server's limits) is checked by
the service against the model, with 400.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SEED_MAX = 2**32 - 1  # jax.random.PRNGKey keeps the low 32 bits without x64: larger seeds would alias


class SpeechRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    input: str = Field(description="the text to speak")
    model: str | None = Field(None, description="if given, the served model's id (GET /v1/models)")
    voice: str | None = Field(None, description="CustomVoice: a preset speaker; Base: an uploaded voice's name")
    response_format: str = Field("wav", description="wav | pcm (raw s16le 24 kHz mono) | flac")
    speed: float = Field(1.0, description="only 1.0 (the model has no rate control)")
    instructions: str | None = Field(
        None, description="style (CustomVoice 1.7B) or the voice description (VoiceDesign)"
    )
    language: str = Field("auto", description="auto or a language of GET /v1/models")
    task_type: str | None = Field(None, description="CustomVoice | VoiceDesign | Base (default: the model's)")
    ref_audio: str | None = Field(None, description="Base: one-off reference, a data:audio/...;base64, URL")
    ref_text: str | None = Field(None, description="Base: transcript of ref_audio (ICL); omit for x-vector only")
    x_vector_only_mode: bool = Field(False, description="Base: clone ref_audio from its speaker embedding only")
    max_new_tokens: int | None = Field(None, ge=1, description="frame budget (12.5 frames per second of audio)")
    seed: int | None = Field(None, ge=0, le=SEED_MAX, description="PRNG seed (the Python API's seed=)")
    do_sample: bool | None = None
    temperature: float | None = Field(None, gt=0.0)
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    repetition_penalty: float | None = Field(None, gt=0.0)
    subtalker_dosample: bool | None = None
    subtalker_temperature: float | None = Field(None, gt=0.0)
    subtalker_top_k: int | None = Field(None, ge=0)
    subtalker_top_p: float | None = Field(None, gt=0.0, le=1.0)
    stream: bool = Field(False, description="stream the audio as it is generated")
    stream_format: str | None = Field(None, description="sse (default when streaming) | audio (raw chunked)")
    long_form: Literal["auto", "on", "off"] | None = Field(
        None,
        description="cut the input into sentence segments, each its own run, joined: on | off | auto (on when the "
        "input is longer than one segment); default: the server's --long-form-default",
    )

    @field_validator("input")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be a non-empty text")
        return v

    def sampling_kwargs(self) -> dict:
        """The Python API's generation kwargs that the request sets (unset ones keep the model's
        generation_config defaults, as `generate_*` does)."""
        names = (
            "do_sample",
            "temperature",
            "top_k",
            "top_p",
            "repetition_penalty",
            "subtalker_dosample",
            "subtalker_temperature",
            "subtalker_top_k",
            "subtalker_top_p",
            "max_new_tokens",
            "seed",
        )
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}


FIELDS = tuple(SpeechRequest.model_fields)
