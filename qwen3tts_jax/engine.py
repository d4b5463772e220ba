"""The generation engine: a fixed number of slots on the device, requests admitted into free slots
at frame boundaries, frames and audio handed out per request as they are produced.

There is no reference class for this: the official package generates one batch per call and
returns when its longest row ends. Here every flow is this one object (`Engine`):

* offline `generate_*` submits all its requests and steps to the end (`Engine.run`);
* `stream_*` submits one request and reads its chunks as they come (`RequestHandle`);
* the server submits from many clients, cancels on disconnect, and one thread steps;
* `batch`, the benchmarks and the tests use the same public methods.

A step (`Engine.step`): free the slots of requests that ended or were cancelled, prefill
waiting requests into free slots (their prompts packed end to end, `prompt.pack_tracks`: one
jitted admission, which the running rows wait for; an admission shape met for the first time
while other requests run compiles on a compiler thread instead, under an `EngineLoop`, its
requests come in at the first step after, and the requests behind them whose programs exist come
in meanwhile: `Engine.background_compile`), advance every running
slot by up to the
next emission point (a traced frame count: the first chunk of a new stream after
`first_chunk_frames`, later ones every `chunk_frames`; the loop also stops the moment any row
ends, so its slot is free for the next step; only a bucket of rows spanning the occupied ones
is stepped, 1, 2, 4, ... of them),
then decode the new frames of the rows that are due through each slot's own streaming codec
state (first chunks first; the rest `Policy.codec_push_rows` rows a push, and a request waiting
for a free slot is admitted before the remaining pushes) and hand out `Chunk`s, and a `Result`
when a request ends.

Each request is independent of its companions: its KV rows start at position 0 whatever the
other slots hold, its PRNG key is its own (advanced only by its own steps), its sampling values
and `max_new_tokens` are per row. Greedy codes are those of the request run alone, and a seeded
sampled request draws the same codes alone and in company.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import jax
import numpy as np

from qwen3tts_jax import generate as gen
from qwen3tts_jax.codec.slots import CodecSlots
from qwen3tts_jax.config import Policy, Qwen3TTSConfig
from qwen3tts_jax.prompt import PromptRequest, PromptTracks, bucket, pack_tracks, prompt_tracks
from qwen3tts_jax.sampling import SamplingConfig, SamplingProgram, SamplingValues
from qwen3tts_jax.sharding import Placement, abstract

PROMPT_BUCKET = 16  # packed prompt lengths are padded to multiples of this (the admission's shapes)
# An admission packs its prompts end to end into rows (`prompt.pack_tracks`); a packed position
# costs (1 + p / this) matmul rows in a pack of p: the attention's share, fit on the 2-core CPU
# (benchmarks/RESULTS.md, "Packed admission").
PACK_ATTENTION_SPAN = 2048
TRAILING_BUCKET = 32  # a text track is embedded in pieces of this many ids
TEXT_TRACK_BUCKET = 128  # the slots' text-track length: only the frame loop sees it
CHUNK_CAPACITY = 32  # frames one advance writes at most (the codes buffer; the host reads it after)


@dataclasses.dataclass(frozen=True, eq=False)
class Request:
    """One request: a tokenized prompt, its sampling settings, budget and PRNG key.

    `key` is a raw `jax.random.PRNGKey` (2 uint32); it alone decides the request's draws.
    `chunk_frames` is how often its audio is handed out (None: the engine's); `audio=False`
    hands out codes only (no codec work)."""

    prompt: PromptRequest
    sampling: SamplingConfig
    max_new_tokens: int
    key: np.ndarray
    id: str = ""
    audio: bool = True
    chunk_frames: int | None = None
    first_chunk_frames: int | None = None
    # Called with the request's codebook-0 ids as they arrive; returns a finish reason to end
    # the request early (e.g. "loop"), or None.
    guard: Callable[[np.ndarray], str | None] | None = None


@dataclasses.dataclass
class Chunk:
    """New output of one request: its next frames and (if `audio`) their samples."""

    request_id: str
    codes: np.ndarray  # (k, 16) int32
    audio: np.ndarray | None  # (k · 1920,) float32, or None for codes-only requests


@dataclasses.dataclass
class Result:
    """A finished request: all of its codes and audio, and how it ended."""

    request_id: str
    codes: np.ndarray  # (T, 16) int32
    audio: np.ndarray | None
    finish_reason: str  # "stop" (EOS), "length" (max_new_tokens), "cancelled", a guard's reason, "error"
    prompt_tokens: int
    time_to_first_audio: float | None  # seconds from submit to the first chunk with frames
    total_time: float
    error: str | None = None

    @property
    def frames(self) -> int:
        return len(self.codes)


class RequestHandle:
    """What `submit` returns: iterate it for `Chunk`s (blocking); `result()` waits for the end."""

    def __init__(self, engine: Engine, request: Request):
        self.engine, self.request, self.id = engine, request, request.id
        self.events: queue.Queue = queue.Queue()
        self._done = threading.Event()
        self._result: Result | None = None
        self.submitted = time.perf_counter()
        self.first_audio: float | None = None
        # Frames the engine had made for this request when its cancel reached it (None: never
        # cancelled while running); its result has those plus the frames made before the cancel
        # took effect, at most one advance.
        self.frames_at_cancel: int | None = None

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> None:
        self.engine._cancel_handle(self)

    def result(self, timeout: float | None = None) -> Result:
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.id!r} did not finish within {timeout} s")
        assert self._result is not None
        return self._result

    def __iter__(self) -> Iterator[Chunk]:
        """Chunks as they arrive, until the request ends (steps the engine itself when nobody
        else does, so a single-threaded caller can just iterate)."""
        while True:
            try:
                event = self.events.get(timeout=0 if not self.engine.threaded else 0.05)
            except queue.Empty:
                if not self.engine.threaded:
                    self.engine.step()
                continue
            if isinstance(event, Result):
                return
            yield event

    def _finish(self, result: Result) -> None:
        self._result = result
        self.events.put(result)
        self._done.set()


@dataclasses.dataclass
class _Slot:
    """Host bookkeeping of one occupied slot."""

    handle: RequestHandle
    prompt_tokens: int
    next_emit: int  # hand out a chunk once this many frames exist
    total: int = 0  # frames produced so far
    pending: list = dataclasses.field(default_factory=list)  # (k, 16) pieces not yet handed out
    codes: list = dataclasses.field(default_factory=list)  # pieces handed out
    audio: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class EngineShape:
    """The static shapes of an engine: what its compiled programs are specialised to."""

    slots: int  # batch rows on the device
    cache_slots: int  # KV positions per row: the longest prompt bucket + budget it can hold
    text_track: int  # per-frame text track length per row (at least one tts_pad after the text)
    chunk: int = CHUNK_CAPACITY

    @staticmethod
    def fit(
        requests: Sequence[Request], cfg: Qwen3TTSConfig, placement: Placement, slots: int | None = None
    ) -> EngineShape:
        """The smallest shape (in buckets) that holds every request at once."""
        tracks = [prompt_tracks(cfg, r.prompt) for r in requests]
        prompt = max(bucket(t.length, PROMPT_BUCKET) for t in tracks)
        frames = max(r.max_new_tokens for r in requests)
        u = bucket(max(len(t.trailing) for t in tracks) + 1, TEXT_TRACK_BUCKET)
        return EngineShape(placement.rows(slots or len(requests)), gen.cache_slots(prompt, frames), u)


class Engine:
    """Slots on the device and the host loop around them (see the module docstring).

    `model` provides `config`, `policy`, `params` (`{"talker": ...}`), `speech_tokenizer` and
    `placement`. `shape` fixes the slots and lengths (`EngineShape.fit` sizes one for a set of
    requests; a server picks one for its limits). `program` is the sampling code compiled in
    (None: from the first requests; a server passes `SamplingProgram` with sampling on, so
    greedy and sampled requests share one program). `live_rows`: an advance steps only a bucket
    of rows spanning the occupied ones (`_live_rows`); off, every advance steps all slots.
    `advance_frames`: at most this many frames per advance, so a request arriving while the
    slots run waits at most that many frame steps to be admitted (None: one frame when an
    `EngineLoop` steps the engine, else up to the next emission; the `advance_frames` property).
    `background_compile`: an admission whose program is not compiled yet compiles off the
    stepping thread while other requests run (None: when an `EngineLoop` steps the engine; the
    `background_compile` property)."""

    def __init__(
        self,
        model,
        shape: EngineShape,
        *,
        program: SamplingProgram | None = None,
        chunk_frames: int = CHUNK_CAPACITY,
        first_chunk_frames: int | None = None,
        threaded: bool = False,
        live_rows: bool = True,
        advance_frames: int | None = None,
        background_compile: bool | None = None,
    ):
        self.model, self.cfg, self.shape = model, model.config, shape
        self.policy: Policy = model.policy
        self.placement: Placement = model.placement
        self.params = model.params["talker"]
        self.program = program
        self.chunk_frames, self.first_chunk_frames = int(chunk_frames), first_chunk_frames
        self.threaded, self.live_rows = threaded, live_rows
        if advance_frames is not None and (
            isinstance(advance_frames, bool) or not isinstance(advance_frames, (int, np.integer)) or advance_frames < 1
        ):
            raise ValueError(f"advance_frames must be None or an integer >= 1, got {advance_frames!r}")
        self._advance_frames = None if advance_frames is None else min(int(advance_frames), shape.chunk)
        if background_compile is not None and not isinstance(background_compile, bool):
            raise ValueError(f"background_compile must be None, True or False, got {background_compile!r}")
        if background_compile and jax.process_count() > 1:
            raise ValueError(
                "background_compile=True needs a single process: each process would admit a held "
                "request at its own step, and their programs must run in step (SPMD)"
            )
        self._background_compile = background_compile
        self.rows_stepped: collections.Counter[int] = collections.Counter()  # advances per row bucket
        self._lock = threading.Lock()
        self._waiting: collections.deque[tuple[RequestHandle, PromptTracks]] = collections.deque()
        self._cancelled: set[RequestHandle] = set()
        self._slots: list[_Slot | None] = [None] * shape.slots
        self._admitting: list[tuple[RequestHandle, PromptTracks]] = []
        self._held: tuple | None = None  # (group, args, compiling): an admission whose program compiles
        self._blocked: RequestHandle | None = None  # the queue's head while it waits for a compile of its own
        self._compile_thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._ids = itertools.count()
        self._state = None
        self._state_signature: tuple = ()
        self._sampler: gen.FrameSampler | None = None
        self._codec = None

    # ------------------------------------------------------------------ public

    @property
    def active(self) -> int:
        return sum(s is not None for s in self._slots)

    @property
    def slot_requests(self) -> list[str | None]:
        """The id of the request in each slot, row by row (None: free)."""
        return [None if s is None else s.handle.id for s in self._slots]

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def free_slots(self) -> int:
        """Slots that no request holds, is being admitted to or waits for (thread-safe; may be
        negative while requests wait): what a submit now would find free at the next step."""
        with self._lock:
            return len(self._free_rows()) - len(self._admitting) - len(self._waiting)

    @property
    def idle(self) -> bool:
        return not self.active and not self._waiting and not self._admitting

    @property
    def background_compile(self) -> bool:
        """Whether an admission of a shape not compiled yet is compiled on a compiler thread
        while the running requests go on (they would stop for the whole compile, seconds, if it
        ran on the stepping thread), its requests admitted at the first step after; with no
        request running it compiles inline either way. None at construction: on when an
        `EngineLoop` steps the engine (a server), off offline (admissions as soon as a slot is
        free, the simplest order to reason about), and always off over several processes."""
        if self._background_compile is None:
            return self.threaded and jax.process_count() == 1
        return self._background_compile

    @property
    def compiling(self) -> int:
        """Requests held while their admission's programs compile off the stepping thread."""
        held = self._held
        return 0 if held is None else len(held[0])

    def wait_compiling(self, timeout: float | None = None) -> bool:
        """Block until the programs compiling off the stepping thread are ready (the held requests
        come in at the next step); False if `timeout` seconds passed first."""
        held = self._held
        return held is None or not concurrent.futures.wait([held[2]], timeout).not_done

    @property
    def row_buckets(self) -> list[int]:
        """The row counts an advance may step, one compiled advance each: the data-axis size
        times 1, 2, 4, ... up to the slots (only the slots when `live_rows` is off). A server
        warms each (`server.service`), so none compiles mid-stream."""
        if not self.live_rows:
            return [self.shape.slots]
        out, n = [], self.placement.data
        while n < self.shape.slots:
            out.append(n)
            n *= 2
        return out + [self.shape.slots]

    def submit(self, request: Request) -> RequestHandle:
        """Queue a request (thread-safe); it is checked against the engine's shape now, so a
        request that can never run fails here, not in a slot."""
        if not request.id:
            request = dataclasses.replace(request, id=f"req-{next(self._ids)}")
        tracks = prompt_tracks(self.cfg, request.prompt)
        self._check_fits(request, tracks)
        program = request.sampling.program()
        if self.program is not None and not self.program.covers(program):
            raise ValueError(
                f"request {request.id!r} samples, but this engine was compiled greedy-only "
                f"(SamplingProgram {self.program}); build the engine with sampling on"
            )
        handle = RequestHandle(self, request)
        with self._lock:
            self._waiting.append((handle, tracks))
        return handle

    def cancel(self, request_id: str) -> None:
        """End the requests with this id (thread-safe): a waiting one at once, a running one at the
        next step."""
        with self._lock:
            handles = [h for h, _ in [*self._waiting, *self._admitting] if h.id == request_id]
            handles += [s.handle for s in self._slots if s is not None and s.handle.id == request_id]
        for h in handles:
            self._cancel_handle(h)

    def _cancel_handle(self, handle: RequestHandle) -> None:
        """Cancels are kept per handle, not per id: a request submitted again under its id (a
        stopped prefetch, `server.pacer`) is another handle, and the cancel of the first does not
        end it."""
        with self._lock:
            for i, (h, _) in enumerate(self._waiting):
                if h is handle:
                    del self._waiting[i]
                    h._finish(
                        Result(
                            h.id,
                            np.zeros((0, self.cfg.talker.num_code_groups), np.int32),
                            np.zeros(0, np.float32) if h.request.audio else None,
                            "cancelled",
                            0,
                            None,
                            time.perf_counter() - h.submitted,
                        )
                    )
                    return
            self._cancelled.add(handle)
            made = [s.total for s in self._slots if s is not None and s.handle is handle]
            made += [0 for h, _ in self._admitting if h is handle]
            if made and handle.frames_at_cancel is None:
                handle.frames_at_cancel = made[0]

    def run(self, requests: Sequence[Request]) -> list[Result]:
        """Offline: submit all, step until every one has ended; results in request order."""
        handles = [self.submit(r) for r in requests]
        while not all(h.done for h in handles):
            self.step()
        return [h.result() for h in handles]

    def step(self) -> bool:
        """One engine iteration (see the module docstring). Returns whether any work was done."""
        self._end_cancelled()
        admitted = self._admit()
        if not any(s is not None for s in self._slots):
            return admitted
        rows = self._live_rows()
        self.rows_stepped[rows] += 1
        state = self._compiled.advance(self.params, self._state, self._steps_to_next_emission(), rows)
        if self.rows_stepped[rows] == 1:  # recorded once per row bucket, not every step
            self._compiled.advances.add((self._state_signature, rows))
        self._state = state
        codes, steps, num_tokens, reason = self.placement.fetch(
            (state.codes, state.steps, state.num_tokens, state.reason)
        )
        self._collect(np.asarray(codes)[:, : int(steps)], np.asarray(num_tokens), np.asarray(reason))
        return True

    # ------------------------------------------------------------------ internals

    def _check_fits(self, r: Request, tracks: PromptTracks) -> None:
        s = self.shape
        mnt = r.max_new_tokens
        if isinstance(mnt, bool) or not isinstance(mnt, (int, np.integer)) or mnt < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {mnt!r}")
        need = bucket(tracks.length, PROMPT_BUCKET) + mnt - 1
        if need > s.cache_slots:
            raise ValueError(
                f"request {r.id!r}: a prompt of {tracks.length} positions with max_new_tokens={mnt} needs {need} KV "
                f"slots; this engine has {s.cache_slots} per row (shorten the text or lower max_new_tokens)"
            )
        if len(tracks.trailing) + 1 > s.text_track:
            raise ValueError(
                f"request {r.id!r}: its text track of {len(tracks.trailing)} tokens does not fit this engine's "
                f"{s.text_track - 1} (shorten the text)"
            )
        if np.shape(r.key) != (2,):
            raise ValueError(
                f"request {r.id!r}: key must be a raw PRNG key of 2 uint32 (jax.random.PRNGKey), "
                f"got shape {np.shape(r.key)}"
            )

    @property
    def _compiled(self) -> gen.Compiled:
        return gen.compiled(self._sampler)

    def _ensure_state(self, program: SamplingProgram) -> None:
        if self._sampler is None:
            self.program = self.program or program
            self._sampler = gen.FrameSampler(self.cfg, self.policy, self.program, self.placement)
            s = self.shape
            self._state = self._compiled.init(s.slots, s.cache_slots, s.text_track, s.chunk)
            self._state_signature = gen.signature(self._state)

    def _free_rows(self) -> list[int]:
        return [i for i, s in enumerate(self._slots) if s is None]

    def _open_rows(self) -> list[int]:
        """Free rows a request behind the held group may take: not the rows it keeps."""
        kept = set() if self._held is None else {row for *_, row in self._held[0]}
        return [row for row in self._free_rows() if row not in kept]

    def _admit(self) -> bool:
        held = self._held
        if held is not None:
            if not held[2].done():
                admitted = self._admit_behind()
                if self.active:  # they go on while it compiles
                    return admitted
            return self._admit_held()  # compiled, or nothing else would run: wait for it
        with self._lock:
            free = self._free_rows()
            take = [self._waiting.popleft() for _ in range(min(len(free), len(self._waiting)))]
            # Out of the queue, not yet in a slot: `_fail_all` ends them if admission fails, and
            # `free_slots` counts their rows as taken.
            self._admitting = take
        if not take:
            return False
        if self._sampler is None:
            program = take[0][0].request.sampling.program()
            for h, _ in take[1:]:
                program = program.union(h.request.sampling.program())
            self._ensure_state(program)
        group = [(h, tracks, row) for (h, tracks), row in zip(take, free)]
        args = self._admission_args(group)
        lowerings = self._uncompiled(group, args) if self.background_compile and self.active else []
        if lowerings:
            # Programs this admission and the advance after it have not been compiled for: they
            # compile on the compiler thread while the running requests go on stepping (on this
            # thread, every stream would stop for the compile, seconds); the group keeps its rows
            # and comes in at the first step after.
            state = jax.tree.map(abstract, self._state)
            self._held = (group, args, self._compiler().submit(lambda: [lower(state).compile() for lower in lowerings]))
            return False
        self._admit_group(group, args)
        return True

    def _uncompiled(self, group: list, args: tuple) -> list[Callable]:
        """Lowerings (given the state's type) of what admitting `group` would compile: its
        admission, and the advance over the row bucket spanning it and the running rows."""
        out, compiled = [], self._compiled
        if (self._state_signature, gen.signature(args)) not in compiled.admissions:
            out.append(lambda state: compiled.admit.lower(self.params, state, *args))
        rows = self._live_rows([row for *_, row in group])
        if (self._state_signature, rows) not in compiled.advances:
            out.append(lambda state: compiled.advance.lower(self.params, state, 1, rows))
        return out

    def _admit_held(self) -> bool:
        """The held group in, once its programs are compiled (waiting for them when no other
        request runs). A failed compile is left to the admission call, which raises it."""
        group, args, compiling = self._held
        concurrent.futures.wait([compiling])
        self._held, self._blocked = None, None
        self._admit_group(group, args)
        return True

    def _admit_behind(self) -> bool:
        """While a group is held for its compile: the requests at the head of the queue whose
        programs exist come in one by one, on free rows the held group does not keep (a request
        needing a compile of its own no longer blocks every request behind it for seconds); the
        first that would compile stays at the head (`_blocked`) and stops them: one compile at a
        time, it is held next."""
        admitted = False
        while True:
            with self._lock:
                free = self._open_rows()
                if not free or not self._waiting or self._waiting[0][0] is self._blocked:
                    return admitted
                h, tracks = self._waiting.popleft()
                self._admitting.append((h, tracks))
            group = [(h, tracks, free[0])]
            args = self._admission_args(group)
            if self._uncompiled(group, args):
                with self._lock:
                    self._waiting.appendleft(self._admitting.pop())
                self._blocked = h
                return admitted
            self._admit_group(group, args)
            admitted = True

    def _compiler(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._compile_thread is None:
            self._compile_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="qwen3tts-compile")
        return self._compile_thread

    def _admission_args(self, group: list) -> tuple:
        """The admission's inputs on the device: the prompts packed, their text tracks, slots,
        keys, sampling values and budgets."""
        cfg, put = self.cfg, self.placement.put
        tracks = [t for _, t, _ in group]
        prompts = pack_tracks(
            tracks, cfg.talker.transformer.hidden_size, self.placement.data, PACK_ATTENTION_SPAN, PROMPT_BUCKET
        )
        w = bucket(max(len(t.trailing) for t in tracks), TRAILING_BUCKET)
        trailing = np.full((len(group), w), cfg.tts_pad_token_id, np.int32)
        for i, t in enumerate(tracks):
            trailing[i, : len(t.trailing)] = t.trailing
        rows = np.array([row for _, _, row in group], np.int32)
        keys = np.stack([np.asarray(h.request.key, np.uint32) for h, _, _ in group])
        values = SamplingValues.stack([h.request.sampling.values(1) for h, _, _ in group])
        limits = np.array([h.request.max_new_tokens for h, _, _ in group], np.int32)
        return (
            put(prompts, "prompt"),
            put(trailing, "input/trailing_ids"),
            put(rows, "input/rows"),
            put(keys, "input/keys"),
            put(values, "input/values"),
            put(limits, "input/limits"),
        )

    def _admit_group(self, group: list, args: tuple) -> None:
        self._state = self._compiled.admit(self.params, self._state, *args)
        self._compiled.admissions.add((self._state_signature, gen.signature(args)))
        for h, t, row in group:
            first = (
                h.request.first_chunk_frames or self.first_chunk_frames or h.request.chunk_frames or self.chunk_frames
            )
            self._slots[row] = _Slot(h, t.length, next_emit=max(1, int(first)))
            if h.request.audio:
                # The voice-clone reference codes (ICL) are the stream's context: decoded, not heard.
                ref = h.request.prompt.ref_code
                self.codec.start(row, None if ref is None else np.asarray(ref))
        seated = {id(h) for h, _, _ in group}
        self._admitting = [x for x in self._admitting if id(x[0]) not in seated]  # a held group stays

    @property
    def codec(self):
        """Each slot's streaming codec state (`codec.slots.CodecSlots`, sharing the model's laid-out
        codec params)."""
        if self._codec is None:
            tok = self.model.speech_tokenizer
            self._codec = CodecSlots(
                tok.prepared_decoder_params(), tok.config.decoder, tok.policy, self.shape.slots, prepared=True
            )
        return self._codec

    def _live_rows(self, extra: Sequence[int] = ()) -> int:
        """The rows an advance steps: the smallest bucket spanning the occupied rows and `extra`
        rows about to be (requests sit in the lowest free rows)."""
        top = max([i for i, s in enumerate(self._slots) if s is not None] + list(extra)) + 1
        return next(n for n in self.row_buckets if n >= top)

    def _steps_to_next_emission(self) -> int:
        due = [s.next_emit - s.total for s in self._slots if s is not None]
        return int(max(1, min(min(due), self.advance_frames)))

    @property
    def advance_frames(self) -> int:
        """The most frames an advance makes: as given, or by default one when an `EngineLoop`
        steps the engine (requests arrive while the slots run, and a newcomer waits for the
        running advance: at most one frame step) and the codes buffer's capacity otherwise
        (offline, everything is submitted up front; an advance still stops at the next emission
        and when a row ends). One-frame advances cost the running rows nothing measurable on
        XLA:CPU and cut the joining time to first audio (benchmarks/RESULTS.md)."""
        if self._advance_frames is not None:
            return self._advance_frames
        return 1 if self.threaded else self.shape.chunk

    def _collect(self, codes: np.ndarray, num_tokens: np.ndarray, reason: np.ndarray) -> None:
        """Hand out what the advance produced (`codes`: b, steps, 16); end the requests that stopped."""
        steps = codes.shape[1]
        ended: dict[int, str] = {}
        for row, slot in enumerate(self._slots):
            if slot is None:
                continue
            total = int(num_tokens[row]) - 1
            new = total - slot.total
            finish = gen.FINISH_REASONS.get(int(reason[row]))
            if new > 0:
                # A row that ran wrote the advance's last `new` frames (rows admitted and ended by
                # their prefill wrote none).
                piece = codes[row, steps - new : steps]
                slot.pending.append(piece)
                slot.total = total
                guard = slot.handle.request.guard
                if finish is None and guard is not None:
                    finish = guard(piece[:, 0])
            if finish is not None:
                ended[row] = finish
        self._emit(
            [row for row, s in enumerate(self._slots) if s is not None and (row in ended or s.total >= s.next_emit)],
            set(ended),
        )
        for row, finish in ended.items():
            self._end(row, finish)

    def _emit(self, rows: list[int], final: set[int]) -> None:
        """Decode the pending frames of `rows` and hand them out: first chunks (a request that
        just joined) before the others, so a newcomer's time to first audio does not wait for
        its companions' codec work; a row's audio does not depend on which rows share its push.

        The others go `policy.codec_push_rows` rows per push: ending rows (their slots are
        freed after this) and codes-only rows (no codec work) first, never deferred, then the
        rows with the most frames waiting. When a request is waiting for a free slot, those remaining running
        rows keep their frames (still due) for the next step's emission, which comes after that
        request's admission and next frame: it waits for one push, not all."""
        first = [row for row in rows if self._slots[row].handle.first_audio is None]
        if first:
            self._emit_rows(first, final)
        rest = [row for row in rows if row not in first]
        now = [row for row in rest if row in final or not self._slots[row].handle.request.audio]
        later = sorted(
            (row for row in rest if row not in now),
            key=lambda row: (-sum(len(p) for p in self._slots[row].pending), row),
        )
        for group, may_wait in ((now, False), (later, True)):
            size = self.policy.codec_push_rows or max(len(group), 1)
            for at in range(0, len(group), size):
                if may_wait and self._admission_waiting():
                    return
                self._emit_rows(group[at : at + size], final)

    def _admission_waiting(self) -> bool:
        """Whether a request would be admitted at the next step: the held group once its compile
        is done, else a queued request when a slot is free — not counting the held group's kept
        rows (they look free) nor a queue whose head waits for a compile of its own (`_blocked`)."""
        held = self._held
        if held is not None and held[2].done():
            return True
        with self._lock:
            return bool(self._waiting) and self._waiting[0][0] is not self._blocked and bool(self._open_rows())

    def _emit_rows(self, rows: list[int], final: set[int]) -> None:
        """One codec push for the pending frames of `rows`, then their chunks."""
        frames = {row: np.concatenate(self._slots[row].pending) for row in rows if self._slots[row].pending}
        wanted = {r: f for r, f in frames.items() if self._slots[r].handle.request.audio}
        audio = self.codec.push(wanted, final=final & wanted.keys()) if wanted else {}
        now = time.perf_counter()
        for row, piece in frames.items():
            slot = self._slots[row]
            h = slot.handle
            wav = audio.get(row)
            slot.pending, slot.codes = [], slot.codes + [piece]
            if wav is not None:
                slot.audio.append(wav)
            if h.first_audio is None:
                h.first_audio = now - h.submitted
            slot.next_emit = slot.total + max(1, int(h.request.chunk_frames or self.chunk_frames))
            h.events.put(Chunk(h.id, piece, wav))

    def _end(self, row: int, reason: str) -> None:
        slot = self._slots[row]
        h = slot.handle
        q = self.cfg.talker.num_code_groups
        codes = np.concatenate(slot.codes).astype(np.int32) if slot.codes else np.zeros((0, q), np.int32)
        audio = None
        if h.request.audio:
            audio = np.concatenate(slot.audio) if slot.audio else np.zeros(0, np.float32)
            self.codec.stop(row)
        self._slots[row] = None
        mask = np.zeros(self.shape.slots, bool)
        mask[row] = True
        self._state = self._compiled.release(self._state, self.placement.put(mask, "input/rows"))
        h._finish(
            Result(h.id, codes, audio, reason, slot.prompt_tokens, h.first_audio, time.perf_counter() - h.submitted)
        )

    def _fail_all(self, message: str) -> None:
        """End every request in a slot, and every request taken from the queue by an admission
        that failed, with an error; start from empty slots."""
        q = self.cfg.talker.num_code_groups
        in_slots = [(slot.handle, slot.prompt_tokens) for slot in self._slots if slot is not None]
        seated = {id(h) for h, _ in in_slots}
        unseated = [(h, t.length) for h, t in self._admitting if id(h) not in seated and not h.done]
        for h, prompt_tokens in in_slots + unseated:
            h._finish(
                Result(
                    h.id,
                    np.zeros((0, q), np.int32),
                    None,
                    "error",
                    prompt_tokens,
                    h.first_audio,
                    time.perf_counter() - h.submitted,
                    error=message,
                )
            )
        self._slots = [None] * len(self._slots)
        self._admitting, self._held, self._blocked = [], None, None

    def _end_cancelled(self) -> None:
        """End the cancelled requests in slots; a cancelled request out of the queue but not in a
        slot (held for its admission's compile, or put back at the head by `_admit_behind` while
        its cancel came) keeps its cancel until it has a slot (the step after it comes in)."""
        with self._lock:
            unseated = {h for h, _ in [*self._admitting, *self._waiting]}
            cancelled, self._cancelled = self._cancelled, self._cancelled & unseated
        rows = [row for row, s in enumerate(self._slots) if s is not None and s.handle in cancelled]
        if rows:
            self._emit(rows, set(rows))
        for row in rows:
            self._end(row, "cancelled")


class EngineLoop:
    """An `Engine` stepped by its own thread while it has work; `submit`/`cancel` from any thread
    (a server's request handlers). Handles are read with `iter(handle)` / `handle.result()`,
    or from asyncio through `handle.events` (a thread-safe queue). Stepped by the loop, the
    engine advances one frame at a time and compiles a newcomer's new admission shape on its
    compiler thread (`Engine.advance_frames`, `Engine.background_compile`).

    A step that raises (a bug: requests are checked at `submit`) ends the requests in the slots,
    and those its admission had taken from the queue, with finish reason "error" and the message,
    resets the slots, and the loop goes on."""

    def __init__(self, engine: Engine):
        engine.threaded = True
        self.engine = engine
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="qwen3tts-engine", daemon=True)
        self.steps = 0
        self.last_error: str | None = None

    def start(self) -> EngineLoop:
        self._thread.start()
        return self

    def submit(self, request: Request) -> RequestHandle:
        handle = self.engine.submit(request)
        with self._wake:
            self._wake.notify()
        return handle

    def cancel(self, request_id: str) -> None:
        self.engine.cancel(request_id)
        with self._wake:
            self._wake.notify()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Cancel everything still queued or running, and end the thread."""
        with self.engine._lock:
            handles = [h for h, _ in [*self.engine._waiting, *self.engine._admitting]]
            handles += [s.handle for s in self.engine._slots if s is not None]
        for h in handles:
            self.engine._cancel_handle(h)
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stop and self.engine.idle and not self.engine._cancelled:
                    self._wake.wait()
                if self._stop and self.engine.idle:
                    return
            try:
                self.engine.step()
                self.steps += 1
            except Exception as err:  # reported to every request it touched
                self.last_error = f"{type(err).__name__}: {err}"
                self.engine._fail_all(self.last_error)


def request_keys(key: jax.Array, n: int) -> list[np.ndarray]:
    """Per-request raw keys from one key: request i gets `fold_in(key, i)`, so request 0 of a
    batch draws exactly what it draws alone with the same key."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return [np.asarray(jax.random.fold_in(key, i), np.uint32) for i in range(n)]


__all__ = [
    "CHUNK_CAPACITY",
    "Chunk",
    "Engine",
    "EngineLoop",
    "EngineShape",
    "Request",
    "RequestHandle",
    "Result",
    "request_keys",
]
