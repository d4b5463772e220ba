"""The generation engine (`qwen3tts_jax/engine.py`): requests of different voice modes, lengths,
sampling settings and budgets admitted at different frame boundaries into a few slots give
exactly what they give alone; sampling values never recompile; slots free the moment a request
ends or is cancelled; streamed chunks add up to the offline result."""

from __future__ import annotations

import numpy as np
import pytest

from qwen3tts_jax import Qwen3TTSModel
from qwen3tts_jax import generate as gen
from qwen3tts_jax.engine import Engine, EngineShape
from qwen3tts_jax.prompt import PromptTracks, VoiceClonePromptItem, bucket, pack_tracks, prompt_tracks
from qwen3tts_jax.sampling import SamplingProgram


@pytest.fixture(scope="module")
def base():
    return Qwen3TTSModel.from_pretrained("random:tiny-base")


@pytest.fixture(scope="module")
def custom():
    return Qwen3TTSModel.from_pretrained("random:tiny")


def _clone_item(model, icl: bool, seed: int, frames: int = 6) -> VoiceClonePromptItem:
    rng = np.random.default_rng(seed)
    d = model.config.talker.transformer.hidden_size
    return VoiceClonePromptItem(
        rng.integers(0, 2048, (frames, 16)) if icl else None,
        rng.standard_normal(d).astype(np.float32),
        not icl,
        icl,
        "The words of the reference." if icl else None,
    )


# (text, icl, non_streaming_mode, generation kwargs): six requests, every voice/text mode of a Base
# model, greedy and sampled, each with its own budget.
MIXED = [
    (
        "Hello there, this is the first one.",
        True,
        False,
        dict(do_sample=False, subtalker_dosample=False, max_new_tokens=12),
    ),
    (
        "Second request, non-streaming text.",
        False,
        True,
        dict(do_sample=False, subtalker_dosample=False, max_new_tokens=20),
    ),
    ("Third: sampled with a seed.", True, True, dict(seed=5, temperature=0.8, top_k=10, max_new_tokens=9)),
    (
        "Fourth, sampled with top-p and a strong penalty.",
        False,
        False,
        dict(seed=6, top_p=0.9, repetition_penalty=1.3, subtalker_temperature=0.5, max_new_tokens=15),
    ),
    (
        "A fifth request whose text is clearly the longest of all of them here.",
        False,
        True,
        dict(do_sample=False, subtalker_dosample=False, max_new_tokens=25),
    ),
    ("Six.", True, False, dict(seed=9, do_sample=True, subtalker_dosample=False, temperature=1.3, max_new_tokens=7)),
]


def _mixed_requests(model):
    out = []
    for i, (text, icl, nsm, kw) in enumerate(MIXED):
        prompts = model.voice_clone_prompts(text, "english", None, None, False, [_clone_item(model, icl, i)], nsm)
        (req,) = model.requests(prompts, audio=False, **kw)
        out.append(req)
    return out


@pytest.mark.slow
def test_staggered_admission_equals_alone(base):
    requests = _mixed_requests(base)
    alone = [base.run([r])[0].codes for r in requests]
    shape = EngineShape.fit(requests, base.config, base.placement, slots=4)
    engine = Engine(
        base,
        shape,
        program=SamplingProgram(base.config.talker.codec_eos_token_id, requests[0].sampling.talker.suppress),
    )
    handles, admitted_at = [], []
    frames = 0
    # Requests arrive between steps: 0 and 1 together, 2 after a step, 3..5 later (5 and 6 wait
    # for a free slot: the engine has 4).
    arrivals = {0: [0, 1], 1: [2], 3: [3, 4, 5]}
    step = 0
    while step < 400 and (step <= max(arrivals) or not engine.idle):
        for i in arrivals.get(step, []):
            handles.append(engine.submit(requests[i]))
            admitted_at.append(step)
        engine.step()
        step += 1
        frames += 1
    assert all(h.done for h in handles), "engine did not finish"
    assert engine.waiting == 0 and engine.active == 0
    for i, (h, want) in enumerate(zip(handles, alone)):
        got = h.result().codes
        assert got.shape == want.shape, (i, got.shape, want.shape)
        np.testing.assert_array_equal(got, want, err_msg=f"request {i} ({MIXED[i][3]}) in company vs alone")
        assert h.result().finish_reason in ("stop", "length")
        assert len(got) <= requests[i].max_new_tokens - 1
    print(
        f"[engine] staggered: frames {[len(h.result().codes) for h in handles]}, reasons "
        f"{[h.result().finish_reason for h in handles]}"
    )


@pytest.mark.slow
def test_sampling_values_do_not_recompile(custom):
    kw = dict(max_new_tokens=6, seed=1)
    custom.generate_custom_voice("Compile once.", "ryan", temperature=0.9, **kw)
    program = custom.requests(custom.custom_voice_prompts("x", "ryan", None, None, True), **kw)[0].sampling.program()
    sampler = gen.FrameSampler(custom.config, custom.policy, program, custom.placement)
    before = gen.compile_count(sampler)
    for t, p, r, k in [
        (0.7, 1.0, 1.05, 50),
        (1.2, 0.9, 1.0, 0),
        (0.5, 0.5, 1.3, 5),
        (1.0, 0.99, 2.0, 1),
        (0.3, 0.8, 1.1, 20),
    ]:
        custom.generate_custom_voice(
            "Compile once.",
            "ryan",
            temperature=t,
            top_p=p,
            repetition_penalty=r,
            top_k=k,
            subtalker_temperature=t,
            subtalker_top_p=p,
            **kw,
        )
    assert gen.compile_count(sampler) == before, (before, gen.compile_count(sampler))


@pytest.mark.slow
def test_a_slot_frees_when_its_request_ends_and_on_cancel(custom):
    kw = dict(do_sample=False, subtalker_dosample=False)
    prompts = custom.custom_voice_prompts(
        ["Short.", "A long request that is cancelled.", "Waiting one."], "ryan", None, None, True
    )
    short, long_, waiting = (
        custom.requests([p], audio=False, max_new_tokens=m, **kw)[0] for p, m in zip(prompts, (4, 200, 5))
    )
    engine = Engine(custom, EngineShape.fit([long_], custom.config, custom.placement, slots=2))
    hs, hl, hw = engine.submit(short), engine.submit(long_), engine.submit(waiting)
    while not hs.done:
        engine.step()
    assert hs.result().finish_reason == "length" and len(hs.result().codes) == 3
    assert not hl.done and engine.active == 1  # the short one's slot is free at once
    engine.step()  # ... and the waiting request takes it at the next step (and may finish in it)
    assert engine.waiting == 0 and (engine.active == 2 or hw.done)
    frames_before = sum(len(c.codes) for c in list(hl.events.queue))
    hl.cancel()
    assert hl.frames_at_cancel >= max(frames_before, 1)  # made so far, handed out or not
    engine.step()
    assert hl.done and hl.result().finish_reason == "cancelled"
    # Ended at the start of the next step, before its advance: no frame made after the cancel.
    assert len(hl.result().codes) == hl.frames_at_cancel
    while not hw.done:
        engine.step()
    np.testing.assert_array_equal(hw.result().codes, custom.run([waiting])[0].codes)


@pytest.mark.slow
def test_streamed_chunks_add_up_to_the_offline_result(custom):
    kw = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=14)
    (req,) = custom.requests(
        custom.custom_voice_prompts("Streaming and offline agree.", "serena", None, None, True), **kw
    )
    offline = custom.run([req])[0]
    engine = Engine(
        custom, EngineShape.fit([req], custom.config, custom.placement), chunk_frames=4, first_chunk_frames=1
    )
    chunks = list(engine.submit(req))
    assert [len(c.codes) for c in chunks][:1] == [1] and all(len(c.codes) <= 4 for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c.codes for c in chunks]), offline.codes)
    np.testing.assert_allclose(np.concatenate([c.audio for c in chunks]), offline.audio, atol=1e-4)


def _tracks(length: int, tag: int) -> PromptTracks:
    """A prompt of `length` positions whose text ids say (tag, position)."""
    off = np.zeros(length, bool)
    return PromptTracks(
        np.arange(length, dtype=np.int32) + 1000 * tag, ~off, np.zeros(length, np.int32), off, off,
        np.zeros((length, 15), np.int32), off, None, np.zeros(1, np.int32),
    )  # fmt: skip


@pytest.mark.parametrize(
    "packs, span, groups, width",
    # Costs g·p·(1 + p/span) of g packs of p (the fullest, in 16s) for lengths 30, 7, 19, 3, 12:
    # g = 1..5 → p = 80, 48, 32, 32, 32. Free attention: one pack (80 < 96); dear attention
    # (span 16): three (288 < 384); a data axis of 2: g in {2, 4}, ties to fewer; more data rows
    # than prompts: any g up to 5.
    [(1, 10**9, 1, 80), (1, 16, 3, 32), (2, 10**9, 2, 48), (2, 16, 2, 48), (8, 16, 3, 32)],
)
def test_pack_tracks_puts_every_prompt_once_and_finds_it_again(packs, span, groups, width):
    """`prompt.pack_tracks`: the cheapest number of packs (a multiple of the data axis where
    there are enough prompts), each prompt's positions in order in one pack under its own
    segment, found again through `index`, and the packs balanced."""
    lengths = [30, 7, 19, 3, 12]
    p = pack_tracks([_tracks(n, i) for i, n in enumerate(lengths)], 8, packs, span, 16)
    assert p.segment.shape == (groups, width) and p.index.shape == (5, 32) and p.lengths.tolist() == lengths
    text = np.asarray(p.tracks.text_ids).reshape(-1)[p.source]  # the packs' text ids
    for i, n in enumerate(lengths):
        at = p.index[i, :n]
        np.testing.assert_array_equal(p.segment.reshape(-1)[at], i)
        np.testing.assert_array_equal(text.reshape(-1)[at], np.arange(n) + 1000 * i)
        assert np.all(p.index[i, n:] == at[-1])  # past the prompt: its last position
        assert len(set(at // width)) == 1  # one pack
    assert (p.segment >= 0).sum() == sum(lengths)
    totals = (p.segment >= 0).sum(1)
    assert totals.max() - totals.min() <= max(lengths), totals


@pytest.mark.slow
def test_an_admission_is_one_program_for_prompts_of_any_lengths(custom):
    """Prompts in three 16-position buckets are admitted together, packed: one admission program
    (grouped by bucket it was three), and each request's codes are its codes alone."""
    texts = ["Hi.", "Hello there.", "And this one is by far the longest."]  # 13, 22, 45 positions
    kw = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=5)
    requests = custom.requests(custom.custom_voice_prompts(texts, "ryan", None, None, True), audio=False, **kw)
    lengths = {bucket(prompt_tracks(custom.config, r.prompt).length, 16) for r in requests}
    assert len(lengths) == 3, lengths
    alone = [custom.run([r])[0].codes for r in requests]
    sampler = gen.FrameSampler(custom.config, custom.policy, requests[0].sampling.program(), custom.placement)
    before = gen.compile_count(sampler)["admit"]
    together = custom.run(requests)
    assert gen.compile_count(sampler)["admit"] == before + 1
    for got, want in zip(together, alone):
        np.testing.assert_array_equal(got.codes, want)


def test_requests_that_cannot_fit_fail_at_submit(custom):
    (req,) = custom.requests(
        custom.custom_voice_prompts("Too long for this engine.", "ryan", None, None, True), max_new_tokens=600
    )
    engine = Engine(custom, EngineShape(slots=1, cache_slots=256, text_track=128))
    with pytest.raises(ValueError, match=r"needs \d+ KV slots; this engine has 256"):
        engine.submit(req)
    greedy = Engine(
        custom,
        EngineShape(slots=1, cache_slots=1024, text_track=128),
        program=SamplingProgram(custom.config.talker.codec_eos_token_id, req.sampling.talker.suppress, False, False),
    )
    with pytest.raises(ValueError, match="compiled greedy-only"):
        greedy.submit(req)


def test_a_guard_ends_its_request(custom):
    """`Request.guard` sees the codebook-0 ids as they come and ends the request with its reason
    (the long-form loop detector's seam); the other requests run on."""
    import dataclasses

    kw = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=60)
    a, b = custom.requests(custom.custom_voice_prompts(["Guarded text.", "Free text."], "ryan"), audio=False, **kw)
    seen = []

    def guard(codes0):
        seen.extend(codes0.tolist())
        return "loop" if len(seen) >= 5 else None

    ra, rb = custom.run([dataclasses.replace(a, guard=guard), b])
    assert ra.finish_reason == "loop" and 5 <= len(ra.codes) < 59 and seen == ra.codes[:, 0].tolist()
    np.testing.assert_array_equal(rb.codes, custom.run([b])[0].codes)


def test_a_failed_admission_ends_its_requests_with_an_error(custom, monkeypatch):
    """An admission that raises (here: the admit program) ends the requests it had taken from the
    queue with an error result, as requests in slots are ended; nothing waits forever, and the
    engine admits again afterwards."""
    from qwen3tts_jax.engine import EngineLoop

    kw = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=4)
    req = custom.requests(custom.custom_voice_prompts(["Hi."], "ryan", None, None, True), audio=False, **kw)[0]
    engine = Engine(custom, EngineShape.fit([req], custom.config, custom.placement, slots=2))

    def broken(*args, **kwargs):
        raise RuntimeError("admission broke")

    monkeypatch.setattr(engine, "_admit_group", broken)
    loop = EngineLoop(engine).start()
    try:
        failed = loop.submit(req).result(timeout=120)
        assert failed.finish_reason == "error" and "admission broke" in failed.error and len(failed.codes) == 0
        assert engine.waiting == 0 and engine.active == 0
        monkeypatch.undo()
        ok = loop.submit(req).result(timeout=600)
        assert ok.finish_reason == "length"
        np.testing.assert_array_equal(ok.codes, custom.run([req])[0].codes)
    finally:
        loop.stop()


def test_an_advance_steps_only_the_occupied_rows(custom):
    """Live rows: with 3 of 4 slots taken the engine steps a 4-row bucket, and once only slot 0
    holds a request a 1-row one; every request gives the codes it gives with every advance
    stepping all 4 slots (`live_rows=False`)."""
    kw = dict(do_sample=False, subtalker_dosample=False)
    prompts = custom.custom_voice_prompts(["The long one here.", "Short.", "Middle one."], "ryan", None, None, True)
    reqs = [custom.requests([p], audio=False, max_new_tokens=m, **kw)[0] for p, m in zip(prompts, (14, 3, 5))]
    shape = EngineShape.fit(reqs, custom.config, custom.placement, slots=4)
    live, full = Engine(custom, shape), Engine(custom, shape, live_rows=False)
    got, want = live.run(reqs), full.run(reqs)
    assert set(live.rows_stepped) == {1, 4} and set(full.rows_stepped) == {4}, (live.rows_stepped, full.rows_stepped)
    assert [len(r.codes) for r in got] == [13, 2, 4]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.codes, w.codes)
    (alone,) = live.run(reqs[:1])  # a lone request in the now idle engine: 1-row advances only
    np.testing.assert_array_equal(alone.codes, got[0].codes)
    assert live.rows_stepped[1] > 0 and set(live.rows_stepped) == {1, 4}


def test_rows_with_and_without_audio_end_in_one_step(custom):
    """A codes-only request and an audio request that end at the same step: the codec's final
    push holds only the audio row (the codes-only row has no codec stream to end)."""
    kw = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=5)
    p = custom.custom_voice_prompts(["Codes only here.", "With audio here."], "ryan", None, None, True)
    codes_only = custom.requests(p[:1], audio=False, **kw)[0]
    with_audio = custom.requests(p[1:], **kw)[0]
    a, b = custom.run([codes_only, with_audio])
    assert a.finish_reason == b.finish_reason == "length" and len(a.codes) == len(b.codes) == 4
    assert a.audio is None and len(b.audio) == 4 * custom.speech_tokenizer.get_decode_upsample_rate()
    np.testing.assert_array_equal(a.codes, custom.run([codes_only])[0].codes)


def test_a_waiting_request_is_admitted_between_codec_pushes(custom):
    """A request that arrives while running rows have chunks due (here: submitted by A's guard,
    which runs between an advance and its emission) is admitted before those chunks are
    decoded (`Policy.codec_push_rows`): its first chunk is the next codec push, A's and B's
    chunks come after it, in the same step, one frame longer; every request's codes and audio
    are what it gives alone."""
    import dataclasses

    kw = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=12)
    a, b, c = custom.requests(
        custom.custom_voice_prompts(["First one running.", "Second one running.", "The newcomer."], "ryan"), **kw
    )
    shape = EngineShape.fit([a, b, c], custom.config, custom.placement, slots=3)
    # One row per push (the CPU policy pushes 4): A's and B's chunks are two pushes, C goes first.
    engine = Engine(_with_policy(custom, codec_push_rows=1), shape, chunk_frames=2, first_chunk_frames=1)
    advances = lambda: sum(engine.rows_stepped.values())  # noqa: E731
    submitted, made, submitted_after = [], [], []

    def guard(codes0):  # sees each piece of A's frames as the advance that made it returns
        made.extend(codes0.tolist())
        if not submitted and len(made) >= 3:
            submitted.append(engine.submit(c))
            submitted_after.append(advances())
        return None

    pushes = []
    push = engine.codec.push

    def spy(frames, final=()):
        pushes.append((sorted(frames), engine.active, advances()))
        return push(frames, final)

    engine.codec.push = spy
    ha, hb = engine.submit(dataclasses.replace(a, guard=guard)), engine.submit(b)
    while not (ha.done and hb.done and submitted and submitted[0].done):
        engine.step()
    (hc,) = submitted
    # The push right after C was admitted (3 slots active) is C's first chunk, alone; A's and B's
    # chunks due at the step that submitted C follow it, after the same (next) advance.
    at = next(i for i, (_, active, _) in enumerate(pushes) if active == 3)
    assert pushes[at][0] == [2] and {tuple(r) for r, _, _ in pushes[at + 1 : at + 3]} == {(0,), (1,)}, pushes
    assert [n for _, _, n in pushes[at : at + 3]] == [submitted_after[0] + 1] * 3, (pushes, submitted_after)
    for h, req in ((ha, a), (hb, b), (hc, c)):
        got, (alone,) = h.result(), engine.run([req])
        np.testing.assert_array_equal(got.codes, alone.codes)
        np.testing.assert_allclose(got.audio, alone.audio, atol=1e-4)
    events = [ha.events.get_nowait() for _ in range(ha.events.qsize())]
    chunks = [len(e.codes) for e in events if not hasattr(e, "finish_reason")]
    # The deferred chunk: two frames due, one more made before its push.
    assert sum(chunks) == 11 and 3 in chunks, chunks


def _with_policy(model, **fields):
    """What `Engine` reads of a model, with some `Policy` fields replaced."""
    import dataclasses
    import types

    return types.SimpleNamespace(
        config=model.config,
        policy=dataclasses.replace(model.policy, **fields),
        params=model.params,
        speech_tokenizer=model.speech_tokenizer,
        placement=model.placement,
    )


def test_an_engine_loop_advances_one_frame_at_a_time(custom):
    """`Engine.advance_frames`: offline an advance runs up to the next emission (here the whole
    request, one chunk); stepped by an `EngineLoop` (requests arrive while it runs) it makes one
    frame, so a newcomer waits at most one frame step; an explicit value holds in both. The
    codes are the same every way."""
    from qwen3tts_jax.engine import EngineLoop

    kw = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=9)
    (req,) = custom.requests(
        custom.custom_voice_prompts("One frame at a time.", "ryan", None, None, True), audio=False, **kw
    )
    shape = EngineShape.fit([req], custom.config, custom.placement)
    offline, looped, capped = Engine(custom, shape), Engine(custom, shape), Engine(custom, shape, advance_frames=3)
    assert (offline.advance_frames, capped.advance_frames) == (shape.chunk, 3)
    want = offline.run([req])[0]
    loops = [EngineLoop(looped).start(), EngineLoop(capped).start()]
    try:
        got = [loop.submit(req).result(timeout=600) for loop in loops]
    finally:
        for loop in loops:
            loop.stop()
    assert looped.advance_frames == 1 and capped.advance_frames == 3
    assert len(want.codes) == 8 and sum(offline.rows_stepped.values()) == 1, offline.rows_stepped
    assert sum(looped.rows_stepped.values()) == 8 and sum(capped.rows_stepped.values()) == 3
    for g in got:
        np.testing.assert_array_equal(g.codes, want.codes)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match=rf"advance_frames must be None or an integer >= 1, got {bad!r}"):
            Engine(custom, shape, advance_frames=bad)


def _three_prompt_buckets(custom):
    """Greedy codes-only requests in three prompt buckets: a short one running 40 frames, then
    two longer ones of up to 6 frames."""
    kw = dict(audio=False, do_sample=False, subtalker_dosample=False)
    newcomer = "A newcomer whose text is long enough for another prompt bucket than the first one's."
    texts = ["Running.", newcomer, f"Held: {newcomer} {newcomer}"]
    prompts = custom.custom_voice_prompts(texts, "ryan", None, None, True)
    lengths = [bucket(prompt_tracks(custom.config, p).length, 16) for p in prompts]
    assert lengths[0] < lengths[1] < lengths[2], lengths
    (running,) = custom.requests(prompts[:1], max_new_tokens=40, min_new_tokens=40, **kw)
    return (running, *custom.requests(prompts[1:], max_new_tokens=6, **kw))


def test_a_new_admission_shape_compiles_while_the_running_requests_step(custom):
    """`Engine.background_compile` (on under an `EngineLoop`, off offline): a request whose
    admission has a shape not compiled yet, arriving while another request runs, is held while
    its admission and the advance over the wider row bucket compile on the compiler thread; the
    running request keeps stepping meanwhile, the held one keeps its row and comes in at the
    first step after, compiling nothing then; cancelled while held, it ends at the step after.
    Codes are what each gives alone."""
    from qwen3tts_jax.compile_cache import CompileCounter
    from qwen3tts_jax.engine import EngineLoop

    a, b, c = _three_prompt_buckets(custom)
    shape = EngineShape.fit([a, b, c], custom.config, custom.placement, slots=2)
    assert not Engine(custom, shape).background_compile
    looped = Engine(custom, shape)
    EngineLoop(looped)  # not started: only marks the engine as stepped by a loop
    assert looped.background_compile
    for bad in (1, "yes"):
        with pytest.raises(ValueError, match=rf"background_compile must be None, True or False, got {bad!r}"):
            Engine(custom, shape, background_compile=bad)

    engine = Engine(custom, shape, advance_frames=1, background_compile=True)
    ha = engine.submit(a)
    engine.step()  # nothing runs yet: A's admission compiles inline
    hb = engine.submit(b)
    advances = sum(engine.rows_stepped.values())
    engine.step()
    assert (engine.compiling, engine.active, engine.waiting) == (1, 1, 0)
    assert sum(engine.rows_stepped.values()) == advances + 1  # A stepped while B's programs compile
    assert engine.free_slots == 0 and not engine.idle  # B's row is kept for it
    assert engine.wait_compiling(timeout=600)
    counter = CompileCounter()
    engine.step()
    assert (engine.compiling, engine.active) == (0, 2) and counter.stats().programs == 0, counter.stats()
    while not hb.done:
        engine.step()
    # A request cancelled while held ends as soon as it has its slot, not at its budget.
    hc = engine.submit(c)
    engine.step()
    assert engine.compiling == 1 and not ha.done
    hc.cancel()
    assert engine.wait_compiling(timeout=600)
    engine.step()  # C comes in ...
    engine.step()  # ... and its cancel ends it
    assert hc.done and hc.result().finish_reason == "cancelled" and not ha.done
    while not ha.done:
        engine.step()
    for h, req in ((ha, a), (hb, b)):
        np.testing.assert_array_equal(h.result().codes, custom.run([req])[0].codes)


def test_requests_whose_programs_exist_come_in_while_another_is_held_for_its_compile(custom):
    """Under `background_compile`, a request held for its compile does not block the queue: the
    requests behind it whose admission and advance are compiled come in on the free rows it does
    not keep; the first that needs a compile of its own stops them at the head (one compile at a
    time) and is held once the first held request is in. Codes are what each gives alone."""
    short, held, blocked = _three_prompt_buckets(custom)
    # Five slots: a shape no other test uses, so only what this test compiles exists.
    shape = EngineShape.fit([short, held, blocked], custom.config, custom.placement, slots=5)
    warm = Engine(custom, shape, advance_frames=1, background_compile=False)
    for _ in range(4):  # the short prompt's admission (one request) and the advances over 1, 2, 4 rows
        warm.submit(short)
        warm.step()
    engine = Engine(custom, shape, advance_frames=1, background_compile=True)
    ha = engine.submit(short)
    engine.step()
    hb = engine.submit(held)
    engine.step()
    assert (engine.compiling, engine.active) == (1, 1)  # B keeps row 1
    hc, hd, he = engine.submit(short), engine.submit(blocked), engine.submit(short)
    engine.step()  # (milliseconds; B's compile takes seconds)
    # C came in on row 2; D needs its own compile and waits at the head, E behind it.
    assert engine.compiling == 1 and (engine.active, engine.waiting) == (2, 2)
    assert engine.slot_requests[2] == hc.id
    engine.step()
    assert engine.compiling == 1 and (engine.active, engine.waiting) == (2, 2)
    assert engine.wait_compiling(timeout=600)
    engine.step()  # B in (row 1) ...
    assert engine.slot_requests[1] == hb.id and (engine.compiling, engine.waiting) == (0, 2)
    engine.step()  # ... then D, with E, held for their compile
    assert (engine.compiling, engine.waiting) == (2, 0)
    for h in (ha, hb, hc, hd, he):
        while not h.done:
            engine.step()
    for h, req in ((ha, short), (hb, held), (hc, short), (hd, blocked), (he, short)):
        np.testing.assert_array_equal(h.result().codes, custom.run([req])[0].codes)


def test_with_nothing_running_a_request_whose_programs_exist_does_not_wait_for_a_held_compile(custom):
    """The engine waits for a held request's compile on its own thread only when nothing else
    could run: a request behind it whose programs exist comes in even when the last running
    request has just ended."""
    short, held, _ = _three_prompt_buckets(custom)
    shape = EngineShape.fit([short, held], custom.config, custom.placement, slots=6)  # a shape no other test uses
    warm = Engine(custom, shape, background_compile=False)
    warm.submit(short)
    warm.step()  # the short prompt's admission and the 1-row advance
    engine = Engine(custom, shape, advance_frames=1, background_compile=True)
    ha = engine.submit(short)
    engine.step()
    hb = engine.submit(held)
    engine.step()
    assert engine.compiling == 1
    ha.cancel()
    hc = engine.submit(short)
    engine.step()  # A ends; C comes in on its row while B still compiles (milliseconds vs seconds)
    assert ha.done and engine.compiling == 1 and engine.slot_requests[0] == hc.id
    for h in (hb, hc):
        while not h.done:
            engine.step()
    for h, req in ((hb, held), (hc, short)):
        np.testing.assert_array_equal(h.result().codes, custom.run([req])[0].codes)


def test_a_running_stream_gets_its_audio_while_the_queue_waits_behind_a_held_request(custom):
    """A step defers its running rows' codec pushes when a request would come in at the next step
    (so a newcomer waits for one push, not all). While a request is held for its compile, with a
    request behind it that needs a compile of its own (so it waits at the head of the queue), no
    one comes in, although a row looks free: the running stream's chunks still go out at every
    step of the hold (before, they stopped for the whole compile as soon as a second request
    queued behind the held one)."""
    import dataclasses

    kw = dict(do_sample=False, subtalker_dosample=False)
    held = "A newcomer whose prompt falls in another bucket than the running request's prompt."
    prompts = custom.custom_voice_prompts(["Running along.", held, "Queued."], "ryan", None, None, True)
    (a,) = custom.requests(prompts[:1], max_new_tokens=60, min_new_tokens=60, **kw)
    a = dataclasses.replace(a, chunk_frames=1, first_chunk_frames=1)
    b, c = custom.requests(prompts[1:], audio=False, max_new_tokens=4, **kw)
    # Three slots (a shape no other test uses, so B's admission is not compiled yet): a free row
    # beside B's kept one, and still C waits behind B.
    shape = EngineShape.fit([a, b, c], custom.config, custom.placement, slots=3)
    engine = Engine(custom, shape, advance_frames=1, background_compile=True)
    ha = engine.submit(a)
    engine.step()
    engine.step()  # A's first chunk (its codec program compiles here, inline)
    hb = engine.submit(b)
    engine.step()
    engine.submit(c)  # arrives while B is held
    assert (engine.compiling, engine.active, engine.waiting) == (1, 1, 1)
    checked = 0
    while not engine.wait_compiling(timeout=0) and checked < 5:
        chunks = ha.events.qsize()
        engine.step()
        if not engine.wait_compiling(timeout=0):  # still compiling after the step: nobody could come in
            assert ha.events.qsize() == chunks + 1, "the running stream's chunk was held back"
            checked += 1
    assert checked >= 1, "the compile ended before a step could be checked"
    assert engine.wait_compiling(timeout=600)
    while not (ha.done and hb.done):
        engine.step()
    np.testing.assert_array_equal(ha.result().codes, custom.run([a])[0].codes)


def test_a_request_submitted_again_under_its_id_is_not_cancelled_with_the_first(custom):
    """Cancels are per handle: the server's pacer stops a prefetch by cancelling it and submitting
    the same request (same id) again; the second must run to its end, not inherit the cancel."""
    import dataclasses

    prompts = custom.custom_voice_prompts(["Again."], "ryan", None, None, True)
    kw = dict(audio=False, max_new_tokens=5, min_new_tokens=5, do_sample=False, subtalker_dosample=False)
    req = dataclasses.replace(custom.requests(prompts, **kw)[0], id="same-id")
    engine = Engine(custom, EngineShape.fit([req], custom.config, custom.placement, slots=2), advance_frames=1)
    first = engine.submit(req)
    engine.step()
    assert not first.done
    first.cancel()
    again = engine.submit(req)
    while not again.done:
        engine.step()
    assert first.result().finish_reason == "cancelled" and again.result().finish_reason == "length"
    np.testing.assert_array_equal(again.result().codes, custom.run([req])[0].codes)
