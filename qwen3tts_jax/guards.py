"""Guards on one generation run: why it ended (`FinishReason`), and a loop detector on codebook 0.

No reference class: qwen-tts 0.1.1 stops a run on EOS or at `max_new_tokens` and does not say
which. Peers report runs that never stop (sglang-omni #1179: 0.34 % of 0.6B-Base requests run to
2048 frames in a near-silent state; vllm-omni #6158: a word repeated over and over); the budget of
`segment.estimate_max_new_tokens` bounds them, and `LoopDetector` ends most of them sooner, from
the codebook-0 ids as they come off the device (host side, O(max_period) work a frame).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable
from typing import Literal

import numpy as np


class FinishReason(str, enum.Enum):
    """How a run (a segment) ended; the str value is what a server reports (X-Finish-Reason)."""

    STOP = "stop"  # the model sampled EOS
    LENGTH = "length"  # max_new_tokens reached without EOS
    LOOP = "loop"  # ended by the LoopDetector
    CANCELLED = "cancelled"  # the caller gave up (client gone, generator closed)
    ERROR = "error"

    @classmethod
    def worst(cls, reasons: Iterable[FinishReason | str]) -> FinishReason:
        """The reason a request of several segments reports: the worst of its segments', in the
        order stop < length < loop < cancelled < error (STOP for none)."""
        order = list(cls)
        return max((cls(r) for r in reasons), key=order.index, default=cls.STOP)


def finish_reason(*, eos: bool, looped: bool, frames: int, max_new_tokens: int) -> FinishReason:
    """The reason of a finished run: EOS wins (the run ended on its own, even on the frame where
    a loop would have fired), then a loop, then the budget (M tokens give M−1 frames)."""
    if eos:
        return FinishReason.STOP
    if looped:
        return FinishReason.LOOP
    if frames >= max_new_tokens - 1:
        return FinishReason.LENGTH
    raise ValueError(
        f"a run with no EOS and no loop must have used its budget: frames={frames}, max_new_tokens={max_new_tokens}"
    )


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """When `LoopDetector` fires (frames at 12.5 Hz).

    Periodic: some period p in [1, max_period] such that, over the last span_p = max(min_span,
    min_repeats·p) frames, at least `min_match` of the frames after the first period equal the
    frame p earlier. Monotone: at most `max_distinct` distinct ids in the last `distinct_window`
    frames (None: off).

    Why these numbers:
    * max_period 32 (2.6 s) covers a repeated syllable, word or short phrase; a repeated whole
      sentence is left to the budget (two copies are not enough evidence).
    * min_repeats 4 and min_span 50 (4 s): speech repeats words ("no, no, no"), and a segment may
      hold a pause of a second or two, but not four near-copies of one pattern, nor one code held
      for three quarters of four seconds (a held code fires after about 3 s).
    * min_match 0.75: a sampled loop (temperature 0.9, top-k 50) does not repeat bit for bit; a
      pattern whose frames change by up to ~13 % each time still matches ≥ 0.87² of the time. On
      synthetic speech-like ids (a lexicon of words, phones lasting 1–3 frames, pauses, a word said
      three times now and then; `tests/test_guards.py`) the largest match fraction over any window
      of 2,000 frames is about 0.53 at p = 1 (a phone held for several frames) and below 0.4 at
      other periods.
    * max_distinct 4 over 75 frames (6 s): the near-silent "room tone" state of sglang-omni #1179
      samples among a few codes, not periodically; six seconds of speech use tens of distinct ids
      (at least 21 in the synthetic speech).
    """

    max_period: int = 32
    min_repeats: int = 4
    min_span: int = 50
    min_match: float = 0.75
    distinct_window: int | None = 75
    max_distinct: int = 4

    def __post_init__(self):
        for name in ("max_period", "min_span", "max_distinct"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"LoopConfig.{name} must be an int >= 1, got {v!r}")
        if isinstance(self.min_repeats, bool) or not isinstance(self.min_repeats, int) or self.min_repeats < 2:
            raise ValueError(f"LoopConfig.min_repeats must be an int >= 2, got {self.min_repeats!r}")
        m = self.min_match
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 < m <= 1:
            raise ValueError(f"LoopConfig.min_match must be in (0, 1], got {self.min_match!r}")
        w = self.distinct_window
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w <= self.max_distinct):
            raise ValueError(
                f"LoopConfig.distinct_window must be None or an int > max_distinct ({self.max_distinct}), got {w!r}"
            )

    def span(self, period: int) -> int:
        return max(self.min_span, self.min_repeats * period)

    @property
    def history(self) -> int:
        """Frames the detector must remember."""
        return max(self.span(self.max_period), self.distinct_window or 0)


@dataclasses.dataclass(frozen=True)
class Loop:
    """A detected loop: frames [start, end) of the run, end being one past the frame it fired on
    and start where the repetition (or the monotone run) began, as far back as the detector
    remembers (`LoopConfig.history` + max_period frames). period: the pattern length (0 for a
    monotone run). keep: the frames worth keeping — through the first copy of the pattern, or up
    to the monotone run."""

    kind: Literal["periodic", "monotone"]
    start: int
    end: int
    period: int

    @property
    def keep(self) -> int:
        return self.start + self.period


class LoopDetector:
    """Incremental: feed a run's codebook-0 ids as they come (`update`, any number at a time).
    Each frame costs O(max_period) — ring buffers of the last ids and of their matches at every
    lag (a bit mask per frame), a running match count per lag, a count of the ids in the
    monotone window — and frames are taken one at a time whatever the chunking, so the result
    cannot depend on it. Plain Python on purpose: with 32 lags it is several times faster per
    frame than the same steps as small numpy ops. Sticky: once fired, `update` returns True and
    `loop` says where."""

    def __init__(self, config: LoopConfig = LoopConfig()):
        if not isinstance(config, LoopConfig):
            raise ValueError(f"config must be a LoopConfig, got {type(config).__name__}")
        self.config = config
        lags = range(1, config.max_period + 1)
        self._spans = [config.span(p) for p in lags]
        self._comparisons = [config.span(p) - p for p in lags]  # frames in a span after its first period
        self._needed = [math.ceil(config.min_match * c - 1e-9) for c in self._comparisons]
        self._size = config.history + config.max_period  # ring length: every window fits
        self.reset()

    def reset(self) -> None:
        """Start over for a new run (a slot reused)."""
        self._ring = [0] * self._size  # ids, frame t at t % size
        self._bits = [0] * self._size  # bit p-1 set: id[t] == id[t - p]
        self._counts = [0] * self.config.max_period  # matches in each lag's window
        self._ids: dict[int, int] = {}  # id -> occurrences in the monotone window
        self.frames = 0  # frames seen
        self.loop: Loop | None = None

    @property
    def fired(self) -> bool:
        return self.loop is not None

    def update(self, codes0) -> bool:
        """Feed the next codebook-0 ids (an int or a 1-D integer array); True once a loop is found
        (the frames after the one it fired on are not looked at: `frames` stops there)."""
        if self.loop is not None:
            return True
        x = np.asarray(codes0)
        if x.ndim == 0:
            x = x.reshape(1)
        if x.ndim != 1 or not (x.dtype.kind in "iu" or (x.size == 0 and x.dtype.kind == "f")):
            raise ValueError(f"codes0 must be an int or a 1-D integer array, got shape {x.shape} dtype {x.dtype}")
        if x.size and x.min() < 0:
            raise ValueError(f"codes0 must be codebook ids >= 0, got {int(x.min())}")
        for code in x.tolist():
            self._step(code)
            if self.loop is not None:
                return True
        return False

    def _step(self, code: int) -> None:
        cfg, t, size = self.config, self.frames, self._size
        ring, bits, counts, comparisons = self._ring, self._bits, self._counts, self._comparisons
        slot = t % size
        ring[slot] = code
        mask = 0
        for i in range(cfg.max_period):
            if i < t and ring[(t - i - 1) % size] == code:
                mask |= 1 << i
                counts[i] += 1
            old = t - comparisons[i]  # the frame this lag's window lets go of
            if old >= 0 and bits[old % size] >> i & 1:
                counts[i] -= 1
        bits[slot] = mask
        w = cfg.distinct_window
        if w is not None:
            self._ids[code] = self._ids.get(code, 0) + 1
            if t >= w:
                gone = ring[(t - w) % size]
                if self._ids[gone] == 1:
                    del self._ids[gone]
                else:
                    self._ids[gone] -= 1
        self.frames = n = t + 1
        for i in range(cfg.max_period):
            if n >= self._spans[i] and counts[i] >= self._needed[i]:
                start = self._recent_start() + _periodic_onset(self._recent(), -1, i + 1)
                self.loop = Loop("periodic", start, n, i + 1)
                return
        if w is not None and n >= w and len(self._ids) <= cfg.max_distinct:
            self.loop = Loop("monotone", self._recent_start() + _monotone_onset(self._recent(), -1, w), n, 0)

    def _recent_start(self) -> int:
        return max(self.frames - self._size, 0)

    def _recent(self) -> np.ndarray:
        """The remembered ids in order (frames [_recent_start(), frames))."""
        n = min(self.frames, self._size)
        return np.array([self._ring[t % self._size] for t in range(self.frames - n, self.frames)])


def _periodic_onset(codes: np.ndarray, pos: int, p: int) -> int:
    """Where a loop of period p ending at codes[pos] began: walking back, the loop goes on while
    no whole period goes by without a frame equal to the one p earlier."""
    pos %= len(codes)
    onset, misses = pos + 1, 0
    for t in range(pos, p - 1, -1):
        if codes[t] == codes[t - p]:
            onset, misses = t, 0
        else:
            misses += 1
            if misses >= p:
                break
    return onset - p  # the first copy of the pattern


def _monotone_onset(codes: np.ndarray, pos: int, window: int) -> int:
    """Where a monotone run ending at codes[pos] began: back while the ids stay among its own."""
    pos %= len(codes)
    ids = set(codes[pos + 1 - window : pos + 1].tolist())
    t = pos + 1 - window
    while t > 0 and int(codes[t - 1]) in ids:
        t -= 1
    return t


__all__ = ["FinishReason", "finish_reason", "LoopConfig", "Loop", "LoopDetector"]
