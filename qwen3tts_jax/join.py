"""How the audio of consecutive segments (`segment.split_text`) becomes one waveform.

No reference class: qwen-tts 0.1.1 speaks one text per run. Each segment here is a complete
utterance that starts and ends near silence, so segments are not cross-faded (that would mix the
edges of two utterances); they are separated by a pause that depends on how the text broke
(`JoinRule`), and every segment fades in and out over a few milliseconds so that a seam — or an
end cut short by a guard — does not click.

`StreamJoiner` is the one implementation: it emits audio as the segment's audio arrives, holding
back only the fade-out's few milliseconds, and emits the pause when the next segment's first
samples arrive (never after the last one). `join` runs it over whole waveforms, so offline and
streaming give the same samples however the audio was chunked.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import no_type_check

import numpy as np
from jaxtyping import Float

from qwen3tts_jax.segment import BOUNDARIES, Boundary, Segment


@dataclasses.dataclass(frozen=True)
class JoinRule:
    """Pause after a segment, by how it ended, and the fade at each of its edges (seconds).

    * sentence 0.15 s: the middle of the 120–180 ms the FQT fork puts between its chunks; the
      model adds its own lead-in and tail silence to each segment, so the pause heard is longer.
    * paragraph 0.40 s: a paragraph (or a line: a title, a list item) is a longer break in reading.
    * clause 0.06 s: an over-long sentence cut at a comma or semicolon; short, because the model
      already ends and starts an utterance there.
    * word, cut 0 s: the text has no pause there; only the fades meet (a 2·fade dip).
    * fade 5 ms (a raised-cosine ramp): long enough to take the click out of a waveform that
      stops off zero, short enough not to touch a syllable.
    A pause after a segment that produced no audio is kept: the next audible seam gets the
    longest pause owed since the last audible segment.
    """

    sentence_s: float = 0.15
    paragraph_s: float = 0.40
    clause_s: float = 0.06
    word_s: float = 0.0
    cut_s: float = 0.0
    fade_s: float = 0.005

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"JoinRule.{f.name} must be a finite number >= 0 (seconds), got {v!r}")

    def pause_s(self, boundary: Boundary) -> float:
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {list(BOUNDARIES)}, got {boundary!r}")
        return getattr(self, f"{boundary}_s")

    def pause_samples(self, boundary: Boundary, sample_rate: int) -> int:
        return round(self.pause_s(boundary) * sample_rate)

    def fade_samples(self, sample_rate: int) -> int:
        return round(self.fade_s * sample_rate)


def _ramp(n: int) -> np.ndarray:
    """Raised-cosine fade-in gains for n samples (0 < g < 1, rising); reversed for a fade-out."""
    return (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32)


def _check_sample_rate(sample_rate) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be an int > 0, got {sample_rate!r}")
    return int(sample_rate)


def _boundary_of(end) -> Boundary:
    b = end.boundary if isinstance(end, Segment) else end
    if b not in BOUNDARIES:
        raise ValueError(f"segment end must be a Segment or one of {list(BOUNDARIES)}, got {end!r}")
    return b


class StreamJoiner:
    """Joins segments as their audio arrives: for each segment, `push` its audio (any number of
    chunks, mono float), then `end_segment` with the Segment (or its boundary). Each call returns
    the samples that are final now."""

    def __init__(self, sample_rate: int, rule: JoinRule = JoinRule()):
        if not isinstance(rule, JoinRule):
            raise ValueError(f"rule must be a JoinRule, got {type(rule).__name__}")
        self.sample_rate = _check_sample_rate(sample_rate)
        self.rule = rule
        self._fade = rule.fade_samples(self.sample_rate)
        self._ramp = _ramp(self._fade)
        self._held = np.zeros(0, np.float32)  # the current segment's last `fade` samples, not yet final
        self._pos = 0  # samples of the current segment received so far
        self._pause = 0  # samples of silence owed before the next audible segment
        self._audible = False  # whether any segment has produced audio yet

    @no_type_check  # checks its own argument (the error names it): left out of the test run's shape checks
    def push(self, audio: Float[np.ndarray, " n"]) -> Float[np.ndarray, " n_out"]:
        """Audio of the current segment; returns the pause owed (at its first samples) and every
        sample but the last `fade` ones received so far, faded in where they are the first."""
        x = np.asarray(audio)
        if x.ndim != 1 or x.dtype.kind != "f":
            raise ValueError(f"audio must be a 1-D float array (mono), got shape {x.shape} dtype {x.dtype}")
        if x.size == 0:
            return np.zeros(0, np.float32)
        out = []
        if self._pos == 0:
            if self._audible and self._pause:
                out.append(np.zeros(self._pause, np.float32))
            self._pause = 0
            self._audible = True
        start = self._pos - len(self._held)  # segment index of buf[0]
        buf = np.concatenate([self._held, x.astype(np.float32)])
        self._pos += len(x)
        n_final = max(len(buf) - self._fade, 0)
        final = self._fade_in(buf[:n_final], start)
        self._held = buf[n_final:]
        out.append(final)
        return np.concatenate(out)

    def end_segment(self, end: Segment | Boundary) -> Float[np.ndarray, " n_out"]:
        """The end of the current segment: returns its held samples, faded out (and in, where
        the segment is shorter than a fade), and owes the pause its boundary calls for."""
        boundary = _boundary_of(end)
        held, start = self._held, self._pos - len(self._held)
        tail = self._fade_in(held, start)
        if len(tail):
            tail = tail * self._ramp[::-1][self._fade - len(tail) :]
        self._pause = max(self._pause, self.rule.pause_samples(boundary, self.sample_rate))
        self._held = np.zeros(0, np.float32)
        self._pos = 0
        return tail.astype(np.float32)

    def _fade_in(self, samples: np.ndarray, start: int) -> np.ndarray:
        """`samples` (segment indices start..) with the fade-in applied to those before `fade`."""
        n = min(max(self._fade - start, 0), len(samples))
        if n == 0:
            return samples
        out = samples.copy()
        out[:n] *= self._ramp[start : start + n]
        return out


@no_type_check  # checks its own arguments (the errors name them): left out of the test run's shape checks
def join(
    wavs: Sequence[Float[np.ndarray, " _n"]],
    segments: Sequence[Segment | Boundary],
    sample_rate: int,
    rule: JoinRule = JoinRule(),
) -> Float[np.ndarray, " n_out"]:
    """The waveform of whole segments, joined by `rule`: the samples a `StreamJoiner` emits."""
    if len(wavs) != len(segments):
        raise ValueError(f"wavs and segments must pair up, got {len(wavs)} wavs and {len(segments)} segments")
    for i, end in enumerate(segments):
        try:
            _boundary_of(end)
        except ValueError as e:
            raise ValueError(f"segments[{i}]: {e}") from None
    for i, w in enumerate(wavs):
        w = np.asarray(w)
        if w.ndim != 1 or w.dtype.kind != "f":
            raise ValueError(f"wavs[{i}] must be a 1-D float array (mono), got shape {w.shape} dtype {w.dtype}")
    joiner = StreamJoiner(sample_rate, rule)
    parts = [np.zeros(0, np.float32)]
    for w, end in zip(wavs, segments):
        parts += [joiner.push(w), joiner.end_segment(end)]
    return np.concatenate(parts)
