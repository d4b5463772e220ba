"""How a stream's frames are cut for the streaming decoder: reference chunks, then fixed pieces.

Mirrors the frame bookkeeping of `Qwen3TTSTokenizerV2Decoder.chunked_decode(chunk_size=300,
left_context_size=25)`: independent forwards over 300-frame chunks, each preceded by up to 25
frames of left context whose samples are dropped. Seen from a stream, a reference chunk is a
*run*: the decoder restarts (fresh state, positions from 0), re-decodes the context frames, then
decodes the chunk's frames (`runs`).

The jitted step is compiled per frame count, so a run is decoded in pieces of a few fixed sizes
(powers of two up to `max_piece`: `split`) and the number of programs does not depend on any
length. Only a stream's very last piece may be padded (`padded_length`): the decoder is causal,
so code-0 frames after the end change no earlier sample, and the state they leave is never read.
Calls have a fixed cost besides their frames; `call_overhead` is that cost in frames of one
row's compute, and decides when padding (frames, or rows of a batch: `row_groups`) is cheaper
than another call. On the CPU a call's cost follows its rows × frames alone (8 rows × 1 frame
costs what 1 row × 8 frames does); 1- and 2-frame calls cost 1.3-2x per frame (that fixed
cost), and from 16 row-frames on the cost per row-frame is flat within the shared machine's
noise. `MAX_PIECE` trades calls against compiled programs (one per size); `MAX_CALL_FRAMES`
bounds a call's activations (a few MB per row-frame at full size). Measured on the CPU
(benchmarks/RESULTS.md, "codec"); a GPU wants larger calls (pass larger `max_piece` /
`max_call_frames`)."""

from __future__ import annotations

import dataclasses

__all__ = [
    "CALL_OVERHEAD",
    "MAX_CALL_FRAMES",
    "MAX_PIECE",
    "Run",
    "padded_length",
    "piece_sizes",
    "row_groups",
    "runs",
    "split",
]

MAX_PIECE = 64
MAX_CALL_FRAMES = 256
CALL_OVERHEAD = 1.0


@dataclasses.dataclass(frozen=True)
class Run:
    """Stream frames `[first, stop)` decoded in one go, keeping the audio of `[emit, stop)`;
    `fresh`: the decoder restarts at `first` (a reference chunk boundary)."""

    fresh: bool
    first: int
    emit: int
    stop: int


def runs(done: int, k: int, chunk_size: int, left_context: int, reference_chunking: bool = True) -> list[Run]:
    """The runs that decode stream frames `[done, done + k)` after `done` frames were decoded.

    With `reference_chunking`, a run never crosses a multiple of `chunk_size`, and one that starts
    on it (after frame 0) restarts the decoder `ctx` frames earlier, `ctx = left_context if
    start - left_context > 0 else start` (the reference's rule), keeping only the new frames'
    audio. Without it the stream is one unchunked forward: a single run."""
    out: list[Run] = []
    at, end = done, done + k
    while at < end:
        if not reference_chunking:
            out.append(Run(False, at, at, end))
            break
        if at > 0 and at % chunk_size == 0:
            ctx = left_context if at - left_context > 0 else at
            first, fresh = at - ctx, True
        else:
            first, fresh = at, False
        stop = min(end, (at // chunk_size + 1) * chunk_size)
        out.append(Run(fresh, first, at, stop))
        at = stop
    return out


def piece_sizes(max_piece: int = MAX_PIECE) -> tuple[int, ...]:
    """The frame counts the step is compiled for: 1, 2, 4, ..., max_piece."""
    if max_piece < 1 or max_piece & (max_piece - 1):
        raise ValueError(f"max_piece must be a power of two >= 1, got {max_piece!r}")
    return tuple(1 << i for i in range(max_piece.bit_length()))


def split(n: int, max_piece: int = MAX_PIECE) -> list[int]:
    """n frames as pieces of `piece_sizes(max_piece)`, largest first (max_piece, ..., then the
    binary digits of the remainder)."""
    whole, rest = divmod(n, max_piece)
    return [max_piece] * whole + [1 << i for i in reversed(range(rest.bit_length())) if rest >> i & 1]


def _pad_pays(n: int, unit: float, call_overhead: float) -> int:
    """n rounded up to a power of two when the calls that saves cost more than the padding (each
    padded unit costs `unit`), else n."""
    if n <= 1:
        return n
    up = 1 << (n - 1).bit_length()
    return up if (bin(n).count("1") - 1) * call_overhead > (up - n) * unit else n


def padded_length(n: int, max_piece: int = MAX_PIECE, call_overhead: float = CALL_OVERHEAD) -> int:
    """The length a stream's final run of n frames is decoded at: n, or n with its remainder
    below `max_piece` padded up to one piece where that saves more calls than it adds frames."""
    whole, rest = divmod(n, max_piece)
    return whole * max_piece + _pad_pays(rest, 1.0, call_overhead)


def row_groups(
    n: int, frames: int, call_overhead: float = CALL_OVERHEAD, max_call_frames: int = MAX_CALL_FRAMES
) -> list[tuple[int, int]]:
    """n rows that decode a piece of `frames` frames, as calls `(rows, bucket)` with power-of-two
    batch buckets (a bucket larger than its rows is padded): at most `max_call_frames` row-frames
    a call (one row at least); the rows left below a full call in one padded call where that is
    cheaper than the extra calls, else the binary split of them."""
    cap = 1 << max(0, (max_call_frames // frames).bit_length() - 1) if max_call_frames >= frames else 1
    whole, rest = divmod(n, cap)
    groups = [(cap, cap)] * whole
    bucket = _pad_pays(rest, float(frames), call_overhead)
    if rest and (bucket != rest or rest & (rest - 1) == 0):
        groups.append((rest, bucket))
    elif rest:
        groups += [(b, b) for b in split(rest, 1 << (rest.bit_length() - 1))]
    return groups
