"""Long text as a sequence of segments through the one engine: split, budget, guard, join.

No reference class: qwen-tts 0.1.1 speaks one text per run with one budget (2048 frames by
default), which cuts long text off and lets a runaway loop until the budget. Here a text is cut
into sentence/clause segments (`segment.split_text`, at most `max_tokens` text tokens each),
every segment becomes its own engine request with the same voice (speaker, instruct or voice
clone prompt — the clone prompt is built once), the same key (every segment draws with its
text's key, as vllm-omni gives each segment the request's seed), its own budget
(`segment.estimate_max_new_tokens`, unless the caller set `max_new_tokens`) and its own loop
guard (`guards.LoopDetector`, ending a runaway segment with finish reason "loop"). Segments of
all texts share the engine's slots; their audio is joined by `join.StreamJoiner` (a pause chosen
by how the text broke, few-ms fades at the seams), offline and streaming alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from qwen3tts_jax.engine import Engine, EngineShape, Request, Result
from qwen3tts_jax.guards import FinishReason, LoopConfig, LoopDetector
from qwen3tts_jax.join import JoinRule, StreamJoiner
from qwen3tts_jax.segment import Segment, estimate_max_new_tokens, split_text

MAX_SLOTS = 8  # segments run side by side at most (the rest wait for a slot)


@dataclasses.dataclass(frozen=True)
class LongFormOptions:
    """How long text is cut and guarded (the defaults are `split_text`'s and `LoopConfig`'s)."""

    max_tokens: int = 80  # text tokens per segment
    loop: LoopConfig | None = LoopConfig()  # None: no loop guard
    join: JoinRule = JoinRule()
    slots: int = MAX_SLOTS

    @staticmethod
    def of(value) -> LongFormOptions | None:
        """`long_form=` of the API: False/None (off), True (defaults), or LongFormOptions."""
        if value is None or value is False:
            return None
        if value is True:
            return LongFormOptions()
        if isinstance(value, LongFormOptions):
            return value
        raise ValueError(f"long_form must be a bool or a LongFormOptions, got {value!r}")


@dataclasses.dataclass(frozen=True)
class SegmentReport:
    """What became of one segment: its text span and how its run ended."""

    text: str
    start: int  # character span in the input text
    end: int
    boundary: str
    frames: int
    max_new_tokens: int
    finish_reason: str


@dataclasses.dataclass(frozen=True)
class LongFormPlan:
    """Texts cut into segments, each segment's engine request (in text order)."""

    segments: list[list[Segment]]  # per text
    requests: list[list[Request]]  # per text, one per segment


def split_texts(
    texts: Sequence[str], languages: Sequence[str], options: LongFormOptions, count_tokens: Callable[[str], int]
) -> list[list[Segment]]:
    """Each text's segments; a text that yields none (whitespace only) is an error naming it."""
    out = []
    for i, (text, lang) in enumerate(zip(texts, languages)):
        segs = split_text(text, lang.lower(), max_tokens=options.max_tokens, count_tokens=count_tokens)
        if not segs:
            raise ValueError(f"text[{i}]: nothing to say after segmentation, got {text!r}")
        out.append(segs)
    return out


def plan(
    segments: list[list[Segment]], requests: list[Request], explicit_budget: int | None, options: LongFormOptions
) -> LongFormPlan:
    """Give the flat per-segment `requests` (built by the API in segment order, each drawing with
    the key of request `text_keys[i]`) their budgets and guards, grouped per text."""
    grouped, k = [], 0
    for segs in segments:
        row = []
        for seg in segs:
            r = requests[k]
            budget = explicit_budget or estimate_max_new_tokens(seg.text, seg.language)
            guard = None
            if options.loop is not None:
                detector = LoopDetector(options.loop)
                guard = lambda codes0, d=detector: FinishReason.LOOP.value if d.update(codes0) else None
            row.append(dataclasses.replace(r, max_new_tokens=budget, guard=guard, id=f"{r.id or 'seg'}-{k}"))
            k += 1
        grouped.append(row)
    return LongFormPlan(segments, grouped)


def _engine(model, flat: list[Request], options: LongFormOptions, **kwargs) -> Engine:
    slots = min(1 << (len(flat) - 1).bit_length(), options.slots)  # a power of two: few slot counts to compile
    shape = EngineShape.fit(flat, model.config, model.placement, slots=slots)
    return Engine(model, shape, **kwargs)


def reports(p: LongFormPlan, results: list[list[Result]]) -> list[list[SegmentReport]]:
    return [
        [
            SegmentReport(s.text, s.start, s.end, s.boundary, len(r.codes), q.max_new_tokens, r.finish_reason)
            for s, q, r in zip(segs, reqs, res)
        ]
        for segs, reqs, res in zip(p.segments, p.requests, results)
    ]


def run(model, p: LongFormPlan, options: LongFormOptions) -> tuple[list[np.ndarray], list[list[SegmentReport]]]:
    """Offline: every segment of every text through one engine; per text the joined audio."""
    flat = [r for row in p.requests for r in row]
    results = _engine(model, flat, options).run(flat)
    per_text, k = [], 0
    for row in p.requests:
        per_text.append(results[k : k + len(row)])
        k += len(row)
    sr = model.speech_tokenizer.get_output_sample_rate()
    wavs = []
    for segs, res in zip(p.segments, per_text):
        joiner = StreamJoiner(sr, options.join)
        parts = []
        for seg, r in zip(segs, res):
            parts += [joiner.push(r.audio), joiner.end_segment(seg)]
        wavs.append(np.concatenate(parts).astype(np.float32))
    return wavs, reports(p, per_text)


def stream(
    model,
    p: LongFormPlan,
    options: LongFormOptions,
    chunk_frames: int,
    first_chunk_frames: int,
    on_done: Callable[[list[SegmentReport]], None],
) -> Iterator[np.ndarray]:
    """Streaming one text: all its segments are submitted at once (they share the slots), and
    their audio is read in order, joined as it comes — segment k+1 is usually well under way
    when segment k ends, so the generator has no gap at the seam."""
    (row,), (segs,) = p.requests, p.segments
    engine = _engine(model, row, options, chunk_frames=chunk_frames, first_chunk_frames=first_chunk_frames)
    handles = [engine.submit(r) for r in row]
    joiner = StreamJoiner(model.speech_tokenizer.get_output_sample_rate(), options.join)
    try:
        for seg, h in zip(segs, handles):
            for chunk in h:
                out = joiner.push(chunk.audio)
                if len(out):
                    yield out
            tail = joiner.end_segment(seg)
            if len(tail):
                yield tail
    finally:
        for h in handles:
            if not h.done:
                h.cancel()
        if any(not h.done for h in handles):
            engine.step()
    on_done(reports(p, [[h.result() for h in handles]])[0])
