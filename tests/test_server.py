"""The speech server (`qwen3tts_jax/server/`), started for real: uvicorn on a free loopback port
over tiny random models, driven over HTTP (httpx, the `openai` SDK) and once through the
`qwen3tts-jax serve` command in a subprocess.

What the server sends is compared with the Python API on the same model and arguments (greedy):
bit for bit with `stream_*` (the same engine chunking: first chunk 1 frame, then 4), and with
`generate_*` to one 16-bit step (its codec runs in other push sizes: float differences ~1e-6).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from server_harness import (
    GREEDY,
    SETTINGS,
    free_port,
    metric,
    model,
    read_wav,
    reference_voice,
    running_server,
    s16,
    speak,
    wait_healthy,
)

CUSTOM, BASE = "random:tiny", "random:tiny-base"
MAX_NEW = 24


@pytest.fixture(scope="module")
def custom_server():
    with running_server(CUSTOM) as server:
        yield server


@pytest.fixture(scope="module")
def voices_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("voices")


@pytest.fixture(scope="module")
def base_server(voices_dir):
    with running_server(BASE, voices_dir=str(voices_dir)) as server:
        yield server


@pytest.fixture(scope="module")
def ref_wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "reference.wav"
    reference_voice(path)
    return path


def _stream_api(m, method: str, *args, **kw) -> np.ndarray:
    return s16(np.concatenate([c for c, _ in getattr(m, method)(*args, **kw)]))


# ---------------------------------------------------------------------- service endpoints


@pytest.mark.slow
def test_health_models_and_preset_voices(custom_server):
    url, service = custom_server
    health = httpx.get(f"{url}/health").json()
    assert (
        health["status"] == "ok" and health["slots"] == SETTINGS["max_batch"] and health["task_type"] == "CustomVoice"
    )
    # The warm-up stepped every row bucket (1 and 2 of the 2 slots), so none compiles mid-stream.
    assert service.engine.row_buckets == [1, 2] and set(service.engine.rows_stepped) == {1, 2}
    (entry,) = httpx.get(f"{url}/v1/models").json()["data"]
    assert entry["id"] == CUSTOM and entry["task_type"] == "CustomVoice" and "english" in entry["languages"]
    voices = httpx.get(f"{url}/v1/audio/voices").json()
    assert voices == {"voices": model(CUSTOM).get_supported_speakers(), "uploaded_voices": []}
    page = httpx.get(f"{url}/")
    assert (
        page.status_code == 200 and 'id="speak"' in page.text and httpx.get(f"{url}/static/app.js").status_code == 200
    )


# ---------------------------------------------------------------------- same audio as the Python API

# (text, voice, language, response_format, stream_format): every format, both streaming kinds.
CASES = [
    ("Hello there, this is the server.", "ryan", "english", "wav", None),
    ("A second voice speaks now.", "serena", "auto", "pcm", None),
    ("Third, in a lossless file.", "vivian", "auto", "flac", None),
    ("Fourth, streamed as events.", "aiden", "english", "pcm", "sse"),
    ("Fifth, streamed as a live wave file.", "eric", "auto", "wav", "audio"),
    ("Sixth, streamed as raw samples.", "dylan", "auto", "pcm", "audio"),
]
# Sent between them: each must fail alone, before any work, and leave the batch as it was.
INTRUDERS = [
    ({"input": "x", "voice": "nobody"}, 400),
    ({"input": "x", "temperature": -1.0}, 422),
    ({"input": "x", "ref_audio": "data:audio/wav;base64,AAAA"}, 400),
]


@pytest.mark.slow
def test_staggered_concurrent_requests_equal_the_python_api(custom_server):
    url, service = custom_server
    m = model(CUSTOM)
    bodies = [
        {
            "input": t,
            "voice": v,
            "language": lang,
            "response_format": f,
            "max_new_tokens": MAX_NEW,
            **GREEDY,
            **({"stream": True, "stream_format": s} if s else {}),
        }
        for t, v, lang, f, s in CASES
    ]
    sampled = {
        "input": "A sampled companion.",
        "voice": "sohee",
        "seed": 11,
        "temperature": 0.8,
        "top_k": 30,
        "subtalker_temperature": 0.7,
        "max_new_tokens": MAX_NEW,
        "response_format": "pcm",
    }
    jobs = bodies + [sampled, sampled]
    results: dict[int, object] = {}
    refused: list[tuple[int, dict]] = []

    def client(i: int) -> None:
        time.sleep(0.25 * i)  # staggered arrivals: later requests join a running batch
        try:
            results[i] = speak(url, jobs[i])
        except BaseException as err:  # reported below
            results[i] = err

    def intruder() -> None:
        for body, _status in INTRUDERS:
            time.sleep(0.4)
            r = httpx.post(f"{url}/v1/audio/speech", json=body, timeout=60)
            refused.append((r.status_code, r.json()))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(jobs))] + [
        threading.Thread(target=intruder)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert [s for s, _ in refused] == [s for _, s in INTRUDERS], refused
    for i, (text, voice, lang, fmt, stream) in enumerate(CASES):
        got = results[i]
        assert not isinstance(got, BaseException), f"case {i}: {got!r}"
        pcm, meta = got
        kw = dict(language=lang, max_new_tokens=MAX_NEW, **GREEDY)
        want = _stream_api(m, "stream_custom_voice", text, voice, **kw)
        np.testing.assert_array_equal(pcm, want, err_msg=f"case {i} ({fmt}, {stream}) vs stream_custom_voice")
        offline = s16(m.generate_custom_voice(text, voice, **kw)[0][0])
        assert len(offline) == len(pcm) and np.abs(offline.astype(int) - pcm).max() <= 1, (
            f"case {i} vs generate_custom_voice"
        )
        if meta:
            assert meta["frames"] * 1920 == len(pcm) and meta["finish_reason"] in ("stop", "length"), meta
    a, b = results[len(CASES)], results[len(CASES) + 1]
    np.testing.assert_array_equal(a[0], b[0], err_msg="one seed, same audio in company")
    assert len(a[0]) > 0


def test_openai_sdk_speech_create(custom_server):
    openai = pytest.importorskip("openai")
    url, _ = custom_server
    text, voice = CASES[0][0], CASES[0][1]
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    extra = {"max_new_tokens": MAX_NEW, "language": "english", **GREEDY}
    whole = client.audio.speech.create(model=CUSTOM, voice=voice, input=text, response_format="wav", extra_body=extra)
    want = _stream_api(model(CUSTOM), "stream_custom_voice", text, voice, **extra)
    np.testing.assert_array_equal(read_wav(whole.content), want)
    with client.audio.speech.with_streaming_response.create(
        model=CUSTOM, voice=voice, input=text, response_format="pcm", stream_format="audio", extra_body=extra
    ) as r:
        streamed = np.frombuffer(b"".join(r.iter_bytes()), "<i2")
    np.testing.assert_array_equal(streamed, want)


# ---------------------------------------------------------------------- bad requests

LONG = " ".join(["word"] * 80)  # over the test server's 48 input tokens
BAD = [
    (b'{"input": "hi",', 422, None),  # malformed JSON
    (b"[1, 2]", 422, None),
    ({"voice": "ryan"}, 422, "input"),
    ({"input": ""}, 422, "input"),
    ({"input": "   "}, 422, "input"),
    ({"input": LONG, "long_form": "off"}, 400, "input"),
    ({"input": "hi", "colour": "blue"}, 422, "colour"),
    ({"input": "hi", "voice": "nobody"}, 400, "voice"),
    ({"input": "hi", "model": "tts-1"}, 400, "model"),
    ({"input": "hi", "response_format": "mp3"}, 400, "response_format"),
    ({"input": "hi", "speed": 1.5}, 400, "speed"),
    ({"input": "hi", "stream": True, "stream_format": "websocket"}, 400, "stream_format"),
    ({"input": "hi", "stream": True, "response_format": "flac"}, 400, "response_format"),
    ({"input": "hi", "task_type": "Base"}, 400, "task_type"),
    ({"input": "hi", "task_type": "Singing"}, 400, "task_type"),
    ({"input": "hi", "language": "klingon"}, 400, "language"),
    ({"input": "hi", "ref_audio": "data:audio/wav;base64,UklGRg=="}, 400, "ref_audio"),
    ({"input": "hi", "x_vector_only_mode": True}, 400, "x_vector_only_mode"),
    ({"input": "hi", "temperature": 0}, 422, "temperature"),
    ({"input": "hi", "top_p": 1.5}, 422, "top_p"),
    ({"input": "hi", "top_k": -1}, 422, "top_k"),
    ({"input": "hi", "subtalker_top_k": 2.5}, 422, "subtalker_top_k"),
    ({"input": "hi", "repetition_penalty": 0}, 422, "repetition_penalty"),
    ({"input": "hi", "max_new_tokens": 0}, 422, "max_new_tokens"),
    ({"input": "hi", "max_new_tokens": 100000}, 400, "max_new_tokens"),
    ({"input": "hi", "seed": -1}, 422, "seed"),
    ({"input": "hi", "seed": 2**32}, 422, "seed"),
    ({"input": "hi", "do_sample": "yes"}, 422, "do_sample"),
    ({"input": "hi", "top_k": "5"}, 422, "top_k"),
    (b'{"input": "hi", "temperature": NaN}', 422, "temperature"),
]


@pytest.mark.parametrize("body,status,param", BAD, ids=[f"{i}-{p}" for i, (_, _, p) in enumerate(BAD)])
def test_bad_requests_get_a_json_error_naming_the_field(custom_server, body, status, param):
    url, service = custom_server
    before = service.in_flight
    if isinstance(body, bytes):
        r = httpx.post(f"{url}/v1/audio/speech", content=body, headers={"Content-Type": "application/json"})
    else:
        r = httpx.post(f"{url}/v1/audio/speech", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json" and "Traceback" not in r.text
    err = r.json()["error"]
    assert err["param"] == param and err["code"] == status and err["message"], err
    if param:
        assert param in err["message"], err  # the message names the field too
    assert service.in_flight == before  # refused before admission's end: no ticket kept


def test_unknown_route_and_method_are_json_errors(custom_server):
    url, _ = custom_server
    r = httpx.get(f"{url}/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    r = httpx.delete(f"{url}/v1/audio/voices/nobody")
    assert r.status_code == 404 and r.json()["error"]["param"] == "name"
    r = httpx.post(f"{url}/v1/audio/voices", files={"audio_sample": ("a.wav", b"RIFF")}, data={"name": "x"})
    assert r.status_code == 400 and "Base model" in r.json()["error"]["message"]


# ---------------------------------------------------------------------- load: 503 and disconnects


def _open_stream(url: str, text: str) -> tuple[httpx.Client, httpx.Response]:
    client = httpx.Client(timeout=120)
    body = {
        "input": text,
        "voice": "ryan",
        "stream": True,
        "stream_format": "audio",
        "response_format": "pcm",
        "max_new_tokens": SETTINGS["max_new_tokens"],
        **GREEDY,
    }
    return client, client.send(client.build_request("POST", f"{url}/v1/audio/speech", json=body), stream=True)


def _wait(predicate, what: str, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_full_server_503_and_a_disconnect_frees_the_slot(custom_server, caplog):
    caplog.set_level(logging.INFO, logger="qwen3tts_jax.server")
    url, service = custom_server
    capacity = SETTINGS["max_batch"] + SETTINGS["max_queue"]
    cancelled0 = metric(url, "qwen3tts_requests_total", {"finish_reason": "cancelled"})
    finished0 = sum(metric(url, "qwen3tts_requests_total", {"finish_reason": r}) for r in ("stop", "length"))
    streams = []
    try:
        for i in range(capacity):
            streams.append(_open_stream(url, f"Long stream number {i} holds its place."))
            assert streams[-1][1].status_code == 200
        _wait(lambda: service.engine.active == SETTINGS["max_batch"], "both slots busy")
        full = httpx.post(f"{url}/v1/audio/speech", json={"input": "One too many.", "voice": "ryan"})
        assert full.status_code == 503 and full.json()["error"]["type"] == "server_overloaded", full.text
        assert metric(url, "qwen3tts_queue_depth") == SETTINGS["max_queue"]
        assert metric(url, "qwen3tts_active_slots") == SETTINGS["max_batch"]
        first = streams[0][1]
        assert len(next(first.iter_raw())) > 0  # running: audio arrives
        first.close()  # the client goes away mid-stream
        streams[0][0].close()
        # Its slot is taken by the first waiting request, while the other long one still runs.
        # (The iterator is kept: a dropped httpx iterator closes its connection, which the
        # server would see as this client going away too.)
        third = streams[SETTINGS["max_batch"]][1].iter_raw()
        assert len(next(third)) > 0
        assert metric(url, "qwen3tts_requests_total", {"finish_reason": "cancelled"}) == cancelled0 + 1
        assert (
            sum(metric(url, "qwen3tts_requests_total", {"finish_reason": r}) for r in ("stop", "length")) == finished0
        )
    finally:
        for client, r in streams:
            r.close()
            client.close()
    _wait(lambda: service.in_flight == 0 and service.engine.idle, "every cancelled request to end")
    assert metric(url, "qwen3tts_requests_total", {"finish_reason": "cancelled"}) == cancelled0 + capacity
    # The engine stops a cancelled row at its next step: at most one advance (one frame under the
    # server's loop) after the cancel reached it.
    cancelled = [r.getMessage() for r in caplog.records if "finish=cancelled" in r.getMessage()]
    lags = [int(m.split("after_cancel=+")[1].split()[0]) for m in cancelled if "after_cancel=" in m]
    assert len(cancelled) == capacity and len(lags) >= SETTINGS["max_batch"] + 1, cancelled  # 2 ran, 1 took a slot
    assert max(lags) <= service.engine.advance_frames == 1, lags
    print(f"[server] frames made after a cancel: {lags}")
    pcm, meta = speak(
        url, {"input": CASES[1][0], "voice": CASES[1][1], "response_format": "pcm", "max_new_tokens": MAX_NEW, **GREEDY}
    )
    want = _stream_api(model(CUSTOM), "stream_custom_voice", CASES[1][0], CASES[1][1], max_new_tokens=MAX_NEW, **GREEDY)
    np.testing.assert_array_equal(pcm, want)  # the next request runs, unaffected


def test_metrics_are_prometheus_text(custom_server):
    url, _ = custom_server
    speak(url, {"input": "Count me.", "voice": "ryan", "max_new_tokens": 6, **GREEDY})
    assert (
        metric(url, "qwen3tts_requests_total", {"finish_reason": "length"})
        + metric(url, "qwen3tts_requests_total", {"finish_reason": "stop"})
        >= 1
    )
    assert metric(url, "qwen3tts_frames_total") >= 5
    assert metric(url, "qwen3tts_time_to_first_audio_seconds_count") >= 1
    assert metric(url, "qwen3tts_rejected_requests_total", {"cause": "invalid"}) >= 1
    text = httpx.get(f"{url}/metrics").text
    for name in (
        "qwen3tts_queue_depth",
        "qwen3tts_active_slots",
        "qwen3tts_compiling_requests",
        "qwen3tts_frames_per_second",
        "qwen3tts_time_to_first_audio_seconds_bucket",
    ):
        assert f"\n{name}" in text, name


# ---------------------------------------------------------------------- voices on a Base model


def _upload(url: str, path: Path, name: str, ref_text: str | None = None, **extra) -> httpx.Response:
    data = {"name": name, **({"ref_text": ref_text} if ref_text is not None else {}), **extra}
    return httpx.post(
        f"{url}/v1/audio/voices",
        files={"audio_sample": (path.name, path.read_bytes(), "audio/wav")},
        data=data,
        timeout=600,
    )


REF_TEXT = "These are the words of the reference."
CLONE_TEXT = "A cloned voice says this."


@pytest.mark.slow
def test_voices_upload_list_speak_delete_and_survive_a_restart(base_server, voices_dir, ref_wav):
    url, service = base_server
    m = model(BASE)
    r = _upload(url, ref_wav, "alice", REF_TEXT)
    assert r.status_code == 200, r.text
    assert r.json()["voice"]["name"] == "alice" and not r.json()["voice"]["x_vector_only"]
    assert _upload(url, ref_wav, "bob").status_code == 200  # no transcript: x-vector only
    listed = httpx.get(f"{url}/v1/audio/voices").json()
    assert listed["voices"] == []
    by_name = {v["name"]: v for v in listed["uploaded_voices"]}
    assert sorted(by_name) == ["alice", "bob"] and by_name["alice"]["ref_text"] == REF_TEXT
    assert by_name["bob"]["x_vector_only"] and by_name["bob"]["ref_text"] is None and by_name["alice"]["created_at"] > 0
    assert sorted(p.name for p in voices_dir.iterdir()) == [
        "alice.safetensors",
        "bob.safetensors",
    ]  # no temp files left

    kw = dict(max_new_tokens=MAX_NEW, **GREEDY)
    alice, meta = speak(url, {"input": CLONE_TEXT, "voice": "alice", "response_format": "wav", **kw})
    want = _stream_api(m, "stream_voice_clone", CLONE_TEXT, ref_audio=str(ref_wav), ref_text=REF_TEXT, **kw)
    np.testing.assert_array_equal(alice, want, err_msg="uploaded ICL voice vs stream_voice_clone(ref_audio=file)")
    assert meta["frames"] * 1920 == len(alice)
    bob, _ = speak(url, {"input": CLONE_TEXT, "voice": "bob", "response_format": "pcm", "stream": True, **kw})
    want = _stream_api(m, "stream_voice_clone", CLONE_TEXT, ref_audio=str(ref_wav), x_vector_only_mode=True, **kw)
    np.testing.assert_array_equal(
        bob, want, err_msg="uploaded x-vector voice vs stream_voice_clone(x_vector_only_mode)"
    )
    # One-off cloning from a data URL of the same file: the same voice as the upload.
    url_audio = "data:audio/wav;base64," + base64.b64encode(ref_wav.read_bytes()).decode()
    oneoff, _ = speak(
        url,
        {
            "input": CLONE_TEXT,
            "voice": "anything",
            "ref_audio": url_audio,
            "ref_text": REF_TEXT,
            "response_format": "pcm",
            **kw,
        },
    )
    np.testing.assert_array_equal(oneoff, alice)

    # A restart over the same folder reloads both voices; deleting removes the file.
    with running_server(BASE, voices_dir=str(voices_dir)) as (url2, _):
        assert sorted(v["name"] for v in httpx.get(f"{url2}/v1/audio/voices").json()["uploaded_voices"]) == [
            "alice",
            "bob",
        ]
        again, _ = speak(url2, {"input": CLONE_TEXT, "voice": "alice", "response_format": "pcm", **kw})
        np.testing.assert_array_equal(again, alice)
        assert httpx.delete(f"{url2}/v1/audio/voices/bob").status_code == 200
        assert httpx.delete(f"{url2}/v1/audio/voices/bob").status_code == 404
        r = httpx.post(f"{url2}/v1/audio/speech", json={"input": "hi", "voice": "bob"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "voice"
    assert sorted(p.name for p in voices_dir.iterdir()) == ["alice.safetensors"]
    assert httpx.delete(f"{url}/v1/audio/voices/bob").status_code == 200  # the first server still had it in memory


@pytest.mark.parametrize("case", ["duplicate", "bad-name", "not-audio", "unknown-field", "no-file", "too-long"])
def test_bad_voice_uploads(base_server, ref_wav, tmp_path, case):
    url, _ = base_server
    if case == "duplicate":
        assert _upload(url, ref_wav, "dup").status_code == 200
        r, status, param = _upload(url, ref_wav, "dup"), 409, "name"
    elif case == "bad-name":
        r, status, param = _upload(url, ref_wav, "../escape"), 400, "name"
    elif case == "not-audio":
        junk = tmp_path / "junk.wav"
        junk.write_bytes(b"this is not audio at all" * 10)
        r, status, param = _upload(url, junk, "junk"), 400, "audio_sample"
    elif case == "unknown-field":
        r, status, param = _upload(url, ref_wav, "x", colour="blue"), 422, "colour"
    elif case == "no-file":
        r, status, param = httpx.post(f"{url}/v1/audio/voices", data={"name": "x"}), 422, "audio_sample"
    else:
        long_wav = tmp_path / "long.wav"
        reference_voice(long_wav, seconds=SETTINGS["max_ref_seconds"] + 1)
        r, status, param = _upload(url, long_wav, "long"), 400, "audio_sample"
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param and "Traceback" not in r.text


@pytest.mark.parametrize(
    "body,param",
    [
        ({"input": "hi"}, "voice"),
        ({"input": "hi", "voice": "nobody"}, "voice"),
        ({"input": "hi", "ref_audio": "/etc/passwd"}, "ref_audio"),
        ({"input": "hi", "ref_audio": "http://127.0.0.1:1/a.wav"}, "ref_audio"),
        ({"input": "hi", "ref_audio": "data:audio/wav;base64,bm90IGF1ZGlv"}, "ref_audio"),
        ({"input": "hi", "ref_audio": "data:audio/wav;base64,@@@"}, "ref_audio"),
        ({"input": "hi", "instructions": "calm"}, "instructions"),
        ({"input": "hi", "task_type": "CustomVoice"}, "task_type"),
    ],
)
def test_bad_base_requests(base_server, ref_wav, body, param):
    url, _ = base_server
    r = httpx.post(f"{url}/v1/audio/speech", json=body, timeout=120)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_icl_ref_audio_needs_ref_text(base_server, ref_wav):
    url, _ = base_server
    url_audio = "data:audio/wav;base64," + base64.b64encode(ref_wav.read_bytes()).decode()
    r = httpx.post(f"{url}/v1/audio/speech", json={"input": "hi", "ref_audio": url_audio}, timeout=300)
    assert r.status_code == 400 and r.json()["error"]["param"] == "ref_text", r.text


# ---------------------------------------------------------------------- the serve command


def _serve(model: str, args: list[str], while_up=None) -> str:
    """`qwen3tts-jax serve --model MODEL ARGS` in its own process: waits until /health is 200, calls
    `while_up(url, the 503 bodies seen while it started)`, stops it with SIGTERM and returns its
    log (stderr) after checking it exited 0."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    cmd = [sys.executable, "-m", "qwen3tts_jax.cli", "serve", "--model", model, "--port", str(port), *args]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        seen = wait_healthy(url)
        if while_up is not None:
            while_up(url, seen)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    return err


@pytest.mark.slow
def test_serve_command_reloads_voices_answers_and_stops_on_sigterm(base_server, voices_dir, ref_wav, tmp_path):
    """`qwen3tts-jax serve` in its own process: 503 with a reason while it starts, the voices of
    the folder reloaded, the same audio as the in-process server, one log line per request, and
    a clean exit on SIGTERM."""
    url, _ = base_server
    folder = tmp_path / "voices"
    folder.mkdir()
    assert _upload(url, ref_wav, "carol", REF_TEXT).status_code == 200
    (folder / "carol.safetensors").write_bytes((voices_dir / "carol.safetensors").read_bytes())
    body = {"input": CLONE_TEXT, "voice": "carol", "response_format": "pcm", "max_new_tokens": MAX_NEW, **GREEDY}
    want, _ = speak(url, body)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in SETTINGS.items()]

    def check(sub: str, seen: list[dict]) -> None:
        assert seen and all(s["status"] == "loading" and s["reason"] for s in seen), seen
        assert [v["name"] for v in httpx.get(f"{sub}/v1/audio/voices").json()["uploaded_voices"]] == ["carol"]
        got, _ = speak(sub, body)
        np.testing.assert_array_equal(got, want)

    err = _serve(BASE, ["--voices-dir", str(folder), *flags], check)
    lines = [line for line in err.splitlines() if " request speech-" in line]
    assert len(lines) == 1 and "voice=carol" in lines[0] and f"frames={len(want) // 1920}" in lines[0], err
    assert "ttfa=" in lines[0] and "rt=" in lines[0] and ("finish=length" in lines[0] or "finish=stop" in lines[0]), (
        lines
    )
    assert "Traceback" not in err, err


@pytest.mark.slow
def test_serve_command_restarts_from_the_persistent_compilation_cache(tmp_path):
    """`serve --compile-cache DIR` twice on a fresh folder: the first start compiles its warm-up
    programs and writes them there, the second reads every one of them back and compiles none
    (the warm-up log line counts them)."""
    cache = tmp_path / "cache"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in SETTINGS.items()]

    def start() -> tuple[int, int, int]:
        err = _serve(CUSTOM, ["--compile-cache", str(cache), *flags])
        assert f"compilation cache: {cache}" in err, err[-3000:]
        m = re.search(r"warm-up: .*?(\d+) programs: (\d+) from the persistent cache, (\d+) compiled", err)
        assert m, err[-3000:]
        return int(m.group(1)), int(m.group(2)), int(m.group(3))

    programs, hits, compiled = start()
    assert programs > 0 and hits == 0 and compiled == programs and any(cache.iterdir())
    assert start() == (programs, programs, 0)


@pytest.mark.slow
def test_serve_command_that_cannot_load_exits_2():
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "qwen3tts_jax.cli",
            "serve",
            "--model",
            "random:no-such-model",
            "--port",
            str(free_port()),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "random:no-such-model" in proc.stderr and "Traceback" not in proc.stderr, (
        proc.stderr
    )
    proc = subprocess.run(
        [sys.executable, "-m", "qwen3tts_jax.cli", "serve", "--model", CUSTOM, "--max-batch", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "--max-batch must be an integer >= 1, got 0" in proc.stderr, proc.stderr
