"""`GET /metrics`: the server's counters in the Prometheus text format (prometheus_client), one
registry per server so several servers in one process (tests) keep their own.

No reference class. Requests by finish reason, rejections by cause, queue depth, active slots and
requests held while their admission compiles, read from the engine when scraped, frames and
audio seconds produced, frames per second over the last `WINDOW_S` seconds, and a histogram of
the time to first audio.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

WINDOW_S = 10.0
TTFA_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(
        self,
        active: Callable[[], int],
        waiting: Callable[[], int],
        in_flight: Callable[[], int],
        compiling: Callable[[], int],
    ):
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "qwen3tts_requests", "Finished speech requests by finish reason", ["finish_reason"], registry=r
        )
        self.rejected = Counter(
            "qwen3tts_rejected_requests", "Requests refused before generation, by cause", ["cause"], registry=r
        )
        self.preempted = Counter(
            "qwen3tts_preempted_segments",
            "Long-form segments started ahead of their turn, stopped to free a slot for a waiting request",
            registry=r,
        )
        self.frames = Counter("qwen3tts_frames", "Codec frames handed to requests (12.5 per audio second)", registry=r)
        self.audio_seconds = Counter("qwen3tts_audio_seconds", "Seconds of audio sent", registry=r)
        self.ttfa = Histogram(
            "qwen3tts_time_to_first_audio_seconds", "Submit to first audio chunk", buckets=TTFA_BUCKETS, registry=r
        )
        Gauge("qwen3tts_active_slots", "Engine slots generating now", registry=r).set_function(active)
        Gauge("qwen3tts_queue_depth", "Requests waiting for a slot", registry=r).set_function(waiting)
        Gauge(
            "qwen3tts_compiling_requests",
            "Requests holding a slot while their admission's program compiles (the others go on)",
            registry=r,
        ).set_function(compiling)
        Gauge(
            "qwen3tts_in_flight", "Requests admitted and not yet ended (running + waiting + preparing)", registry=r
        ).set_function(in_flight)
        Gauge(
            "qwen3tts_frames_per_second", f"Frames generated per second over the last {WINDOW_S:g} s", registry=r
        ).set_function(self.frames_per_second)
        self._recent: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()

    def add_frames(self, n: int) -> None:
        if n <= 0:
            return
        self.frames.inc(n)
        now = time.monotonic()
        with self._lock:
            self._recent.append((now, n))
            self._trim(now)

    def frames_per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            return sum(n for _, n in self._recent) / WINDOW_S

    def _trim(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - WINDOW_S:
            self._recent.popleft()

    def render(self) -> bytes:
        return generate_latest(self.registry)
