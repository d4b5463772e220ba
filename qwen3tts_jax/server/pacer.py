"""Hands requests to the engine one at a time: a request is submitted only when the engine has no
request waiting, so every engine step admits at most one and every admission has group size 1.

No reference class. Why: the engine prefills the requests it admits in one step together, one
jitted program per (group size, prompt bucket, text piece width); a server under bursty load
would meet every group size 1..slots and compile each on first use while every stream stalls
(measured: a group of 7 on the 0.6B model cost ~40 s on the 2-core CPU; see benchmarks/RESULTS.md).
Pacing keeps one admission program per prompt bucket; a burst of k requests is admitted over
k steps instead of one. Requests keep their arrival order, except that a continuation (a later
segment of a long-form request, submitted ahead so it can run beside the segment before it) goes
only when no first request is waiting here: otherwise the first clients' prefetched segments take
every slot and a new client waits for whole segments before its first audio (measured:
benchmarks/RESULTS.md, "Server"). One still here when its client goes away is withdrawn without
reaching the engine.
"""

from __future__ import annotations

import collections
import threading
from concurrent.futures import Future

from qwen3tts_jax.engine import EngineLoop, Request

POLL_S = 0.002  # how often the pacer looks at the engine's queue while it holds requests


class AdmissionPacer:
    def __init__(self, loop: EngineLoop):
        self.loop = loop
        self._queue: collections.deque[tuple[Request, Future, bool]] = collections.deque()
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="qwen3tts-pacer", daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        return len(self._queue)

    def submit(self, request: Request, continuation: bool = False) -> Future:
        """A future of the request's `RequestHandle` (or of the engine's ValueError).
        `continuation`: a later segment of a request already submitted (module docstring)."""
        future: Future = Future()
        with self._wake:
            self._queue.append((request, future, continuation))
            self._wake.notify()
        return future

    def withdraw(self, future: Future) -> bool:
        """Take a request back before it reached the engine; False if it already has."""
        with self._wake:
            for i, (_, f, _) in enumerate(self._queue):
                if f is future:
                    del self._queue[i]
                    future.cancel()
                    return True
        return False

    def stop(self) -> None:
        with self._wake:
            self._stop = True
            for _, f, _ in self._queue:
                f.cancel()
            self._queue.clear()
            self._wake.notify()
        self._thread.join(10)

    def _run(self) -> None:
        engine = self.loop.engine
        while True:
            with self._wake:
                while not self._stop and not self._queue:
                    self._wake.wait()
                if self._stop:
                    return
                # The engine takes everything waiting at its next step: hand over the next
                # request only once the previous one has been taken.
                if engine.waiting:
                    self._wake.wait(POLL_S)
                    continue
                first = next((i for i, (_, _, cont) in enumerate(self._queue) if not cont), 0)
                request, future, _ = self._queue[first]
                del self._queue[first]
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self.loop.submit(request))
            except Exception as err:  # the handler reports it to its client
                future.set_exception(err)
