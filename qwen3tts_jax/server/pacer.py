"""Hands requests to the engine one at a time: a request is submitted only when the engine has no
request waiting, so every engine step admits at most one and every admission has group size 1.

No reference class. Why: the engine prefills the requests it admits in one step together, one
jitted program per (group size, packed prompt shape, text piece width); a server under bursty load
would meet every group size 1..slots and compile each on first use (measured: a group of 7 on the
0.6B model cost ~40 s on the 2-core CPU, see benchmarks/RESULTS.md; the engine compiles a new one
on its compiler thread while the running streams go on, `Engine.background_compile`, but each
still costs its newcomers that wait and the CPU those seconds).
Pacing keeps one admission program per prompt bucket; a burst of k requests is admitted over
k steps instead of one.

Requests are needed now (a new request, or the segment of a long-form request its client is
reading) or prefetched (a later segment, submitted ahead so it runs beside the one before it).
Needed requests go in arrival order. A prefetch only ever uses a slot nobody needs: it is handed
over only while no needed request waits here and a slot is free, and once running it is stopped
(its `on_preempt` callback cancels it and submits it again) when a needed request waits at the
engine with every slot taken (not while a request is held for its compile: the needed one may
need a compile too, which waits for that one, and the freed slot would not let it in). Without
that the first clients' prefetched segments, started while the server was idle, hold slots for
whole segments while newcomers wait for their first audio (measured: benchmarks/RESULTS.md,
"Server"). `promote` turns a prefetch into a needed request when
its client reaches it, from then on it keeps its place and its slot. The request a stopped
prefetch restarts gives the same output (its key is its own, not its companions'). One still
here when its client goes away is withdrawn without reaching the engine.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Callable
from concurrent.futures import Future

from qwen3tts_jax.engine import EngineLoop, Request, RequestHandle

POLL_S = 0.002  # how often the pacer looks at the engine's queue while a request waits there
PREFETCH_POLL_S = 0.02  # how often it looks for a free slot while only prefetches wait here


@dataclasses.dataclass(eq=False)
class _Entry:
    request: Request
    future: Future
    prefetch: bool
    on_preempt: Callable[[RequestHandle], bool] | None
    handle: RequestHandle | None = None


class AdmissionPacer:
    def __init__(self, loop: EngineLoop):
        self.loop = loop
        self._queue: collections.deque[_Entry] = collections.deque()
        self._running: list[_Entry] = []  # prefetches handed to the engine, newest last
        self._handed: _Entry | None = None  # the request last taken from the queue to hand over
        self._preempted_for: _Entry | None = None  # the needed request a prefetch was stopped for
        self.preempted = 0  # prefetches stopped so far
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="qwen3tts-pacer", daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        return len(self._queue)

    def submit(
        self, request: Request, prefetch: bool = False, on_preempt: Callable[[RequestHandle], bool] | None = None
    ) -> Future:
        """A future of the request's `RequestHandle` (or of the engine's ValueError). `prefetch`:
        not needed yet (module docstring); `on_preempt(handle)` is then called, on the pacer's
        thread, to stop it for a needed request: it cancels the handle and submits the request
        again, returning True, or returns False (needed by now) and the request keeps its slot.
        A prefetch without `on_preempt` is never stopped."""
        future: Future = Future()
        with self._wake:
            if self._stop:  # stopped (the server shuts down): nothing will hand it over
                future.cancel()
                return future
            self._queue.append(_Entry(request, future, prefetch, on_preempt))
            self._wake.notify()
        return future

    def promote(self, future: Future) -> None:
        """The prefetch behind `future` is needed now: it keeps its place in the queue among the
        needed requests, or, already running, is no longer stopped for one."""
        with self._wake:
            for entry in [*self._queue, *self._running, *filter(None, [self._handed])]:
                if entry.future is future:
                    entry.prefetch = False
            self._running = [e for e in self._running if e.prefetch]
            self._wake.notify()

    def withdraw(self, future: Future) -> bool:
        """Take a request back before it reached the engine; False if it already has."""
        with self._wake:
            for i, entry in enumerate(self._queue):
                if entry.future is future:
                    del self._queue[i]
                    future.cancel()
                    return True
        return False

    def stop(self) -> None:
        with self._wake:
            self._stop = True
            for entry in self._queue:
                entry.future.cancel()
            self._queue.clear()
            self._wake.notify()
        self._thread.join(10)

    def _next(self) -> _Entry | None:
        """The entry to hand over now, taken from the queue (None: wait). Called with the lock."""
        pick = next((e for e in self._queue if not e.prefetch), None)
        if pick is None and self._queue and self.loop.engine.free_slots > 0:
            pick = self._queue[0]
        if pick is not None:
            self._queue.remove(pick)
            self._handed = pick  # from here `promote` finds it while it is handed over
        return pick

    def _victim(self) -> _Entry | None:
        """A running prefetch to stop (the newest), when the request last handed over is needed,
        still waits at the engine, and every slot is taken — and no request is held for its
        compile (`Engine.compiling`): the needed one may need a compile too, which waits for that
        one, so the prefetch is stopped only once the held request is in. Called with the lock."""
        engine, need = self.loop.engine, self._handed
        if need is None or need.prefetch or need is self._preempted_for or not engine.waiting:
            return None
        if engine.compiling:  # it may wait for a compile of its own: a freed slot would not let it in
            return None
        if engine.free_slots >= 0:  # a slot is free, or frees for it at the next step
            return None
        self._running = [e for e in self._running if not e.handle.done]
        return self._running.pop() if self._running else None

    def _run(self) -> None:
        engine = self.loop.engine
        while True:
            victim = None
            with self._wake:
                while not self._stop and not self._queue and not engine.waiting:
                    self._wake.wait()
                if self._stop:
                    return
                # The engine takes everything waiting at its next step: hand over the next
                # request only once the previous one has been taken.
                if engine.waiting:
                    victim = self._victim()
                    if victim is None:  # with nothing queued here, only a submit or promote changes that
                        self._wake.wait(POLL_S if self._queue else PREFETCH_POLL_S)
                        continue
                    entry = None
                else:
                    entry = self._next()
                    if entry is None:
                        self._wake.wait(PREFETCH_POLL_S)
                        continue
            if victim is not None:
                if victim.on_preempt(victim.handle):
                    self.preempted += 1
                    self._preempted_for = self._handed
                continue
            if not entry.future.set_running_or_notify_cancel():
                continue
            try:
                handle = self.loop.submit(entry.request)
            except Exception as err:  # the handler reports it to its client
                entry.future.set_exception(err)
                continue
            with self._wake:
                entry.handle = handle
                if entry.prefetch and entry.on_preempt is not None:
                    self._running.append(entry)
            entry.future.set_result(handle)
