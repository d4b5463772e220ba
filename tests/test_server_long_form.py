"""Long text on the server (`long_form`): cut by the library's own plan, each segment its own
engine request in the running engine, joined by the library's join rule.

Compared with the Python API on the same model and arguments (greedy, budgets under the loop
guard's 50-frame minimum span, so every segment ends the same way whatever the chunking): the same
length and segments, and every sample within one 16-bit step of `stream_custom_voice(long_form=...)`
and `generate_custom_voice(long_form=...)`. Not bit for bit, unlike a plain request: the codec
decodes the rows that are due at one engine step together, in pieces chosen for the group
(`CodecSlots._schedule`), so a segment's pieces depend on its company — in the library, segments
admitted together run in step; here the pacer admits one per step and other clients join — and
pieces of other sizes differ by ~1e-6 in float (measured: 0.36 % of the s16 samples off by one).
"""

from __future__ import annotations

import json
import logging
import threading
import time

import httpx
import numpy as np
import pytest
from server_harness import GREEDY, SETTINGS, metric, model, running_server, s16, speak

from qwen3tts_jax.long_form import LongFormOptions
from qwen3tts_jax.segment import estimate_max_new_tokens, split_text
from qwen3tts_jax.server import ServerConfig

CUSTOM = "random:tiny"
SEGMENT_TOKENS = SETTINGS["max_input_tokens"]  # the server's default segment size under these limits
TEXT = (
    "The first sentence is short. The second one goes on a little longer!\n\n"
    "A new paragraph starts here; it ends soon. Done."
)
MAX_NEW = 16


@pytest.fixture(scope="module")
def server():
    with running_server(CUSTOM) as s:
        yield s


def _segments(text: str):
    m = model(CUSTOM)
    return split_text(
        text, "english", max_tokens=SEGMENT_TOKENS, count_tokens=lambda s: len(m.text_tokenizer.encode(s))
    )


def _post(url: str, body: dict) -> tuple[np.ndarray, httpx.Headers]:
    r = httpx.post(f"{url}/v1/audio/speech", json=body, timeout=600)
    assert r.status_code == 200, r.text
    return np.frombuffer(r.content, "<i2"), r.headers


def within_one_step(a: np.ndarray, b: np.ndarray, what: str) -> None:  # see the module docstring for why
    assert len(a) == len(b), f"{what}: {len(a)} vs {len(b)} samples"
    assert np.abs(a.astype(int) - b).max() <= 1, f"{what}: max diff {np.abs(a.astype(int) - b).max()}"


@pytest.mark.slow
def test_long_form_whole_and_streamed_equal_the_python_api(server, caplog):
    caplog.set_level(logging.INFO, logger="qwen3tts_jax.server")
    url, service = server
    m = model(CUSTOM)
    kw = dict(language="english", max_new_tokens=MAX_NEW, **GREEDY)
    body = {"input": TEXT, "voice": "ryan", "response_format": "pcm", **kw}  # long_form unset: auto (the default)
    jobs = [body, {**body, "stream": True, "stream_format": "audio"}, {**body, "stream": True, "stream_format": "sse"}]
    got: dict[int, object] = {}

    def client(i: int) -> None:  # at once: the segments of three requests share the two slots
        try:
            got[i] = _post(url, jobs[i]) if i == 0 else speak(url, jobs[i])
        except BaseException as err:  # reported below
            got[i] = err

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    for i in range(len(jobs)):
        assert not isinstance(got[i], BaseException), f"request {i}: {got[i]!r}"

    options = LongFormOptions(max_tokens=SEGMENT_TOKENS)
    want = s16(np.concatenate([c for c, _ in m.stream_custom_voice(TEXT, "ryan", long_form=options, **kw)]))
    offline = s16(m.generate_custom_voice(TEXT, "ryan", long_form=options, **kw)[0][0])
    reports = m.last_long_form[0]
    assert len(reports) >= 3 and [r.text for r in reports] == [s.text for s in _segments(TEXT)]

    whole, headers = got[0]

    within_one_step(whole, want, "whole pcm vs stream_custom_voice(long_form=...)")
    within_one_step(whole, offline, "whole pcm vs generate_custom_voice(long_form=...)")
    assert headers["x-segments"] == str(len(reports))
    assert headers["x-segment-finish-reasons"] == ",".join(r.finish_reason for r in reports)
    assert headers["x-frames"] == str(sum(r.frames for r in reports))
    assert headers["x-finish-reason"] == ("length" if any(r.finish_reason == "length" for r in reports) else "stop")
    raw, _ = got[1]
    within_one_step(raw, want, "streamed pcm vs stream_custom_voice(long_form=...)")
    sse, _ = got[2]
    within_one_step(sse, want, "SSE deltas vs stream_custom_voice(long_form=...)")

    # The SSE done event says how each segment ended (speak's reader returned only the usage).
    with httpx.Client(timeout=600) as c, c.stream("POST", f"{url}/v1/audio/speech", json=jobs[2]) as r:
        last = [line for line in r.iter_lines() if line.startswith("data: ")][-1]
    done = json.loads(last[len("data: ") :])
    assert done["type"] == "speech.audio.done", done
    assert done["segments"] == [
        {"index": k, "text": r.text, "frames": r.frames, "finish_reason": r.finish_reason}
        for k, r in enumerate(reports)
    ]
    assert done["usage"]["frames"] == sum(r.frames for r in reports)
    lines = [r.getMessage() for r in caplog.records if f"segments={len(reports)}/{len(reports)}:" in r.getMessage()]
    assert len(lines) == 4, [r.getMessage() for r in caplog.records]  # one log line per HTTP request


@pytest.mark.slow
def test_runaway_segments_end_within_their_budgets(server):
    """Random weights never emit EOS: with no max_new_tokens, each segment runs to its own
    estimated budget (within the server's --max-new-tokens) or is ended by the loop guard."""
    url, _ = server
    text = "One. Two words here. Three is a short one."
    pcm, headers = _post(url, {"input": text, "voice": "ryan", "response_format": "pcm", "long_form": "on", **GREEDY})
    segs = _segments(text)
    reasons = headers["x-segment-finish-reasons"].split(",")
    assert len(reasons) == len(segs) == int(headers["x-segments"]) and len(segs) >= 2, headers
    budgets = [min(estimate_max_new_tokens(s.text, s.language), SETTINGS["max_new_tokens"]) for s in segs]
    assert all(r in ("length", "loop") for r in reasons), reasons
    frames = int(headers["x-frames"])
    # "length": the segment's whole budget (M tokens give M-1 frames); "loop": fewer.
    assert frames <= sum(b - 1 for b in budgets) and frames >= sum(
        b - 1 for b, r in zip(budgets, reasons) if r == "length"
    )
    assert headers["x-finish-reason"] in ("length", "loop")
    assert len(pcm) >= frames * 1920 - 240 * len(segs)  # the segments' audio (less the fades' ends), plus pauses
    print(f"[server long form] runaway: budgets {budgets}, finish {reasons}, frames {frames}")


def test_disconnect_mid_stream_cancels_the_remaining_segments(server, caplog):
    caplog.set_level(logging.INFO, logger="qwen3tts_jax.server")
    url, service = server
    text = " ".join(f"Sentence number {i} goes here." for i in range(8))
    n = len(_segments(text))
    cancelled0 = metric(url, "qwen3tts_requests_total", {"finish_reason": "cancelled"})
    body = {
        "input": text,
        "voice": "ryan",
        "stream": True,
        "stream_format": "audio",
        "response_format": "pcm",
        "long_form": "on",
        **GREEDY,
    }
    with httpx.Client(timeout=120) as client:
        r = client.send(client.build_request("POST", f"{url}/v1/audio/speech", json=body), stream=True)
        assert r.status_code == 200 and r.headers["x-segments"] == str(n)
        assert len(next(r.iter_raw())) > 0  # audio of the first segment arrives
        r.close()  # the client goes away with most segments unsaid
    t0 = time.monotonic()
    while not (service.in_flight == 0 and service.engine.idle and len(service.pacer) == 0):
        assert time.monotonic() - t0 < 120, "the segments were not all ended"
        time.sleep(0.05)
    assert metric(url, "qwen3tts_requests_total", {"finish_reason": "cancelled"}) == cancelled0 + 1
    (line,) = [r.getMessage() for r in caplog.records if "finish=cancelled segments=" in r.getMessage()]
    ran = int(line.split("segments=")[1].split("/")[0])
    assert ran <= service.config.long_form_parallel < n, line  # the later segments never reached the engine
    # Frames the engine made after the cancel reached it: at most one advance (one frame).
    assert int(line.split("after_cancel=+")[1].split()[0]) <= service.engine.advance_frames == 1, line


LONG = "word " * 100  # 500 tokens: over the test server's 48 per request, fine as segments
BAD = [
    ({"input": "hi", "long_form": "yes"}, 422, "long_form"),
    ({"input": "hi", "long_form": True}, 422, "long_form"),
    ({"input": "hi", "long_form": None, "colour": 1}, 422, "colour"),
    ({"input": LONG, "long_form": "off"}, 400, "input"),
    ({"input": "Say it. " * 80, "long_form": "on"}, 400, "input"),  # 640 characters > --max-input-chars 600
]


@pytest.mark.parametrize("body,status,param", BAD, ids=[f"{i}-{p}" for i, (_, _, p) in enumerate(BAD)])
def test_bad_long_form_requests(server, body, status, param):
    url, service = server
    r = httpx.post(f"{url}/v1/audio/speech", json=body, timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and param in err["message"], err
    if body.get("long_form") == "off":
        assert "long_form" in err["message"] and "--max-input-tokens" in err["message"], err
    if len(body["input"]) > SETTINGS["max_input_chars"]:
        assert "640 characters" in err["message"] and "--max-input-chars" in err["message"], err
    assert service.in_flight == 0


def test_bad_long_form_settings():
    with pytest.raises(ValueError, match=r"--long-form-default must be one of \['auto', 'on', 'off'\], got 'maybe'"):
        ServerConfig(CUSTOM, long_form_default="maybe")
    with pytest.raises(
        ValueError, match=r"--long-form-tokens must be an integer in \[1, --max-input-tokens=48\], got 49"
    ):
        ServerConfig(CUSTOM, max_input_tokens=48, long_form_tokens=49)
    with pytest.raises(ValueError, match=r"--long-form-parallel must be an integer >= 1, got 0"):
        ServerConfig(CUSTOM, long_form_parallel=0)
    with pytest.raises(ValueError, match=r"--max-input-chars must be an integer >= 1, got 0"):
        ServerConfig(CUSTOM, max_input_chars=0)
    assert ServerConfig(CUSTOM).segment_tokens == LongFormOptions().max_tokens
    assert ServerConfig(CUSTOM, max_input_tokens=48).segment_tokens == 48


def _until(condition, what: str, step=None, timeout: float = 300) -> None:
    """Wait (stepping with `step` if given) until `condition()`; fails naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        if step is not None:
            step()
        time.sleep(0.01)


def test_a_prefetched_segment_yields_to_a_new_request_at_the_pacer():
    """The pacer hands the engine one request per step, in arrival order, except that a long-form
    request's later segment submitted ahead (a prefetch) goes after a new client's first request
    that came after it: without that the first clients' prefetched segments fill every slot and
    newcomers wait whole segments for their first audio (benchmarks/RESULTS.md, "Server"). One
    slot, the engine stepped here (the loop's thread is not started): admission order first,
    newcomer, later."""
    from qwen3tts_jax.engine import Engine, EngineLoop, EngineShape
    from qwen3tts_jax.server.pacer import AdmissionPacer

    m = model(CUSTOM)
    prompts = m.custom_voice_prompts(["One.", "Two, the later segment.", "Three."], "ryan", None, None, True)
    first, later, newcomer = (
        m.requests([p], audio=False, max_new_tokens=3, do_sample=False, subtalker_dosample=False)[0] for p in prompts
    )
    engine = Engine(m, EngineShape.fit([first, later, newcomer], m.config, m.placement, slots=1))
    pacer = AdmissionPacer(EngineLoop(engine))
    try:
        futures = {
            "first": pacer.submit(first),
            "later": pacer.submit(later, prefetch=True),
            "newcomer": pacer.submit(newcomer),
        }
        handed: list[str] = []  # the order the pacer handed them to the engine
        for name, f in futures.items():
            f.add_done_callback(lambda _, name=name: handed.append(name))
        _until(lambda: all(f.done() and f.result().done for f in futures.values()), "all three end", engine.step)
        assert handed == ["first", "newcomer", "later"]
        assert [futures[n].result().result().finish_reason for n in handed] == ["length"] * 3
    finally:
        pacer.stop()


def test_a_request_submitted_to_a_stopped_pacer_is_cancelled():
    """A prefetch stopped during shutdown is submitted again to a stopped pacer: its future is
    cancelled at once (its reader answers 503), instead of waiting for a hand-over that never comes."""
    from qwen3tts_jax.engine import Engine, EngineLoop, EngineShape
    from qwen3tts_jax.server.pacer import AdmissionPacer

    m = model(CUSTOM)
    (request,) = m.requests(m.custom_voice_prompts(["One."], "ryan", None, None, True), audio=False, max_new_tokens=3)
    pacer = AdmissionPacer(EngineLoop(Engine(m, EngineShape.fit([request], m.config, m.placement, slots=1))))
    pacer.stop()
    assert pacer.submit(request).cancelled() and pacer.submit(request, prefetch=True).cancelled()


@pytest.mark.parametrize("promoted", [False, True], ids=["stopped", "promoted"])
def test_a_running_prefetch_is_stopped_for_a_needed_request_unless_promoted(promoted):
    """A prefetch only uses a slot nobody needs: running in the only slot, it is stopped (its
    callback cancels it and submits it again) when a needed request waits at the engine, and the
    restarted segment gives exactly the codes it gives uninterrupted (sampled, seeded: its key is
    its own). Promoted (its client reads it now) it keeps the slot and the newcomer waits. One
    slot, one frame per advance, the engine stepped here."""
    from qwen3tts_jax.engine import Engine, EngineLoop, EngineShape
    from qwen3tts_jax.server.pacer import AdmissionPacer

    m = model(CUSTOM)
    prompts = m.custom_voice_prompts(["Two, the later segment.", "Three."], "ryan", None, None, True)
    kw = dict(audio=False, max_new_tokens=8, min_new_tokens=8, seed=5)
    later, newcomer = (m.requests([p], **kw)[0] for p in prompts)
    shape = EngineShape.fit([later, newcomer], m.config, m.placement, slots=1)
    alone = Engine(m, shape).run([later])[0]
    assert alone.finish_reason == "length" and alone.frames >= 6  # several advances of one frame

    engine = Engine(m, shape, advance_frames=1)
    pacer = AdmissionPacer(EngineLoop(engine))
    stopped, again = [], []

    def on_preempt(handle):
        stopped.append(handle)
        handle.cancel()
        again.append(pacer.submit(later, prefetch=True, on_preempt=on_preempt))
        return True

    try:
        ahead = pacer.submit(later, prefetch=True, on_preempt=on_preempt)
        _until(lambda: ahead.done() and engine.active == 1, "the prefetch reaches the free slot", engine.step)
        assert engine.step() and not ahead.result().done  # a frame in, still running
        if promoted:
            pacer.promote(ahead)
        needed = pacer.submit(newcomer)
        _until(lambda: needed.done() and engine.waiting == 1, "the newcomer is handed to the engine")
        if not promoted:
            _until(lambda: stopped, "the pacer stops the prefetch", timeout=30)
        else:
            time.sleep(0.2)  # ample time for the pacer to (wrongly) stop it
        _until(
            lambda: needed.result().done and all(f.done() and f.result().done for f in [ahead, *again]),
            "every request ends",
            engine.step,
        )
        newcomer_result = needed.result().result()
        assert newcomer_result.finish_reason == "length" and newcomer_result.frames == alone.frames
        if promoted:
            assert stopped == [] and again == [] and pacer.preempted == 0
            final = ahead.result().result()
        else:
            assert stopped == [ahead.result()] and len(again) == 1 and pacer.preempted == 1
            assert ahead.result().result().finish_reason == "cancelled"
            final = again[0].result().result()
            # one slot: the restarted segment waited for the newcomer to end
            newcomer_end = needed.result().submitted + newcomer_result.total_time
            assert again[0].result().submitted >= newcomer_end
        assert final.finish_reason == "length"
        np.testing.assert_array_equal(final.codes, alone.codes)
    finally:
        pacer.stop()


@pytest.mark.slow
def test_a_prefetched_segment_stopped_for_a_new_client_still_streams_the_same_audio(server):
    """Over HTTP: a streamed long-form request runs its first segment and, prefetched, its second
    in the server's two slots; a second client's request then stops the prefetch (the pacer's
    `qwen3tts_preempted_segments` counts it), which is queued again and restarted when its client
    reaches it. Both clients still get what the Python API gives them (within one 16-bit step,
    as the module docstring says why)."""
    url, service = server
    m = model(CUSTOM)
    kw = dict(language="english", max_new_tokens=48, **GREEDY)  # 47 frames a segment: the loop guard's span
    long_body = {"input": TEXT, "voice": "ryan", "response_format": "pcm", "stream": True, "stream_format": "audio"}
    long_body.update(kw)
    short_body = {"input": "Hello there.", "voice": "ryan", "response_format": "pcm", **kw}
    before = metric(url, "qwen3tts_preempted_segments_total")
    got: dict[str, object] = {}

    def client(name: str, body: dict) -> None:
        try:
            got[name] = speak(url, body)[0]
        except BaseException as err:  # reported below
            got[name] = err

    first = threading.Thread(target=client, args=("long", long_body))
    first.start()
    _until(lambda: service.engine.active == 2, "the first segment and the prefetched second run", timeout=120)
    second = threading.Thread(target=client, args=("short", short_body))
    second.start()
    for t in (first, second):
        t.join(600)
    assert not isinstance(got["long"], BaseException), repr(got["long"])
    assert not isinstance(got["short"], BaseException), repr(got["short"])
    assert metric(url, "qwen3tts_preempted_segments_total") - before == 1

    options = LongFormOptions(max_tokens=SEGMENT_TOKENS)
    want_long = s16(np.concatenate([c for c, _ in m.stream_custom_voice(TEXT, "ryan", long_form=options, **kw)]))
    want_short = s16(m.generate_custom_voice("Hello there.", "ryan", **kw)[0][0])
    within_one_step(got["long"], want_long, "long")
    within_one_step(got["short"], want_short, "short")


def test_a_prefetch_is_not_stopped_while_the_queue_waits_behind_a_compile():
    """While a request is held for its compile (`Engine.compiling`), nobody behind it comes in,
    so a needed request queued behind it would gain nothing from a stopped prefetch: the pacer
    stops the prefetch only once the held request is in and the needed one still finds every
    slot taken. Three slots (a shape no other test uses: each new admission and row bucket
    compiles), the engine stepped here."""
    from qwen3tts_jax.engine import Engine, EngineLoop, EngineShape
    from qwen3tts_jax.server.pacer import AdmissionPacer

    m = model(CUSTOM)
    texts = ["One.", "Two, the later segment.", "Three, held while its programs compile.", "Four."]
    kw = dict(audio=False, max_new_tokens=30, min_new_tokens=30, do_sample=False, subtalker_dosample=False)
    running, later, held, needed = (
        m.requests([p], **kw)[0] for p in m.custom_voice_prompts(texts, "ryan", None, None, True)
    )
    engine = Engine(
        m,
        EngineShape.fit([running, later, held, needed], m.config, m.placement, slots=3),
        advance_frames=1,
        background_compile=True,
    )
    pacer = AdmissionPacer(EngineLoop(engine))
    stopped = []

    def on_preempt(handle):
        stopped.append(handle)
        handle.cancel()
        return True

    def admitted(future):
        return lambda: future.done() and engine.waiting == 0 and not engine.compiling

    def step():
        engine.wait_compiling(600)
        engine.step()

    try:
        _until(admitted(pacer.submit(running)), "the running request is in", step)
        ahead = pacer.submit(later, prefetch=True, on_preempt=on_preempt)
        _until(admitted(ahead), "the prefetch is in", step)
        assert engine.active == 2
        h = pacer.submit(held)
        _until(lambda: h.done() and engine.compiling == 1, "the third request is held", engine.step)
        f = pacer.submit(needed)
        _until(lambda: f.done() and engine.waiting == 1, "the needed request waits at the engine")
        time.sleep(0.3)  # the engine is not stepped: the held request stays held
        assert engine.compiling == 1 and stopped == [] and pacer.preempted == 0
        _until(lambda: stopped, "the prefetch is stopped once the held request is in", step)
        assert engine.compiling == 0 and pacer.preempted == 1 and stopped == [ahead.result()]
        _until(lambda: f.result().done and h.result().done, "every request ends", engine.step)
        assert [x.result().result().finish_reason for x in (h, f)] == ["length", "length"]
    finally:
        pacer.stop()


@pytest.mark.slow
def test_concurrent_long_form_streams_with_disconnects_leave_nothing_behind(server):
    """Eight streamed long-form requests at once on two slots (prefetches taking free slots, being
    stopped for needed segments and restarted), three of the clients going away mid-stream: every
    request is answered, and afterwards no ticket, slot, engine queue entry or pacer entry is left."""
    url, service = server
    body = {"input": TEXT, "voice": "ryan", "response_format": "pcm", "stream": True, "stream_format": "audio"}
    body.update(language="english", max_new_tokens=20, **GREEDY)
    status: dict[int, object] = {}

    def client(i: int) -> None:
        cut = {1: 1, 4: 20_000, 6: 60_000}.get(i)  # bytes read before going away (None: read it all)
        try:
            with httpx.Client(timeout=600) as c, c.stream("POST", f"{url}/v1/audio/speech", json=body) as r:
                status[i] = r.status_code
                n = 0
                for chunk in r.iter_bytes():
                    n += len(chunk)
                    if cut is not None and n >= cut:
                        break
                status[i] = (r.status_code, n)
        except BaseException as err:  # reported below
            status[i] = err

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(600)
    assert all(isinstance(s, tuple) and s[0] == 200 and s[1] > 0 for s in status.values()), status
    engine = service.engine
    _until(
        lambda: service.in_flight == 0 and engine.idle and len(service.pacer) == 0,
        "every ticket given back, the engine and the pacer empty",
        timeout=60,
    )
