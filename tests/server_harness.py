"""Shared set-up of the server tests (`test_server.py`, `test_server_browser.py`): the real app
under uvicorn on a free loopback port, in a thread of the test process, and readers of what it
sends. The settings of each model kind are fixed here, so every server of a kind in one pytest
process has the same engine shape and reuses the programs the first one compiled."""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import json
import socket
import struct
import threading
import time

import httpx
import numpy as np

from qwen3tts_jax import Qwen3TTSModel
from qwen3tts_jax.server import ServerConfig, SpeechService, create_app

GREEDY = dict(do_sample=False, subtalker_dosample=False)
# Small limits: a tiny engine (2 slots, 768 KV positions) that compiles fast; room for 8 clients at once.
# Long-form segments are then at most 48 text tokens (bytes: the random models' tokenizer is byte-level).
SETTINGS = dict(
    max_batch=2, max_queue=6, max_input_tokens=48, max_new_tokens=300, max_ref_seconds=4.0, max_input_chars=600
)
START_TIMEOUT_S = 900  # load + compile + warm-up on a loaded 2-core machine


@functools.cache
def model(name: str) -> Qwen3TTSModel:
    return Qwen3TTSModel.from_pretrained(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(name: str, **overrides):
    """`(base_url, service)` of a started, warmed-up server over `model(name)`."""
    import uvicorn

    service = SpeechService(ServerConfig(name, **{**SETTINGS, **overrides}), model(name))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, service)
        yield url, service
    finally:
        server.should_exit = True
        thread.join(60)
        assert not thread.is_alive(), "uvicorn did not stop"


def wait_healthy(url: str, service=None, timeout: float = START_TIMEOUT_S) -> list[dict]:
    """Poll /health until 200; returns the 503 bodies seen on the way."""
    seen, t0 = [], time.monotonic()
    while time.monotonic() - t0 < timeout:
        if service is not None and service.state == "failed":
            raise RuntimeError(f"server failed to start: {service.reason}")
        try:
            r = httpx.get(f"{url}/health", timeout=5)
        except httpx.TransportError:
            time.sleep(0.5)
            continue
        if r.status_code == 200:
            return seen
        assert r.status_code == 503, r.text
        seen.append(r.json())
        time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout} s")


# ---------------------------------------------------------------------- reading responses


def s16(audio: np.ndarray) -> np.ndarray:
    from qwen3tts_jax.server.audio_formats import to_s16

    return to_s16(audio)


def read_wav(data: bytes, open_length: bool = False) -> np.ndarray:
    """PCM16 mono 24 kHz WAV bytes → int16 samples, checking the header field by field."""
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt " and data[36:40] == b"data", data[:44]
    fmt = struct.unpack("<IHHIIHH", data[16:36])
    assert fmt == (16, 1, 1, 24000, 48000, 2, 16), fmt
    riff, size = struct.unpack("<I", data[4:8])[0], struct.unpack("<I", data[40:44])[0]
    if open_length:
        assert riff == size == 0xFFFFFFFF, (riff, size)
    else:
        assert size == len(data) - 44 and riff == 36 + size, (riff, size, len(data))
    return np.frombuffer(data[44:], "<i2")


def read_flac(data: bytes) -> np.ndarray:
    import soundfile as sf

    audio, sr = sf.read(io.BytesIO(data), dtype="int16")
    assert sr == 24000 and audio.ndim == 1
    return audio


def read_sse(lines: list[str]) -> tuple[np.ndarray, dict]:
    """SSE lines → (int16 samples of the deltas, the final event)."""
    events = [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]
    assert events and all(e["type"] == "speech.audio.delta" for e in events[:-1]), [e["type"] for e in events]
    pcm = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    return np.frombuffer(pcm, "<i2"), events[-1]


def decode(fmt: str, stream: str | None, response: httpx.Response, body: bytes | list[str]) -> tuple[np.ndarray, dict]:
    """Samples and metadata (finish reason, frames) of one response of any format/stream kind."""
    if stream == "sse":
        pcm, done = read_sse(body)
        assert done["type"] == "speech.audio.done", done
        return pcm, {"finish_reason": done["usage"]["finish_reason"], "frames": done["usage"]["frames"]}
    if stream == "audio":
        pcm = read_wav(body, open_length=True) if fmt == "wav" else np.frombuffer(body, "<i2")
        return pcm, {}
    meta = {"finish_reason": response.headers["x-finish-reason"], "frames": int(response.headers["x-frames"])}
    pcm = {"wav": read_wav, "flac": read_flac, "pcm": lambda d: np.frombuffer(d, "<i2")}[fmt](body)
    return pcm, meta


def speak(url: str, body: dict, timeout: float = 600) -> tuple[np.ndarray, dict]:
    """POST /v1/audio/speech and read the whole answer, whatever its format; asserts 200."""
    fmt = body.get("response_format", "wav")
    stream = (body.get("stream_format") or "sse") if body.get("stream") or body.get("stream_format") else None
    with httpx.Client(timeout=timeout) as client, client.stream("POST", f"{url}/v1/audio/speech", json=body) as r:
        if r.status_code != 200:
            r.read()
            raise AssertionError(f"{r.status_code}: {r.text}")
        content = [line for line in r.iter_lines() if line] if stream == "sse" else r.read()
        return decode(fmt, stream, r, content)


def reference_voice(path, seconds: float = 1.6, sr: int = 16000, seed: int = 0) -> None:
    """A voice-like test recording (harmonics of a gliding pitch, syllable-rate envelope, a little
    noise) at 16 kHz, so the 24 kHz resampling is exercised too."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    wav = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)) ** 2
    wav = 0.25 * wav / np.abs(wav).max() + 0.005 * rng.standard_normal(len(t))
    sf.write(str(path), wav.astype(np.float32), sr, subtype="PCM_16")


def metric(url: str, name: str, labels: dict | None = None) -> float:
    """One sample of /metrics (0.0 when the labelled series does not exist yet)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and (labels is None or all(sample.labels.get(k) == v for k, v in labels.items())):
                return sample.value
    return 0.0
