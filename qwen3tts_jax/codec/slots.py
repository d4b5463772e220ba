"""Streaming codec decode for many concurrent streams, one per slot (row), each at its own frame.

Mirrors `Qwen3TTSTokenizer.decode` per row: for every slot, the concatenated audio of its pushes
equals the reference's decode of (start context ++ every frame pushed) with the context's
samples removed — the reference's 300-frame chunks with 25 frames of left context
(`codec/pieces.py: runs`) followed per row, although rows cross their chunk boundaries at
different pushes. It is the codec half of the serving engine (slots join and leave at frame
boundaries); `decoder.decode` (offline, ragged batches) and `streaming.StreamingDecoder` are
thin users of it, so there is one streaming path.

All slots' states live in one `DecoderState` with `slots` rows. A push gathers only the rows that
have frames into a small batch bucket, runs the jitted step (`decoder.stream_step`) on pieces of
fixed sizes, and scatters the new rows back, so idle slots cost nothing and the programs compiled
are bounded by (piece sizes × batch buckets), whatever the lengths. Rows that share a piece size
share a call (`_schedule`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Collection, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from qwen3tts_jax.codec.config import DecoderConfig
from qwen3tts_jax.codec.decoder import (
    CHUNK_SIZE,
    LEFT_CONTEXT,
    init_state,
    prepare_params,
    stream_program,
    stream_step,
)
from qwen3tts_jax.codec.pieces import (
    CALL_OVERHEAD,
    MAX_CALL_FRAMES,
    MAX_PIECE,
    padded_length,
    piece_sizes,
    row_groups,
    runs,
)
from qwen3tts_jax.codec.state import DecoderState
from qwen3tts_jax.config import Policy
from qwen3tts_jax.sharding import abstract, put
from qwen3tts_jax.typing import Array, Bool, HostArray, Int

__all__ = ["CodecSlots"]


@jax.jit
def _gather(state: DecoderState, rows: Int[HostArray, " r"], fresh: Bool[HostArray, " r"]) -> DecoderState:
    """The states of `rows` (a bucket's padding rows: out of range, zeros), fresh ones zeroed."""
    return state.take(rows).reset(fresh)


def _scatter(state: DecoderState, rows: Int[HostArray, " r"], sub: DecoderState) -> DecoderState:
    return state.put(rows, sub)


@functools.lru_cache(maxsize=8)  # bounded: one per (mesh, donation) in use
def _scatter_program(replicated: NamedSharding | None, donate: bool):
    """`_scatter` jitted; on a mesh its result pinned replicated, so the state keeps one type
    push after push (left to XLA, its attention cache came back split over "model")."""
    pinned = {} if replicated is None else {"out_shardings": replicated}
    return jax.jit(_scatter, donate_argnums=0 if donate else (), **pinned)


def _replicated(params: dict) -> NamedSharding | None:
    """Replicated on the params' mesh, if they have one (None: one device). The state and a
    push's inputs are placed so on a mesh: then every push calls the step with the same types,
    and `compile()` compiles exactly the programs the pushes call (before, a push's host inputs
    landed uncommitted on one device and the state changed its sharding at the first push, so on
    a mesh the pushes after `compile()` still compiled dozens of programs)."""
    meshes = [leaf.sharding.mesh for leaf in jax.tree.leaves(params) if isinstance(leaf.sharding, NamedSharding)]
    return NamedSharding(meshes[0], P()) if meshes else None


def _typed(info, shardings, on_mesh: bool):
    """A lowered program's result types (`out_info`), with the compiled program's result
    shardings on a mesh: the types the next program of a push is called with."""
    return jax.tree.map(
        lambda t, sharding: jax.ShapeDtypeStruct(t.shape, t.dtype, sharding=sharding if on_mesh else None),
        info,
        shardings,
    )


@dataclasses.dataclass
class _Work:
    """One row's frames still to decode in this push: its runs, each `(fresh, codes (n, q),
    emit (n,))`, and how far into the current run it is."""

    row: int
    runs: list[tuple[bool, np.ndarray, np.ndarray]]
    at: int = 0

    @property
    def left(self) -> int:
        return len(self.runs[0][1]) - self.at if self.runs else 0

    def next_piece(self, max_piece: int) -> int:
        """The size of this row's next piece: its current run cut as `pieces.split` does (largest
        first), whatever other rows share the push."""
        return min(max_piece, 1 << (self.left.bit_length() - 1))


class CodecSlots:
    """`slots` independent decoder streams (see the module docstring).

    `params`: the decoder params as loaded (`load_codec_params(...)["decoder"]`), laid out once
    here (`prepare_params`); pass `prepared=True` for params already laid out (shared between
    instances). `reference_chunking=False` decodes each stream as one unchunked forward.
    `max_piece`, `max_call_frames`, `call_overhead`: see `codec/pieces.py` (defaults measured on
    the CPU; a GPU wants larger calls).
    """

    def __init__(
        self,
        params: dict,
        cfg: DecoderConfig,
        policy: Policy,
        slots: int,
        *,
        reference_chunking: bool = True,
        chunk_size: int = CHUNK_SIZE,
        left_context_size: int = LEFT_CONTEXT,
        prepared: bool = False,
        max_piece: int = MAX_PIECE,
        max_call_frames: int = MAX_CALL_FRAMES,
        call_overhead: float = CALL_OVERHEAD,
    ):
        for name, value, low in (
            ("slots", slots, 1),
            ("chunk_size", chunk_size, 1),
            ("left_context_size", left_context_size, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"CodecSlots: {name} must be an integer >= {low}, got {value!r}")
        if left_context_size >= chunk_size:
            raise ValueError(f"CodecSlots: left_context_size={left_context_size} must be < chunk_size={chunk_size}")
        if not isinstance(max_call_frames, int) or isinstance(max_call_frames, bool) or max_call_frames < 1:
            raise ValueError(f"CodecSlots: max_call_frames must be an integer >= 1, got {max_call_frames!r}")
        if not call_overhead >= 0:
            raise ValueError(f"CodecSlots: call_overhead must be >= 0, got {call_overhead!r}")
        self.sizes = piece_sizes(max_piece)  # checks max_piece
        self.cfg, self.policy, self.slots = cfg, policy, slots
        self.reference_chunking = reference_chunking
        self.chunk_size, self.left_context_size = chunk_size, left_context_size
        self.max_piece, self.max_call_frames, self.call_overhead = max_piece, max_call_frames, call_overhead
        self.params = params if prepared else prepare_params(params, cfg)
        self._replicated = _replicated(self.params)
        self.state = self._put(init_state(cfg, slots, policy))
        q = cfg.num_quantizers
        self._frames = [0] * slots  # stream frames decoded per row (start context included)
        self._recent = [np.zeros((0, q), np.int32)] * slots  # a row's last left_context_size frames
        self._live = [False] * slots
        self._fresh = [False] * slots  # the row's state must restart at its next piece
        self._scatter = _scatter_program(self._replicated, policy.donate_codec_state)
        # What ran, for tests and benchmarks: step calls, and row-frames decoded beyond the
        # streams' own frames (final pieces' code-0 padding; bucket padding rows not counted).
        self.calls = 0
        self.padded_frames = 0

    # ------------------------------------------------------------------------------ interface

    def frames(self, row: int) -> int:
        """Frames of slot `row`'s stream decoded so far (its start context included)."""
        return self._frames[self._row(row, "frames")]

    def live(self, row: int) -> bool:
        return self._live[self._row(row, "live")]

    def start(self, row: int, context: np.ndarray | None = None) -> None:
        """A fresh stream in slot `row` (replacing whatever ran there). `context` (n, q) codes
        (the voice-clone reference codes in ICL mode) are decoded now as the stream's first n
        frames; their audio is discarded."""
        row = self._row(row, "start")
        codes = None if context is None else self._codes(context, f"start: context (row {row})")
        self._live[row], self._fresh[row] = True, True
        self._frames[row], self._recent[row] = 0, self._recent[row][:0]
        if codes is not None and len(codes):
            self._run({row: codes}, emit=False, final=())

    def push(self, frames: Mapping[int, np.ndarray], final: Collection[int] = ()) -> dict[int, np.ndarray]:
        """Decode `frames[row]` ((k_row, q) codes, k_row ≥ 0) after each row's stream so far;
        returns `{row: float32 (k_row · total_upsample,) audio}`. Rows in `final` end after this
        push (their tail may be padded; their state is garbage until `start`). Rows not in
        `frames` are untouched. Every argument is checked before anything runs."""
        codes = {}
        for row, value in frames.items():
            r = self._row(row, "push: frames")
            if not self._live[r]:
                raise ValueError(f"CodecSlots.push: slot {r} has no stream (call start({r}) first)")
            codes[r] = self._codes(value, f"push: frames[{r}]")
        ending = set()
        for row in final:
            r = self._row(row, "push: final")
            if not self._live[r]:
                raise ValueError(f"CodecSlots.push: final row {r} has no stream")
            ending.add(r)
        out = self._run(codes, emit=True, final=ending)
        for r in ending:
            self._live[r] = False
        return out

    def stop(self, row: int) -> None:
        """Free slot `row` (e.g. a cancelled request); `start` reuses it."""
        self._live[self._row(row, "stop")] = False

    def call_shapes(self) -> list[tuple[int, int]]:
        """Every `(piece frames, batch bucket)` a push can call the step with: each piece size,
        with the buckets `row_groups` makes of 1 to `slots` rows at that size."""
        return sorted(
            {
                (size, bucket)
                for size in self.sizes
                for n in range(1, self.slots + 1)
                for _, bucket in row_groups(n, size, self.call_overhead, self.max_call_frames)
            }
        )

    def compile(self, shapes: Collection[tuple[int, int]] | None = None) -> int:
        """Compile ahead of time (nothing runs, no state changes) the programs a push of each
        `(piece frames, batch bucket)` in `shapes` calls (None: `call_shapes()`, all of them): the
        step, and each bucket's gather and scatter, so no push compiles while requests stream.
        Returns the number of shapes."""
        shapes = self.call_shapes() if shapes is None else sorted(set(shapes))
        q, on_mesh, state = self.cfg.num_quantizers, self._replicated is not None, jax.tree.map(abstract, self.state)
        for bucket in sorted({b for _, b in shapes}):
            # Lowered for the types `_call` passes (`_put`), each program's inputs typed from the
            # one before it: nothing runs.
            rows = jax.ShapeDtypeStruct((bucket,), jnp.int32, sharding=self._replicated)
            fresh = jax.ShapeDtypeStruct((bucket,), jnp.bool_, sharding=self._replicated)
            gather = _gather.lower(state, rows, fresh)
            sub = _typed(gather.out_info, gather.compile().output_shardings, on_mesh)
            for size in sorted(s for s, b in shapes if b == bucket):
                codes = jax.ShapeDtypeStruct((bucket, q, size), jnp.int32, sharding=self._replicated)
                step = stream_program(self.policy).lower(self.params, sub, codes, self.cfg, self.policy, True)
                new = _typed(step.out_info[1], step.compile().output_shardings[1], on_mesh)
                self._scatter.lower(state, rows, new).compile()  # (a repeated type: from the cache)
        return len(shapes)

    # ------------------------------------------------------------------------------ internals

    def _put(self, tree):
        """Host values onto the device(s): the default device (uncommitted, one transfer) or
        replicated on the params' mesh."""
        if self._replicated is None:
            return jax.device_put(tree)
        return jax.tree.map(lambda a: put(a, self._replicated), tree)

    def _row(self, row, where: str) -> int:
        if isinstance(row, bool) or not isinstance(row, (int, np.integer)) or not 0 <= row < self.slots:
            raise ValueError(f"CodecSlots.{where}: row must be an integer in [0, {self.slots}), got {row!r}")
        return int(row)

    def _codes(self, value, name: str) -> np.ndarray:
        a = np.asarray(value)
        q = self.cfg.num_quantizers
        if a.ndim != 2 or a.shape[1] != q:
            raise ValueError(f"CodecSlots.{name}: codes must have shape (frames, {q}), got {a.shape}")
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"CodecSlots.{name}: codes must be integers, got dtype {a.dtype}")
        if a.size and (a.min() < 0 or a.max() >= self.cfg.codebook_size):
            bad = int(a.min()) if a.min() < 0 else int(a.max())
            raise ValueError(f"CodecSlots.{name}: code {bad} out of range [0, {self.cfg.codebook_size})")
        return a.astype(np.int32)

    def _plan(self, row: int, codes: np.ndarray, emit: bool, final: bool) -> list[tuple[bool, np.ndarray, np.ndarray]]:
        """Row `row`'s runs for its next frames `codes`, and its bookkeeping advanced past them."""
        done, recent = self._frames[row], self._recent[row]
        stream = np.concatenate([recent, codes])  # stream frames from `base` on
        base = done - len(recent)
        plan = runs(done, len(codes), self.chunk_size, self.left_context_size, self.reference_chunking)
        out = []
        for i, run in enumerate(plan):
            part = stream[run.first - base : run.stop - base]
            keep = np.zeros(len(part), bool)
            keep[run.emit - run.first :] = emit
            if final and i == len(plan) - 1:
                pad = padded_length(len(part), self.max_piece, self.call_overhead) - len(part)
                part = np.concatenate([part, np.zeros((pad, part.shape[1]), part.dtype)])
                self.padded_frames += pad
                keep = np.concatenate([keep, np.zeros(pad, bool)])
            fresh = run.fresh or (i == 0 and self._fresh[row])
            out.append((fresh, part, keep))
        if plan:
            self._fresh[row] = False
        self._frames[row] = done + len(codes)
        self._recent[row] = stream[len(stream) - min(len(stream), self.left_context_size) :]
        return out

    def _run(self, frames: dict[int, np.ndarray], emit: bool, final: Collection[int]) -> dict[int, np.ndarray]:
        work = [_Work(r, self._plan(r, c, emit, r in final)) for r, c in sorted(frames.items())]
        calls = self._schedule([w for w in work if w.runs])
        up = self.cfg.total_upsample
        out: dict[int, list[np.ndarray]] = {r: [] for r in frames}
        for wav, kept in calls:
            if not kept:
                continue  # context only: no host transfer, the step stays asynchronous
            host = np.asarray(wav)
            for i, row, keep in kept:
                out[row].append(host[i].reshape(len(keep), up)[keep].reshape(-1))
        return {
            r: np.concatenate(a).astype(np.float32, copy=False) if a else np.zeros(0, np.float32)
            for r, a in out.items()
        }

    def _schedule(self, work: list[_Work]) -> list[tuple[Array, list[tuple[int, int, np.ndarray]]]]:
        """Decode every row's runs: each row cuts its run into pieces by its own length alone
        (`_Work.next_piece`, largest first), so the pieces a row is decoded in, and so its audio to
        the last bit, do not depend on the rows beside it; each call takes the piece size that
        advances the most row-frames (ties: the larger piece) over the rows whose next piece it
        is, in batch buckets (`row_groups`). Returns each call's device waveform and `(batch index,
        row, kept frames)` of its rows that keep audio."""
        calls = []
        while work:
            due = [w.next_piece(self.max_piece) for w in work]
            size = max(set(due), key=lambda s: (s * due.count(s), s))
            ready = [w for w, d in zip(work, due) if d == size]
            for n, bucket in row_groups(len(ready), size, self.call_overhead, self.max_call_frames):
                group, ready = ready[:n], ready[n:]
                calls.append(self._call(group, size, bucket))
            work = [w for w in work if w.runs]
        return calls

    def _call(self, group: list[_Work], size: int, bucket: int):
        q = self.cfg.num_quantizers
        rows = np.full(bucket, self.slots, np.int32)  # padding rows: out of range (read as zeros, dropped)
        fresh = np.zeros(bucket, bool)
        codes = np.zeros((bucket, q, size), np.int32)
        kept = []
        for i, w in enumerate(group):
            run_fresh, part, keep = w.runs[0]
            rows[i], fresh[i] = w.row, run_fresh and w.at == 0
            codes[i] = part[w.at : w.at + size].T
            if keep[w.at : w.at + size].any():
                kept.append((i, w.row, keep[w.at : w.at + size]))
            w.at += size
            if w.at == len(part):
                w.runs.pop(0)
                w.at = 0
        self.calls += 1
        rows, fresh, codes = self._put((rows, fresh, codes))
        sub = _gather(self.state, rows, fresh)
        wav, sub = stream_step(self.params, sub, codes, self.cfg, self.policy, True)
        self.state = self._scatter(self.state, rows, sub)
        return wav, kept
