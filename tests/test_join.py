"""qwen3tts_jax.join: pauses and fades between segments, offline and streaming.

The expected waveform is built here by hand from the rule (`_expected`: each segment times its
fade-in and fade-out gains, the pause owed before it); the streaming joiner must emit exactly
that, for any chunking, and hold back no more than the fade.
"""

from __future__ import annotations

import numpy as np
import pytest

from qwen3tts_jax.join import JoinRule, StreamJoiner, join
from qwen3tts_jax.segment import Segment, split_text

SR = 24000


def _gains(n: int, fade: int) -> np.ndarray:
    """Fade-in times fade-out gains of an n-sample segment (a raised-cosine ramp each side)."""
    k = np.arange(n)
    ramp = lambda i: 0.5 - 0.5 * np.cos(np.pi * (i + 0.5) / fade)
    g = np.ones(n)
    head, tail = k < fade, (n - 1 - k) < fade
    g[head] *= ramp(k[head])
    g[tail] *= ramp(n - 1 - k[tail])
    return g


def _expected(wavs, boundaries, rule=JoinRule(), sr=SR) -> np.ndarray:
    fade = round(rule.fade_s * sr)
    out, owed, audible = [], 0, False
    for w, b in zip(wavs, boundaries):
        if len(w):
            if audible:
                out.append(np.zeros(owed))
            out.append(np.asarray(w, np.float64) * _gains(len(w), fade))
            audible, owed = True, 0
        owed = max(owed, round(getattr(rule, f"{b}_s") * sr))
    return np.concatenate(out) if out else np.zeros(0)


def _stream(wavs, ends, chunkings, rule=JoinRule(), sr=SR):
    joiner = StreamJoiner(sr, rule)
    parts = []
    for w, end, sizes in zip(wavs, ends, chunkings):
        pos = 0
        for size in sizes:
            parts.append(joiner.push(w[pos : pos + size]))
            pos += size
        parts.append(joiner.push(w[pos:]))
        parts.append(joiner.end_segment(end))
    return parts


def _wavs(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-0.9, 0.9, n).astype(np.float32) for n in lengths]


def test_default_rule_in_samples():
    rule = JoinRule()
    assert [rule.pause_samples(b, SR) for b in ("paragraph", "sentence", "clause", "word", "cut")] == [
        9600,
        3600,
        1440,
        0,
        0,
    ]
    assert rule.fade_samples(SR) == 120


def test_join_is_the_rule_by_hand():
    wavs = _wavs([5000, 3000, 800, 4000, 2500])
    ends = ["sentence", "paragraph", "clause", "word", "paragraph"]
    out = join(wavs, ends, SR)
    assert out.dtype == np.float32
    assert len(out) == sum(map(len, wavs)) + 3600 + 9600 + 1440 + 0
    np.testing.assert_allclose(out, _expected(wavs, ends), rtol=0, atol=1e-6)
    # The pauses are exact zeros and the seams fade: the first and last samples of each segment
    # are scaled by the outermost ramp value.
    assert not out[5000 : 5000 + 3600].any()
    g0 = 0.5 - 0.5 * np.cos(np.pi * 0.5 / 120)
    assert out[0] == pytest.approx(wavs[0][0] * g0, abs=1e-7)
    assert out[4999] == pytest.approx(wavs[0][-1] * g0, abs=1e-7)
    assert out[5000 + 3600] == pytest.approx(wavs[1][0] * g0, abs=1e-7)


def test_join_takes_segments_from_split_text():
    segs = split_text("First sentence here. Second one here.\n\nNew paragraph now.")
    assert [s.boundary for s in segs] == ["sentence", "paragraph", "paragraph"]
    wavs = _wavs([2400, 2400, 2400])
    np.testing.assert_array_equal(join(wavs, segs, SR), join(wavs, [s.boundary for s in segs], SR))
    assert len(join(wavs, segs, SR)) == 3 * 2400 + 3600 + 9600


@pytest.mark.parametrize("seed", range(12))
def test_streaming_equals_offline_for_any_chunking(seed):
    rng = np.random.default_rng(seed)
    n_seg = int(rng.integers(1, 6))
    # Lengths include empty segments and segments shorter than one fade (120 samples).
    lengths = [int(rng.choice([0, 1, 50, 119, 120, 121, 239, 1000, 7000])) for _ in range(n_seg)]
    ends = [str(rng.choice(["paragraph", "sentence", "clause", "word", "cut"])) for _ in range(n_seg)]
    wavs = _wavs(lengths, seed)
    chunkings = [list(rng.integers(0, 400, int(rng.integers(0, 30)))) for _ in range(n_seg)]
    streamed = np.concatenate(_stream(wavs, ends, chunkings))
    offline = join(wavs, ends, SR)
    np.testing.assert_array_equal(streamed, offline)
    np.testing.assert_allclose(offline, _expected(wavs, ends), rtol=0, atol=1e-6)


def test_streaming_holds_back_only_the_fade_and_pauses_when_the_next_segment_starts():
    joiner = StreamJoiner(SR)
    a, b = _wavs([1000, 1000])
    assert len(joiner.push(a[:50])) == 0  # all within the fade that may turn out to be the end
    assert len(joiner.push(a[50:400])) == 400 - 120
    assert len(joiner.push(a[400:])) == 600
    assert len(joiner.end_segment("sentence")) == 120  # the held fade-out, no pause yet
    first = joiner.push(b[:300])
    assert len(first) == 3600 + 300 - 120 and not first[:3600].any()  # the pause comes with the next audio
    assert len(joiner.push(b[300:])) == 700
    assert len(joiner.end_segment("paragraph")) == 120  # the last segment: no pause after it


def test_the_pause_owed_across_silent_segments_is_the_longest():
    wavs = _wavs([1000, 0, 0, 1000])
    ends = ["clause", "paragraph", "word", "sentence"]
    out = join(wavs, ends, SR)
    assert len(out) == 2000 + 9600  # clause 1440, then an empty paragraph-ending segment: 9600
    np.testing.assert_allclose(out, _expected(wavs, ends), rtol=0, atol=1e-6)
    # Silent segments before the first audio owe nothing.
    assert len(join(_wavs([0, 500]), ["paragraph", "sentence"], SR)) == 500
    assert len(join([], [], SR)) == 0


def test_custom_rule_and_no_fade():
    rule = JoinRule(sentence_s=0.5, fade_s=0.0)
    wavs = _wavs([100, 100])
    out = join(wavs, ["sentence", "sentence"], 16000, rule)
    np.testing.assert_array_equal(out, np.concatenate([wavs[0], np.zeros(8000, np.float32), wavs[1]]))


def test_no_click_at_a_seam():
    """Two segments that stop and start at full scale: with the fades, no step between adjacent
    samples at the seam exceeds the signal's own steps by more than a little."""
    t = np.arange(4800) / SR
    tone = (0.9 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    a, b = tone[: 2400 + 37], tone[1060:]  # cut mid-cycle: +0.86 then -0.78, far off zero
    out = join([a, b], ["word", "paragraph"], SR)
    own = np.abs(np.diff(tone)).max()
    assert np.abs(np.diff(out)).max() <= own * 1.05
    raw = np.concatenate([a, b])
    assert np.abs(np.diff(raw)).max() > 5 * own  # without fades the seam clicks


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: join([np.zeros((2, 10), np.float32)], ["sentence"], SR), r"wavs\[0\] must be a 1-D float array"),
        (lambda: join([np.zeros(10, np.int16)], ["sentence"], SR), r"wavs\[0\] .*dtype int16"),
        (lambda: join([np.zeros(10, np.float32)], [], SR), "must pair up, got 1 wavs and 0 segments"),
        (lambda: join([np.zeros(10, np.float32)], ["pause"], SR), r"segments\[0\]: .*got 'pause'"),
        (lambda: join([], [], 0), "sample_rate must be an int > 0, got 0"),
        (lambda: join([], [], 24000.0), "sample_rate must be an int > 0, got 24000.0"),
        (lambda: StreamJoiner(SR).push(np.zeros((1, 4), np.float32)), r"audio must be a 1-D float array .*\(1, 4\)"),
        (lambda: StreamJoiner(SR).end_segment("stop"), "segment end must be a Segment or one of"),
        (lambda: StreamJoiner(SR, rule={"fade_s": 0}), "rule must be a JoinRule, got dict"),
        (lambda: JoinRule(sentence_s=-0.1), r"JoinRule.sentence_s must be a finite number >= 0 \(seconds\), got -0.1"),
        (lambda: JoinRule(fade_s=float("nan")), "JoinRule.fade_s must be a finite number >= 0"),
        (lambda: JoinRule().pause_s("pause"), "boundary must be one of"),
    ],
)
def test_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_segment_objects_and_strings_end_alike():
    seg = Segment("x", 0, 1, "clause", "english", "latin")
    a = StreamJoiner(SR)
    b = StreamJoiner(SR)
    w = _wavs([500])[0]
    assert np.array_equal(
        np.concatenate([a.push(w), a.end_segment(seg), a.push(w)]),
        np.concatenate([b.push(w), b.end_segment("clause"), b.push(w)]),
    )
