"""The HTTP layer: a FastAPI app over one `SpeechService` (OpenAI-compatible `/v1/audio/speech`,
the voices CRUD, `/v1/models`, `/health`, `/metrics`, and the page at `/`).

No reference class. The routes and bodies follow OpenAI's speech API and vllm-omni's extensions
(`docs/serving/speech_api.md` there); see the README's Server section for the contract.

A prepared request goes to the engine through the service's pacer (one per engine step); a
stream's headers go out at once and its audio follows admission. Handlers never block the event
loop: preparing a request (a one-off reference voice is encoded) runs on a worker thread, and
engine events are awaited through the service's waiter threads. A request's engine handles (one,
or one per long-form segment) are closed exactly once (`_Flight.close`), however the response
ends: finished, the client gone (Starlette cancels a streaming response when the client
disconnects; a non-streaming one polls `is_disconnected`), or an error. Closing withdraws the
segments still at the pacer and cancels those running, so their slots free at the engine's next
step, and the ticket is given back when the engine has ended them. A long-form request's audio is
its segments' in order through the library's `StreamJoiner`, sent as it becomes final, whole or
streamed alike. Every error reaches the client as a JSON body; tracebacks go to the log.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from qwen3tts_jax.engine import Chunk, RequestHandle, Result
from qwen3tts_jax.engine import Request as EngineRequest
from qwen3tts_jax.join import StreamJoiner
from qwen3tts_jax.server import audio_formats
from qwen3tts_jax.server.errors import ApiError, from_value_error
from qwen3tts_jax.server.schema import SpeechRequest
from qwen3tts_jax.server.service import Job, SpeechService, Ticket, finish_reason

log = logging.getLogger("qwen3tts_jax.server")

STATIC = Path(__file__).parent / "static"
POLL_S = 0.25  # how often a waiting non-streaming handler looks for a client disconnect
UPLOAD_FIELDS = ("audio_sample", "name", "ref_text", "consent")  # consent: vllm-omni's clients send it


class _Leg:
    """One engine request of a flight (a long-form request has one per segment)."""

    def __init__(self, request: EngineRequest):
        self.request = request
        self.pending: Future | None = None  # set when handed to the pacer
        self.handle: RequestHandle | None = None  # set when the engine has it
        self.result: Result | None = None
        self.needed = False  # its client reads it now: no longer a prefetch the pacer may stop


class _Flight:
    """One admitted request from submission (to the pacer) to its end (see the module docstring).
    Its engine requests (segments) are submitted in order, at most `long_form_parallel` of them
    not yet read to their end, and read in order."""

    def __init__(self, service: SpeechService, job: Job, ticket: Ticket):
        self.service, self.job, self.ticket = service, job, ticket
        self.legs = [_Leg(r) for r in job.requests]
        self.window = service.config.long_form_parallel
        self.started = time.perf_counter()
        self._submitted = 0
        self._closed = False
        self._lock = threading.Lock()
        self._fill(0)

    @property
    def results(self) -> list[Result]:
        """The results of the segments read to their end, in order."""
        return [leg.result for leg in self.legs if leg.result is not None]

    def _fill(self, reading: int) -> None:
        """Hand the pacer the segments up to `reading + window - 1`: segment `reading` as needed
        now (promoted if it went ahead as a prefetch), the later ones as prefetches."""
        with self._lock:
            while not self._closed and self._submitted < min(len(self.legs), reading + self.window):
                self._submit(self.legs[self._submitted], prefetch=self._submitted > reading)
                self._submitted += 1
            leg = self.legs[reading] if reading < self._submitted else None
            if leg is not None and not leg.needed:
                leg.needed = True
                self.service.pacer.promote(leg.pending)

    def _submit(self, leg: _Leg, prefetch: bool) -> None:
        """Queue the leg's engine request at the pacer (called with the lock)."""
        leg.needed = not prefetch
        leg.pending = self.service.submit(leg.request, prefetch, lambda handle: self._preempted(leg, handle))

    def _preempted(self, leg: _Leg, handle: RequestHandle) -> bool:
        """The pacer stops a prefetched segment for a waiting request (server/pacer.py): cancel
        it and queue it again, unless the client reads it by now (False: it keeps its slot)."""
        with self._lock:
            if self._closed or leg.needed:
                return False
            handle.cancel()
            self._submit(leg, prefetch=True)
        self.service.metrics.preempted.inc()
        return True

    async def _admitted(self, leg: _Leg, request: Request | None) -> RequestHandle | None:
        """Wait until the pacer has handed the segment to the engine; None if the client went
        away first (with `request`: polled). Raises the engine's ValueError, or CancelledError
        when the server stops."""
        waiting = asyncio.wrap_future(leg.pending)
        while leg.handle is None:
            done, _ = await asyncio.wait({waiting}, timeout=POLL_S)
            if done:
                if waiting.cancelled():
                    self.close()
                    if leg.handle is None:
                        raise ApiError(503, "the server is shutting down", None, "cancelled")
                elif waiting.exception() is not None:  # the engine's fit check: a request beyond its shape
                    self.close()
                    raise from_value_error(waiting.exception(), "input")
                else:
                    leg.handle = waiting.result()
            elif request is not None and await request.is_disconnected():
                self.close()
                if leg.handle is None:
                    return None
        return leg.handle

    async def events(self, request: Request | None = None) -> AsyncIterator[tuple[int, Chunk | Result]]:
        """`(segment index, event)`: each segment's chunks, then its result, segment after
        segment; it stops after a segment that was cancelled or failed. With `request`, a client
        that went away cancels the request (non-streaming responses: nothing is sent until the
        end)."""
        loop = asyncio.get_running_loop()
        for k, leg in enumerate(self.legs):
            self._fill(k)
            if leg.pending is None:  # closed before this segment was submitted
                return
            handle = await self._admitted(leg, request)
            if handle is None:
                return
            while leg.result is None:
                try:
                    event = await loop.run_in_executor(self.service.waiters, handle.events.get, True, POLL_S)
                except queue.Empty:
                    event = None
                if request is not None and not handle.done and await request.is_disconnected():
                    self.close()
                if event is None:
                    continue
                if isinstance(event, Chunk):
                    self.service.metrics.add_frames(len(event.codes))
                else:
                    leg.result = event
                yield k, event
            if leg.result.finish_reason in ("cancelled", "error") or self._closed:  # closed: the rest is withdrawn
                break
        self.close()

    def close(self) -> None:
        """Idempotent: withdraw or cancel every segment still going; account and give the ticket
        back once the engine has ended them all."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        ran, withdrawn = [], False
        for leg in self.legs[: self._submitted]:
            if leg.handle is None:
                if self.service.pacer.withdraw(leg.pending) or leg.pending.cancelled():
                    withdrawn = True
                    continue
                try:  # handed to the engine meanwhile (or being handed: the pacer sets it at once)
                    leg.handle = leg.pending.result(timeout=60)
                except BaseException:  # the engine refused it: nothing runs
                    continue
            ran.append(leg)
        if not ran:
            if withdrawn:
                self.service.withdrawn(self.job)
            self.ticket.release()
            return
        cancelled = []
        for leg in ran:
            if not leg.handle.done:
                leg.handle.cancel()
                cancelled.append(leg.handle)

        def settle():
            try:
                results = [leg.handle.result() for leg in ran]
                late = None
                if cancelled:
                    # How many frames the engine made after the cancel reached it (the log's
                    # `after_cancel`): a request that ended on its own meanwhile made none.
                    late = max(
                        0 if h.frames_at_cancel is None else h.result().frames - h.frames_at_cancel for h in cancelled
                    )
                self.service.finished(self.job, results, time.perf_counter() - self.started, late)
            finally:
                self.ticket.release()

        if all(leg.handle.done for leg in ran):
            settle()
        else:
            try:
                self.service.waiters.submit(settle)
            except RuntimeError:  # shutting down: the engine loop has cancelled everything
                self.ticket.release()


class _ClosingStream(StreamingResponse):
    """A StreamingResponse that closes its flight however the response ends (a disconnect
    cancels the body iterator between two chunks, where its own `finally` would not run)."""

    def __init__(self, content, flight: _Flight, **kwargs):
        super().__init__(content, **kwargs)
        self.flight = flight

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.flight.close()


def _error(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def _validation_error(exc: RequestValidationError) -> ApiError:
    errors = exc.errors()
    first = errors[0] if errors else {"msg": "invalid request", "loc": (), "type": ""}
    loc = [p for p in first.get("loc", ()) if p != "body"]
    param = str(loc[0]) if loc else None
    kind = first.get("type", "")
    if kind == "json_invalid":
        message = f"malformed JSON body: {first.get('ctx', {}).get('error', first.get('msg'))}"
        param = None
    elif kind == "extra_forbidden":
        unknown = sorted({str(e["loc"][-1]) for e in errors if e.get("type") == "extra_forbidden"})
        message = f"unknown field(s) {unknown}; see the request schema (GET /docs)"
        param = unknown[0]
    elif kind == "missing":
        message = f"{param}: field required"
    elif kind == "model_attributes_type":
        message = "the request body must be a JSON object"
    else:
        msg = str(first.get("msg", "")).removeprefix("Value error, ")
        message = f"{param}: {msg}" if param else msg
    return ApiError(422, message, param)


def create_app(service: SpeechService, *, on_failure=None) -> FastAPI:
    """The app; its lifespan starts the service (load, compile, warm up) and stops it."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start(on_failure=on_failure)
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(title="qwen3tts-jax", summary="Qwen3-TTS in JAX, OpenAI-compatible speech API", lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        service.metrics.rejected.labels("invalid").inc()
        return _error(_validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return _error(
            ApiError(exc.status_code, str(exc.detail), None, "not_found" if exc.status_code == 404 else "http_error")
        )

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(ApiError(500, "internal server error (details are in the server log)", None, "server_error"))

    # ------------------------------------------------------------------ speech

    @app.post(
        "/v1/audio/speech",
        response_class=Response,
        responses={200: {"content": {"audio/wav": {}, "audio/pcm": {}, "audio/flac": {}, "text/event-stream": {}}}},
    )
    async def speech(body: SpeechRequest, request: Request):
        service.check_ready()
        try:
            service.check(body)
        except ApiError:
            service.metrics.rejected.labels("invalid").inc()
            raise
        ticket = service.admit()
        try:
            job = await run_in_threadpool(service.prepare, body)
            flight = _Flight(service, job, ticket)
        except ApiError as err:
            ticket.release()
            if err.status == 400:
                service.metrics.rejected.labels("invalid").inc()
            raise
        except BaseException:
            ticket.release()
            raise
        headers = {"X-Request-Id": job.id}
        if job.long_form:
            headers["X-Segments"] = str(len(job.requests))
        if job.stream:
            return _stream(flight, headers)
        return await _whole(flight, request, headers)

    async def _whole(flight: _Flight, request: Request, headers: dict) -> Response:
        parts = []
        try:
            async for audio in _audio(flight, request):
                parts.append(audio)
        finally:
            flight.close()
        results = flight.results
        reason = finish_reason([r.finish_reason for r in results], len(flight.legs)) if results else "cancelled"
        if reason == "cancelled":
            raise ApiError(
                503,
                "the request was cancelled (the client went away or the server is shutting down)",
                None,
                "cancelled",
            )
        if reason == "error":
            log.error("request %s failed in the engine: %s", flight.job.id, [r.error for r in results if r.error])
            raise ApiError(500, "generation failed (details are in the server log)", None, "server_error")
        fmt = flight.job.response_format
        audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        data = await run_in_threadpool(audio_formats.encode, audio, fmt)
        headers.update(
            {
                "X-Finish-Reason": reason,
                "X-Frames": str(sum(r.frames for r in results)),
                "X-Input-Tokens": str(sum(r.prompt_tokens for r in results)),
                "X-Audio-Seconds": f"{len(audio) / audio_formats.SAMPLE_RATE:.3f}",
            }
        )
        if flight.job.long_form:
            headers["X-Segment-Finish-Reasons"] = ",".join(r.finish_reason for r in results)
        return Response(data, media_type=audio_formats.MEDIA_TYPES[fmt], headers=headers)

    def _stream(flight: _Flight, headers: dict) -> StreamingResponse:
        job = flight.job
        if job.stream_format == "sse":

            async def sse():
                try:
                    async for audio in _audio(flight):
                        data = base64.b64encode(audio_formats.pcm_bytes(audio)).decode("ascii")
                        yield _sse({"type": "speech.audio.delta", "audio": data})
                except ApiError as err:
                    yield _sse({"type": "speech.audio.error", "error": err.body()["error"]})
                    return
                yield _sse(_sse_end(flight))

            return _ClosingStream(
                sse(),
                flight,
                media_type="text/event-stream",
                headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )

        async def raw():
            if job.response_format == "wav":
                yield audio_formats.wav_header(None)
            try:
                async for audio in _audio(flight):
                    yield audio_formats.pcm_bytes(audio)
            except ApiError as err:  # raw audio has no error channel: the stream ends short
                log.error("request %s: %s", job.id, err.message)

        return _ClosingStream(raw(), flight, media_type=audio_formats.MEDIA_TYPES[job.response_format], headers=headers)

    # ------------------------------------------------------------------ voices

    @app.get("/v1/audio/voices")
    async def list_voices():
        service.check_ready()
        presets = service.model.get_supported_speakers() or []
        return {"voices": presets, "uploaded_voices": service.voices.list() if service.voices else []}

    @app.post("/v1/audio/voices")
    async def upload_voice(request: Request):
        service.check_ready()
        try:
            form = await request.form(max_part_size=1 << 20)
        except Exception as err:  # a malformed multipart body is the client's
            raise ApiError(
                400, f"the body must be multipart/form-data with audio_sample and name: {err}", None
            ) from None
        unknown = sorted(set(form.keys()) - set(UPLOAD_FIELDS))
        if unknown:
            raise ApiError(422, f"unknown field(s) {unknown}; fields: {list(UPLOAD_FIELDS)}", unknown[0])
        sample, name, ref_text = form.get("audio_sample"), form.get("name"), form.get("ref_text")
        if sample is None or isinstance(sample, str):
            raise ApiError(422, "audio_sample: a file field is required", "audio_sample")
        if not isinstance(name, str) or not name:
            raise ApiError(422, "name: field required", "name")
        if ref_text is not None and not isinstance(ref_text, str):
            raise ApiError(422, "ref_text must be a text field", "ref_text")
        data = await sample.read(service.config.max_upload_bytes + 1)
        voice = await run_in_threadpool(service.create_voice, name, data, sample.content_type or "", ref_text)
        log.info("voice %s uploaded (%s, %d bytes)", name, "ICL" if voice.item.icl_mode else "x-vector only", len(data))
        return {"voice": voice.info()}

    @app.delete("/v1/audio/voices/{name}")
    async def delete_voice(name: str):
        service.check_ready()
        if service.voices is None or not service.voices.delete(name):
            raise ApiError(404, f"no uploaded voice named {name!r}", "name", "not_found")
        log.info("voice %s deleted", name)
        return {"deleted": name}

    # ------------------------------------------------------------------ service

    @app.get("/v1/models")
    async def models():
        service.check_ready()
        m = service.model
        return {
            "object": "list",
            "data": [
                {
                    "id": service.config.model,
                    "object": "model",
                    "created": service.started_at,
                    "owned_by": "qwen3tts-jax",
                    "task_type": service.task_type,
                    "size": m.tts_model_size,
                    "languages": m.get_supported_languages(),
                    "voices": m.get_supported_speakers() or [],
                    "sample_rate": audio_formats.SAMPLE_RATE,
                    "max_new_tokens": service.config.max_new_tokens,
                    "max_input_tokens": service.config.max_input_tokens,
                    "max_input_chars": service.config.max_input_chars,
                    "long_form_default": service.config.long_form_default,
                    "long_form_tokens": service.config.segment_tokens,
                }
            ],
        }

    @app.get("/health")
    async def health():
        if not service.ready:
            return JSONResponse({"status": service.state, "reason": service.reason}, status_code=503)
        return {
            "status": "ok",
            "model": service.config.model,
            "task_type": service.task_type,
            "slots": service.engine.shape.slots,
            "active": service.engine.active,
            "waiting": service.engine.waiting,
        }

    @app.get("/metrics")
    async def metrics():
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


async def _audio(flight: _Flight, request: Request | None = None) -> AsyncIterator[np.ndarray]:
    """The request's audio (float, mono) as it becomes final: a plain request's chunks as they
    are; a long-form request's segments through the library's `StreamJoiner` (the pause its
    boundary calls for before the next segment, short fades at each seam), as `long_form.stream`."""
    job = flight.job
    joiner = StreamJoiner(audio_formats.SAMPLE_RATE, job.join) if job.long_form else None
    async for k, event in flight.events(request):
        if isinstance(event, Chunk):
            audio = event.audio if joiner is None else joiner.push(event.audio)
        elif joiner is not None and event.finish_reason not in ("cancelled", "error"):
            audio = joiner.end_segment(job.segments[k])
        else:
            continue
        if len(audio):
            yield audio


def _sse_end(flight: _Flight) -> dict:
    """The last SSE event: `speech.audio.done` with the usage (and, in long form, how each
    segment ended), or `speech.audio.error` when the request was cancelled or failed."""
    results = flight.results
    reason = finish_reason([r.finish_reason for r in results], len(flight.legs)) if results else "cancelled"
    if reason in ("cancelled", "error"):
        message = (
            "generation failed (details are in the server log)"
            if reason == "error"
            else f"the request ended early: {reason}"
        )
        return {"type": "speech.audio.error", "error": {"message": message, "finish_reason": reason}}
    frames, tokens = sum(r.frames for r in results), sum(r.prompt_tokens for r in results)
    seconds = sum(len(r.audio) for r in results) / audio_formats.SAMPLE_RATE
    event = {
        "type": "speech.audio.done",
        "usage": {
            "input_tokens": tokens,
            "output_tokens": frames,
            "total_tokens": tokens + frames,
            "frames": frames,
            "audio_seconds": round(seconds, 6),
            "finish_reason": reason,
        },
    }
    if flight.job.long_form:
        event["segments"] = [
            {"index": k, "text": seg.text, "frames": r.frames, "finish_reason": r.finish_reason}
            for k, (seg, r) in enumerate(zip(flight.job.segments, results))
        ]
    return event


def _sse(event: dict) -> str:
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n"
