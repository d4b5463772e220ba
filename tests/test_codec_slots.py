"""Per-slot streaming decode (`qwen3tts_jax.codec.slots.CodecSlots`) against the official
tokenizer's decode (`Qwen3TTSTokenizerV2Model.decode`: 300-frame chunks, 25 frames of left
context), fp32, on the tiny tokenizer of tests/test_codec_decoder.py.

Contract: for every row, the concatenation of its pushed audio equals the reference decode of
(start context ++ all frames pushed) with the context's samples removed — waveform tolerance
1e-4 (stricter than the 1e-3 waveform policy, as the decoder tests measure ~1e-6 here).
`max_piece=16` keeps the number of compiled step shapes (and the test's time) small; the
contract does not depend on it.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from qwen3tts_jax.codec import decoder as codec_decoder
from qwen3tts_jax.codec import slots as codec_slots
from qwen3tts_jax.codec.pieces import piece_sizes
from qwen3tts_jax.codec.slots import CodecSlots
from qwen3tts_jax.config import Policy
from tests.conftest import assert_close
from tests.test_codec_decoder import Tiny  # skips this module too where torch is missing

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.reference

TOL = 1e-4
MAX_PIECE = 16


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return Tiny(tmp_path_factory, seed=11)


def reference_decode(tiny: Tiny, codes: np.ndarray) -> np.ndarray:
    """The official decode of one item's `(t, 16)` codes."""
    with torch.no_grad():
        return (
            tiny.model.decode(torch.from_numpy(codes[None].astype(np.int64)), return_dict=True).audio_values[0].numpy()
        )


@dataclasses.dataclass
class Stream:
    """One request in a slot: `context` decoded at start, `frames` pushed `ks` at a time
    (cycled), from push number `begin` on (or once `after` returns True), every `every` pushes;
    `stop_after` frames: cancelled there (stop), else the last push is final."""

    name: str
    row: int
    context: np.ndarray
    frames: np.ndarray
    ks: list[int]
    begin: int = 0
    every: int = 1
    stop_after: int | None = None
    after: str | None = None  # start when this stream has pushed >= `after_frames` frames
    after_frames: int = 0
    pushed: int = 0
    state: str = "waiting"  # waiting, live, done
    out: list = dataclasses.field(default_factory=list)
    pushes: int = 0


@pytest.mark.slow
def test_staggered_rows_match_the_reference_decode_per_row(tiny):
    """Four slots: A (no context, 610 frames: crosses 300 and 600), B (7-frame context, starts
    when A is at frame 290; both cross their 300-frame boundaries at different pushes), C (a
    40-frame context, > 25; pushed only every other push), D1 (cancelled after 60 frames), then
    D2 reusing D1's slot (final, with a padded tail). Every push has uneven k across rows."""
    cfg = tiny.dcfg
    rng = np.random.RandomState(5)

    def codes(n):
        return rng.randint(0, cfg.codebook_size, (n, cfg.num_quantizers)).astype(np.int32)

    none = np.zeros((0, cfg.num_quantizers), np.int32)
    streams = [
        Stream("A", 0, none, codes(610), [1, 3, 4, 7, 16, 2, 33, 5, 8, 13, 21, 10]),
        Stream("B", 1, codes(7), codes(330), [5, 2, 9, 1, 12, 17, 6], after="A", after_frames=290),
        Stream("C", 2, codes(40), codes(300), [4, 11], every=2),
        Stream("D1", 3, codes(30), codes(200), [3], begin=1, stop_after=60),
        Stream("D2", 3, none, codes(47), [8], after="D1", after_frames=60),  # 5 pushes of 8, a final 7: padded to 8
    ]
    by_name = {s.name: s for s in streams}
    slots = CodecSlots(tiny.dec, cfg, Policy(), 4, max_piece=MAX_PIECE)
    steps_before = codec_decoder._step_copying._cache_size()
    gathers_before = codec_slots._gather._cache_size()
    ks_seen: set[int] = set()
    crossings: dict[str, int] = {}
    push, tail_padding = 0, None
    while any(s.state != "done" for s in streams):
        for s in streams:
            if s.state != "waiting":
                continue
            ready = by_name[s.after].pushed >= s.after_frames if s.after else push >= s.begin
            if ready and all(o.state != "live" for o in streams if o.row == s.row):
                slots.start(s.row, s.context if len(s.context) else None)
                s.state = "live"
                assert slots.frames(s.row) == len(s.context)
        frames, final = {}, []
        for s in streams:
            if s.state != "live" or s.pushes % s.every:
                s.pushes += 1
                continue
            s.pushes += 1
            limit = s.stop_after if s.stop_after is not None else len(s.frames)
            k = min(s.ks[(s.pushes // s.every) % len(s.ks)], limit - s.pushed)
            before = len(s.context) + s.pushed
            frames[s.row] = s.frames[s.pushed : s.pushed + k]
            ks_seen.add(k)
            s.pushed += k
            if before // 300 != (before + k) // 300 or (before % 300 == 0 and before and k):
                crossings.setdefault(s.name, push)
            if s.pushed == len(s.frames):
                final.append(s.row)
        padded = slots.padded_frames
        out = slots.push(frames, final=final)
        if by_name["D2"].row in final and by_name["D2"].state == "live":
            tail_padding = slots.padded_frames - padded
        assert set(out) == set(frames)
        for s in streams:
            if s.state == "live" and s.row in out:
                assert out[s.row].shape == (len(frames[s.row]) * cfg.total_upsample,) and out[s.row].dtype == np.float32
                s.out.append(out[s.row])
                if s.row in final:
                    s.state = "done"
                elif s.stop_after is not None and s.pushed == s.stop_after:
                    slots.stop(s.row)
                    s.state = "done"
        push += 1
    assert crossings["A"] != crossings["B"] and "C" in crossings, crossings
    assert by_name["A"].pushed == 610 and by_name["B"].pushed == 330
    up = cfg.total_upsample
    for s in streams:
        got = np.concatenate(s.out)
        want = reference_decode(tiny, np.concatenate([s.context, s.frames[: s.pushed]]))[len(s.context) * up :]
        assert_close(got, want, TOL, f"slot row {s.row} stream {s.name} ({len(s.context)} context + {s.pushed} frames)")
    assert tail_padding == 1  # D2's final 7 frames ran as one 8-frame piece
    # Compiles: bounded by piece sizes x batch buckets (slots 4: buckets 1, 2, 4), whatever k.
    bound = len(piece_sizes(MAX_PIECE)) * 3
    assert len(ks_seen) > bound
    assert codec_decoder._step_copying._cache_size() - steps_before <= bound
    assert codec_slots._gather._cache_size() - gathers_before <= 3


@pytest.mark.slow
def test_rows_not_pushed_keep_their_state(tiny):
    cfg = tiny.dcfg
    slots = CodecSlots(tiny.dec, cfg, Policy(), 3, max_piece=MAX_PIECE)
    frames = np.random.RandomState(1).randint(0, cfg.codebook_size, (3, 9, cfg.num_quantizers)).astype(np.int32)
    for r in range(3):
        slots.start(r)
    slots.push({0: frames[0, :4], 1: frames[1, :4], 2: frames[2, :4]})
    before = [np.asarray(a) for a in jax.tree.leaves(slots.state.take(np.array([2])))]
    slots.push({0: frames[0, 4:], 1: frames[1, 4:]})
    after = [np.asarray(a) for a in jax.tree.leaves(slots.state.take(np.array([2])))]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert slots.frames(2) == 4 and slots.frames(0) == 9


def test_bad_input_is_rejected_before_any_work(tiny):
    cfg = tiny.dcfg
    slots = CodecSlots(tiny.dec, cfg, Policy(), 2, max_piece=MAX_PIECE)
    slots.start(0)
    ok = np.zeros((3, cfg.num_quantizers), np.int32)
    calls = slots.calls
    with pytest.raises(ValueError, match=r"slot 1 has no stream \(call start\(1\) first\)"):
        slots.push({0: ok, 1: ok})
    with pytest.raises(ValueError, match=r"push: frames\[0\]: codes must have shape \(frames, 16\), got \(3, 8\)"):
        slots.push({0: np.zeros((3, 8), np.int32)})
    with pytest.raises(ValueError, match=r"code 2048 out of range \[0, 2048\)"):
        slots.push({0: np.full((2, 16), 2048)})
    with pytest.raises(ValueError, match=r"row must be an integer in \[0, 2\), got 5"):
        slots.push({5: ok})
    with pytest.raises(ValueError, match=r"start: row must be an integer in \[0, 2\), got -1"):
        slots.start(-1)
    with pytest.raises(ValueError, match=r"context \(row 1\): codes must be integers, got dtype float64"):
        slots.start(1, np.zeros((2, 16)) + 0.5)
    with pytest.raises(ValueError, match="slots must be an integer >= 1, got 0"):
        CodecSlots(tiny.dec, cfg, Policy(), 0)
    assert slots.calls == calls and slots.frames(0) == 0 and not slots.live(1)


def test_compile_covers_every_push_shape(tiny):
    """`CodecSlots.compile()` compiles ahead of time every program a push can call (its
    `call_shapes()`), so pushes of any rows and lengths afterwards compile nothing (counted from
    JAX's compile events, caches cleared first); it runs nothing, and the audio is the same as
    from an instance that compiled as it went."""
    cfg = tiny.dcfg
    rng = np.random.RandomState(4)
    frames = rng.randint(0, cfg.codebook_size, (3, 12, cfg.num_quantizers)).astype(np.int32)
    pushes = [  # (frames per row this push, rows ending with it)
        ({0: 1, 1: 1, 2: 1}, ()),
        ({0: 4, 2: 3}, ()),
        ({1: 6}, ()),
        ({0: 7, 1: 5, 2: 8}, (0, 1, 2)),
    ]

    def run(slots: CodecSlots) -> dict[int, np.ndarray]:
        out, at = {r: [] for r in range(3)}, [0, 0, 0]
        for r in range(3):
            slots.start(r)
        for ks, final in pushes:
            wav = slots.push({r: frames[r, at[r] : at[r] + k] for r, k in ks.items()}, final=final)
            for r, k in ks.items():
                out[r].append(wav[r])
                at[r] += k
        return {r: np.concatenate(a) for r, a in out.items()}

    expected = run(CodecSlots(tiny.dec, cfg, Policy(), 3, max_piece=4))
    jax.clear_caches()
    compiles: list[str] = []
    listener = lambda name, secs, **kw: compiles.append(name) if name.endswith("backend_compile_duration") else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        slots = CodecSlots(tiny.dec, cfg, Policy(), 3, max_piece=4)
        shapes = slots.call_shapes()
        # 1-, 2- and 4-frame pieces; 3 rows go as a 2-row and a 1-row call (row_groups)
        assert shapes == [(1, 1), (1, 2), (2, 1), (2, 2), (4, 1), (4, 2)]
        calls, state = slots.calls, jax.tree.leaves(slots.state)
        assert slots.compile() == len(shapes)
        assert len(compiles) >= len(shapes) and slots.calls == calls
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(slots.state), state))
        compiles.clear()
        got = run(slots)
        assert compiles == [], f"{len(compiles)} programs compiled by pushes after compile()"
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    for r in range(3):
        np.testing.assert_array_equal(got[r], expected[r], err_msg=f"row {r}")
