"""Client errors as the server reports them: an HTTP status and an OpenAI-shaped JSON body
`{"error": {"message", "type", "param", "code"}}` whose `param` names the request field at fault.

No reference class. The Python API already refuses bad input with a ValueError that names the
argument in its own spelling (`text[0]: ...`, `Unsupported speaker(s) ...`, `top_p must be ...`);
`from_value_error` maps that spelling to the request field (`input`, `voice`, `top_p`), so the
server adds no second copy of the API's checks.
"""

from __future__ import annotations

import re

# The API's argument names → the request fields that carry them.
_ALIASES = {
    "text": "input",
    "speaker": "voice",
    "instruct": "instructions",
    "voice_clone_prompt": "voice",
    "ref_audio": "ref_audio",
    "x_vector_only_mode": "x_vector_only_mode",
}
# Fields whose names the API's messages begin with (longest first: `subtalker_top_p` before `top_p`).
_FIELDS = sorted(
    [
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
        "min_new_tokens",
        "language",
        "ref_text",
        "ref_audio",
        "text",
        "speaker",
        "instruct",
        "voice_clone_prompt",
        "x_vector_only_mode",
    ],
    key=len,
    reverse=True,
)
_LEAD = re.compile(r"^(?:unsupported\s+)?([a-z_]+)(?:\(s\))?(?:\[\d+\])?\b", re.IGNORECASE)


class ApiError(Exception):
    """An error the client caused (4xx) or a state of the server (503), with the field it names."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}}


def param_of(message: str, default: str | None = None) -> str | None:
    """The request field a Python-API error message is about, or `default`."""
    m = _LEAD.match(message.strip())
    if m and m.group(1).lower() in _FIELDS:
        name = m.group(1).lower()
        return _ALIASES.get(name, name)
    if re.match(r"^request '[^']*': (a prompt|its text track)", message):  # the engine's fit check
        return "input"
    if "needs a '" in message and "model" in message:  # `_require`: the wrong model kind
        return "task_type"
    return default


def from_value_error(err: Exception, default: str | None = None) -> ApiError:
    message = str(err)
    return ApiError(400, message, param_of(message, default))


def unavailable(message: str, kind: str = "server_unavailable") -> ApiError:
    return ApiError(503, message, None, kind)
