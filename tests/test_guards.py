"""qwen3tts_jax.guards: finish reasons and the codebook-0 loop detector.

The detector is checked against a brute-force reading of its definition (`_oracle`), fed frame by
frame, in random chunks and all at once; it must fire on synthetic runaways (exact and sampled
loops, a held code, near-silent "room tone") and stay quiet on 2,000 frames of uniform ids and of
speech-like ids (`speech_like`: no real codec ids are at hand on CPU with random weights).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from qwen3tts_jax.guards import FinishReason, Loop, LoopConfig, LoopDetector, finish_reason


@functools.cache
def _speech_like(n: int, seed: int) -> np.ndarray:
    """Codebook-0-like ids with the structure of speech: a lexicon of 300 words (fixed strings of
    phones, Zipf-distributed), each phone 1–3 frames long and drawn from four ids of its own (one
    of them 70 % of the time), 0–2 frames between words and 4–12 at sentence ends among three
    "silence" ids, and now and then a word said three times over."""
    rng = np.random.default_rng(seed)
    phones = [rng.choice(2048, size=4, replace=False) for _ in range(40)]
    lexicon = [rng.integers(0, 40, size=rng.integers(2, 8)) for _ in range(300)]
    zipf = 1 / np.arange(1, 301)
    zipf /= zipf.sum()

    def silence(k):
        return [int(rng.choice([0, 1, 2], p=[0.8, 0.1, 0.1])) for _ in range(k)]

    out: list[int] = []
    words = 0
    while len(out) < n:
        word = lexicon[rng.choice(300, p=zipf)]
        for _ in range(3 if rng.random() < 0.02 else 1):
            for ph in word:
                out += [int(rng.choice(phones[ph], p=[0.7, 0.1, 0.1, 0.1])) for _ in range(rng.integers(1, 4))]
            out += silence(rng.integers(0, 3))
        words += 1
        if words > rng.integers(5, 15):
            out += silence(rng.integers(4, 13))
            words = 0
    return np.array(out[:n])


def speech_like(n: int, seed: int) -> np.ndarray:
    return _speech_like(n, seed).copy()


def _oracle(codes: np.ndarray, cfg: LoopConfig) -> tuple[int, str, int] | None:
    """The first frame count n at which the definition holds for codes[:n], by brute force:
    (n, kind, period) with the smallest period that holds, periodic before monotone."""
    for n in range(1, len(codes) + 1):
        for p in range(1, cfg.max_period + 1):
            span = max(cfg.min_span, cfg.min_repeats * p)
            if n < span:
                continue
            w = codes[n - span : n]
            matches = int(np.sum(w[p:] == w[:-p]))
            if matches >= np.ceil(cfg.min_match * (span - p) - 1e-9):
                return n, "periodic", p
        if cfg.distinct_window is not None and n >= cfg.distinct_window:
            if len(np.unique(codes[n - cfg.distinct_window : n])) <= cfg.max_distinct:
                return n, "monotone", 0
    return None


def _feed(codes: np.ndarray, chunks, cfg: LoopConfig = LoopConfig()) -> LoopDetector:
    det = LoopDetector(cfg)
    pos = 0
    for size in chunks:
        det.update(codes[pos : pos + size])
        pos += size
    det.update(codes[pos:])
    return det


def _random_chunks(n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    out = []
    while sum(out) < n:
        out.append(int(rng.integers(0, 40)))
    return out


# --------------------------------------------------------------------------- finish reasons


def test_finish_reason_values_and_order():
    assert [r.value for r in FinishReason] == ["stop", "length", "loop", "cancelled", "error"]
    assert FinishReason.LOOP == "loop" and FinishReason("length") is FinishReason.LENGTH
    assert FinishReason.worst(["stop", FinishReason.LENGTH, "stop"]) is FinishReason.LENGTH
    assert FinishReason.worst(["loop", "length"]) is FinishReason.LOOP
    assert FinishReason.worst(["stop", "error", "cancelled"]) is FinishReason.ERROR
    assert FinishReason.worst([]) is FinishReason.STOP
    with pytest.raises(ValueError, match="'late'"):
        FinishReason.worst(["late"])


def test_finish_reason_precedence():
    assert finish_reason(eos=True, looped=True, frames=10, max_new_tokens=11) is FinishReason.STOP
    assert finish_reason(eos=False, looped=True, frames=3, max_new_tokens=100) is FinishReason.LOOP
    assert finish_reason(eos=False, looped=False, frames=99, max_new_tokens=100) is FinishReason.LENGTH
    with pytest.raises(ValueError, match="frames=98, max_new_tokens=100"):
        finish_reason(eos=False, looped=False, frames=98, max_new_tokens=100)


# --------------------------------------------------------------------------- config


def test_config_spans_and_history():
    cfg = LoopConfig()
    assert [cfg.span(p) for p in (1, 12, 13, 32)] == [50, 50, 52, 128]
    assert cfg.history == 128


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_period=0), "max_period must be an int >= 1, got 0"),
        (dict(min_span=2.5), "min_span must be an int >= 1, got 2.5"),
        (dict(min_repeats=1), "min_repeats must be an int >= 2, got 1"),
        (dict(min_match=0), r"min_match must be in \(0, 1\], got 0"),
        (dict(min_match=1.5), r"min_match must be in \(0, 1\], got 1.5"),
        (dict(min_match=True), r"min_match must be in \(0, 1\], got True"),
        (dict(distinct_window=4), r"distinct_window must be None or an int > max_distinct \(4\), got 4"),
        (dict(max_distinct=True), "max_distinct must be an int >= 1, got True"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LoopConfig(**kwargs)


# --------------------------------------------------------------------------- firing


@pytest.mark.parametrize("period", [1, 2, 5, 9, 17, 32])
def test_exact_loop_fires_where_the_definition_says(period):
    rng = np.random.default_rng(period)
    prefix = rng.integers(3, 2048, 200)
    codes = np.concatenate([prefix, np.tile(rng.integers(3, 2048, period), 200 // period + 8)])
    det = _feed(codes, [1] * len(codes))
    n, kind, p = _oracle(codes, LoopConfig())
    assert det.loop == Loop(kind, det.loop.start, n, p)
    assert (kind, p) == ("periodic", period)
    assert det.loop.start == 200 and det.loop.keep == 200 + period  # keep one copy of the pattern
    assert _feed(codes, []).loop == det.loop == _feed(codes, _random_chunks(len(codes), period)).loop


def test_sampled_loop_fires():
    """A word loop whose frames are resampled 10 % of the time still fires, within 5 s."""
    rng = np.random.default_rng(0)
    pattern = rng.integers(3, 2048, 9)
    loop = np.tile(pattern, 60)
    loop = np.where(rng.random(len(loop)) < 0.1, rng.integers(3, 2048, len(loop)), loop)
    codes = np.concatenate([speech_like(400, 1), loop])
    det = _feed(codes, _random_chunks(len(codes), 1))
    assert det.fired and det.loop.kind == "periodic" and det.loop.period == 9
    assert det.loop.end - 400 <= 62  # frames of loop before it fired (5 s at 12.5 Hz)
    assert abs(det.loop.start - 400) <= 9
    assert (det.loop.end, "periodic", 9) == _oracle(codes, LoopConfig())


def test_held_code_fires_after_three_seconds_and_keeps_the_speech():
    codes = np.concatenate([speech_like(300, 2), np.full(120, 7)])
    det = _feed(codes, [5] * 84)
    assert det.fired
    assert det.loop.end == _oracle(codes, LoopConfig())[0]
    assert 300 + 30 <= det.loop.end <= 300 + 38
    assert det.loop.keep == 300 + det.loop.period  # trims the held code, not the speech before it


def test_room_tone_fires_as_monotone():
    rng = np.random.default_rng(3)
    codes = np.concatenate([speech_like(300, 3), rng.choice([5, 6, 7], 200)])
    det = _feed(codes, _random_chunks(len(codes), 3))
    assert det.loop.kind == "monotone" and det.loop.period == 0
    # Six seconds among at most four ids: the window may still hold a last speech frame or two.
    assert det.loop.end == _oracle(codes, LoopConfig())[0]
    assert 300 + 75 - 4 <= det.loop.end <= 300 + 75
    assert 296 <= det.loop.start <= 300


def test_monotone_rule_can_be_off():
    rng = np.random.default_rng(3)
    codes = rng.choice([5, 6, 7], 500)
    assert _feed(codes, [], LoopConfig(distinct_window=None)).loop is None
    assert _feed(codes, []).loop.kind == "monotone"


# --------------------------------------------------------------------------- staying quiet


@pytest.mark.parametrize("seed", range(5))
def test_uniform_ids_do_not_fire(seed):
    codes = np.random.default_rng(seed).integers(0, 2048, 2000)
    assert _feed(codes, _random_chunks(2000, seed)).loop is None


@pytest.mark.parametrize("seed", range(20))
def test_speech_like_ids_do_not_fire(seed):
    codes = speech_like(2000, seed)
    det = _feed(codes, [1] * 2000)
    assert det.loop is None and det.frames == 2000
    if seed < 2:  # the brute-force reading agrees (slow: a few seeds)
        assert _oracle(codes, LoopConfig()) is None


def test_the_margins_the_defaults_rest_on():
    """LoopConfig's docstring: on speech-like ids the match fraction at any period stays near
    0.5 (p = 1) and below 0.4 elsewhere, and 6 s hold at least 21 distinct ids."""
    cfg = LoopConfig()
    best = np.zeros(cfg.max_period + 1)
    fewest = 10**9
    for seed in range(20):
        codes = speech_like(2000, seed)
        for p in range(1, cfg.max_period + 1):
            k = cfg.span(p) - p
            c = np.concatenate([[0], np.cumsum(codes[p:] == codes[:-p])])
            best[p] = max(best[p], ((c[k:] - c[:-k]) / k).max())
        fewest = min(fewest, min(len(set(codes[i : i + 75])) for i in range(2000 - 75)))
    assert best[1] < 0.6 and best[2:].max() < 0.4 and best.max() < cfg.min_match - 0.15
    assert fewest >= 20


def test_natural_repetition_and_pauses_do_not_fire():
    rng = np.random.default_rng(5)
    word = rng.integers(3, 2048, 12)
    codes = np.concatenate(
        [
            speech_like(200, 5),
            np.tile(word, 3),  # "no, no, no": three copies of a word
            speech_like(200, 6),
            np.full(25, 0),  # a 2 s pause
            speech_like(200, 7),
        ]
    )
    assert _feed(codes, [1] * len(codes)).loop is None


# --------------------------------------------------------------------------- use


def test_sticky_and_reset():
    det = LoopDetector()
    det.update(np.full(60, 9))
    loop = det.loop
    assert det.fired and det.update(np.arange(100)) and det.loop == loop and det.frames == 50
    det.reset()
    assert not det.fired and det.frames == 0
    assert not det.update(speech_like(500, 1))


def test_history_is_bounded():
    det = LoopDetector()
    det.update(speech_like(5000, 4))
    assert len(det._ring) == len(det._bits) == det.config.history + det.config.max_period
    assert det.frames == 5000 and not det.fired


@pytest.mark.parametrize(
    "codes, match",
    [
        (np.zeros((2, 3), np.int32), r"1-D integer array, got shape \(2, 3\)"),
        (np.array([1.0, 2.0]), "dtype float64"),
        (np.array([True, False]), "dtype bool"),
        (np.array([3, -1]), "codebook ids >= 0, got -1"),
    ],
)
def test_update_errors(codes, match):
    with pytest.raises(ValueError, match=match):
        LoopDetector().update(codes)


def test_update_takes_scalars_and_empty_chunks():
    det = LoopDetector()
    assert det.update(5) is False and det.update(np.array([], np.int64)) is False and det.update([]) is False
    assert det.frames == 1
    with pytest.raises(ValueError, match="config must be a LoopConfig"):
        LoopDetector({"max_period": 3})  # type: ignore[arg-type]
