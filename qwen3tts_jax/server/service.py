"""The speech service: one model, one engine stepped on its own thread, the voices, admission
control, and the translation of a `SpeechRequest` into an engine `Request`.

No reference class (the official package has no server). The HTTP layer (`app.py`) only parses,
awaits and encodes; everything a request means is decided here, through the Python API's own
request builders (`custom_voice_prompts` / `voice_design_prompts` / `voice_clone_prompts`, then
`requests`), so a server request and the same Python call give the same engine request.

Life cycle: `start()` loads the model (unless given one), builds the engine from the settings'
shape with sampling compiled in (greedy and sampled requests share one program), compiles every
codec push shape ahead of time (`CodecSlots.compile`), runs warm-up requests through it, as many
at once as each of its row buckets holds (compiling what the requests will run), and only then
reports ready.
Admission: a request takes a `Ticket` before any work; at most `max_batch + max_queue` are held
(running, waiting, or being prepared), beyond that 503. A ticket is given back when the engine
has ended its request, so a cancelled request's slot is free before its ticket is. Admitted
requests reach the engine through the `AdmissionPacer` (one per engine step: see pacer.py).

Long form (`long_form`, see `prepare`): the input is cut by the library's own plan into
segments, each its own engine request with the same voice prompt and key; the request still
holds one ticket (one client's place), and its segments enter the engine at most
`long_form_parallel` at a time (the HTTP layer submits the next when one ends); those submitted
ahead of their turn only use slots nobody needs and are stopped and queued again when a request
that is needed waits for a slot (pacer.py), so one long text shares the slots with other clients
instead of filling them; `--max-input-chars` bounds how many segments one request
can have.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from qwen3tts_jax.engine import Engine, EngineLoop, Request, RequestHandle, Result
from qwen3tts_jax.join import JoinRule
from qwen3tts_jax.long_form import LongFormOptions
from qwen3tts_jax.sampling import SamplingConfig, SamplingProgram
from qwen3tts_jax.segment import Segment
from qwen3tts_jax.server import audio_formats
from qwen3tts_jax.server.errors import ApiError, from_value_error, unavailable
from qwen3tts_jax.server.metrics import ServerMetrics
from qwen3tts_jax.server.pacer import AdmissionPacer
from qwen3tts_jax.server.schema import SpeechRequest
from qwen3tts_jax.server.settings import TEMPLATE_TOKENS, ServerConfig
from qwen3tts_jax.server.voices import Voice, VoiceStore, check_name

log = logging.getLogger("qwen3tts_jax.server")

TASK_TYPES = {"CustomVoice": "custom_voice", "VoiceDesign": "voice_design", "Base": "base"}
TASK_NAMES = {v: k for k, v in TASK_TYPES.items()}
STREAM_FORMATS = ("sse", "audio")
_DATA_URL = re.compile(r"data:(audio/[A-Za-z0-9.+-]+)(?:;[^,;]*)*;base64,", re.IGNORECASE)
WARMUP_TEXT = "Warming up."


@dataclasses.dataclass(frozen=True)
class Job:
    """A prepared request: what the engine runs and how the answer is sent. A plain request is
    one engine request; a long-form one is one per segment, in text order, joined by `join`."""

    id: str
    requests: tuple[Request, ...]
    response_format: str
    stream: bool
    stream_format: str | None
    voice: str  # for the log line
    segments: tuple[Segment, ...] | None = None  # long form: the input's segments (their boundaries set the pauses)
    join: JoinRule | None = None

    @property
    def long_form(self) -> bool:
        return self.segments is not None


def finish_reason(reasons: list[str], planned: int) -> str:
    """One request's finish reason from its segments': the most severe of error, cancelled (also
    when segments never ran), loop, length, else stop."""
    for r in ("error", "cancelled"):
        if r in reasons:
            return r
    if len(reasons) < planned:
        return "cancelled"
    for r in ("loop", "length"):
        if r in reasons:
            return r
    return "stop"


class Ticket:
    """One admitted request's place (`SpeechService.admit`); `release` is idempotent."""

    def __init__(self, service: SpeechService):
        self._service, self._released = service, False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._service._release()


class SpeechService:
    def __init__(self, config: ServerConfig, model=None):
        self.config = config
        self.model = model
        self.state, self.reason = "loading", "loading the model"
        self.loop: EngineLoop | None = None
        self.pacer: AdmissionPacer | None = None
        self.voices: VoiceStore | None = None
        self.started_at = int(time.time())
        self._lock = threading.Lock()
        self._in_flight = 0
        self._voice_lock = threading.Lock()  # voice building is heavy: one at a time
        # Threads that wait on engine events for the async handlers: one per admitted request at
        # most, so a full server never starves the handlers of threads.
        self.waiters = ThreadPoolExecutor(config.capacity + 4, thread_name_prefix="qwen3tts-wait")
        self.metrics = ServerMetrics(
            lambda: self.engine.active if self.loop else 0,
            lambda: self.engine.waiting + len(self.pacer) if self.loop else 0,
            lambda: self._in_flight,
            lambda: self.engine.compiling if self.loop else 0,
        )
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ life cycle

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def engine(self) -> Engine:
        return self.loop.engine

    @property
    def task_type(self) -> str | None:
        return None if self.model is None else TASK_NAMES[self.model.tts_model_type]

    def start(self, on_failure=None) -> SpeechService:
        """Load, compile and warm up on a thread (the HTTP server answers /health meanwhile)."""

        def boot():
            try:
                self._boot()
            except Exception as err:  # reported on /health and the log, then the server stops
                self.state, self.reason = "failed", f"{type(err).__name__}: {err}"
                log.error("start-up failed: %s", self.reason)
                if on_failure is not None:
                    on_failure(self.reason)

        self._thread = threading.Thread(target=boot, name="qwen3tts-boot", daemon=True)
        self._thread.start()
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.ready

    def _boot(self) -> None:
        cfg = self.config
        t0 = time.perf_counter()
        if self.model is None:
            from qwen3tts_jax.api import Qwen3TTSModel

            self.model = Qwen3TTSModel.from_pretrained(cfg.model, dtype=cfg.dtype, seed=cfg.seed, mesh=cfg.mesh)
            log.info(
                "loaded %s (%s, %s) in %.1f s",
                cfg.model,
                self.task_type,
                self.model.tts_model_size,
                time.perf_counter() - t0,
            )
        m = self.model
        self.reason = "building the engine"
        shape = cfg.engine_shape(m.placement.rows)
        # Sampling compiled in on both pipelines: greedy rows run as argmax of the same scores.
        model_program = SamplingConfig.from_configs(m.generation_config, m.config.talker).program()
        program = SamplingProgram(model_program.eos_token_id, model_program.suppress, True, True)
        engine = m.engine(
            shape, program=program, chunk_frames=cfg.chunk_frames, first_chunk_frames=cfg.first_chunk_frames
        )
        self.loop = EngineLoop(engine).start()
        self.pacer = AdmissionPacer(self.loop)
        if m.tts_model_type == "base":
            self.voices = VoiceStore(
                cfg.voices_dir, m.config.talker.transformer.hidden_size, m.config.talker.num_code_groups
            )
        if cfg.warmup:
            from qwen3tts_jax.compile_cache import CompileCounter

            self.reason = "compiling (warm-up request)"
            t1, counter = time.perf_counter(), CompileCounter()
            # As many at once as each row bucket holds, so every advance a load of requests steps
            # is compiled before the first client. Through the pacer, as every request goes: one
            # admission per step (group size 1, as served; submitted straight to the engine, a
            # burst was admitted in groups whose sizes depended on timing, so which programs a
            # warm-up compiled differed from start to start), each request long enough to still
            # run when the last of its burst is admitted. Every codec push shape first (ahead of
            # time, nothing runs): a push's (piece frames, row bucket) depends on when requests
            # arrive, which warm-up requests cannot cover.
            codec_shapes = engine.codec.compile()
            warm = self._warmup_requests(engine.shape.slots + 2)  # built once (Base: the encoders run)
            for n in engine.row_buckets:
                futures = [self.pacer.submit(r) for r in warm * n]
                for res in (f.result().result() for f in futures):
                    if res.finish_reason == "error":
                        raise RuntimeError(f"warm-up request failed: {res.error}")
            log.info(
                "warm-up: compiled and ran in %.1f s (engine: %d slots, %d KV positions, text track %d; "
                "%d codec push shapes; %s)",
                time.perf_counter() - t1,
                shape.slots,
                shape.cache_slots,
                shape.text_track,
                codec_shapes,
                counter.stats().summary(),
            )
        self.state, self.reason = "ready", "ready"

    def _warmup_requests(self, min_frames: int) -> list[Request]:
        """Requests that run every program a server request runs: admission, the frame loop with
        sampling, the codec's 1- and chunk-frame pushes and a final padded one; on a Base model
        the reference encoder and speaker encoder too (a one-off ICL voice). At least
        `min_frames` frames each, within the server's frame budget."""
        m = self.model
        kind = m.tts_model_type
        if kind == "custom_voice":
            prompts = m.custom_voice_prompts(WARMUP_TEXT, m.get_supported_speakers()[0])
        elif kind == "voice_design":
            prompts = m.voice_design_prompts(WARMUP_TEXT, "A calm voice.")
        else:
            t = np.arange(24000 * 2) / 24000.0
            tone = (0.3 * np.sin(2 * np.pi * 220.0 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
            items = m.create_voice_clone_prompt((tone, 24000), "A warm-up reference.")
            prompts = m.voice_clone_prompts(WARMUP_TEXT, voice_clone_prompt=items)
        frames = max(self.config.first_chunk_frames + self.config.chunk_frames + 2, min_frames)
        frames = min(frames, self.config.max_new_tokens - 1)
        return m.requests(prompts, seed=0, max_new_tokens=frames + 1, min_new_tokens=frames)

    def stop(self) -> None:
        """Cancel what is queued or running and end the engine thread."""
        if self.pacer is not None:
            self.pacer.stop()
        if self.loop is not None:
            self.loop.stop()
        self.state, self.reason = "stopped", "shutting down"
        self.waiters.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ admission

    def check_ready(self) -> None:
        if not self.ready:
            raise unavailable(f"the server is not ready: {self.reason}", "server_not_ready")

    def admit(self) -> Ticket:
        self.check_ready()
        with self._lock:
            if self._in_flight >= self.config.capacity:
                self.metrics.rejected.labels("queue_full").inc()
                raise unavailable(
                    f"the server is at capacity ({self.config.max_batch} generating + "
                    f"{self.config.max_queue} queued); retry later",
                    "server_overloaded",
                )
            self._in_flight += 1
        return Ticket(self)

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # ------------------------------------------------------------------ requests

    def check(self, body: SpeechRequest) -> tuple[bool, str | None]:
        """The checks that need no work (before admission, so a bad request is a 400 even when
        the server is full): returns `(stream, stream_format)`. Raises ApiError naming the field."""
        m, cfg = self.model, self.config
        if body.model is not None and body.model not in cfg.model_ids:
            raise ApiError(400, f"model {body.model!r} is not served here; this server serves {cfg.model!r}", "model")
        fmt = body.response_format
        if fmt not in audio_formats.FORMATS:
            raise ApiError(
                400,
                f"response_format {fmt!r} is not supported; supported: {', '.join(audio_formats.FORMATS)}",
                "response_format",
            )
        if body.speed != 1.0:
            raise ApiError(
                400, f"speed {body.speed!r} is not supported: the model has no rate control; only 1.0", "speed"
            )
        # OpenAI's SDK asks for SSE with stream_format alone (OpenAI has no `stream` field).
        stream = body.stream or body.stream_format is not None
        stream_format = (body.stream_format or "sse") if stream else None
        if stream_format is not None and stream_format not in STREAM_FORMATS:
            raise ApiError(
                400, f"stream_format {stream_format!r} is not supported; supported: sse, audio", "stream_format"
            )
        if stream and fmt not in audio_formats.STREAMABLE:
            raise ApiError(
                400,
                f"response_format {fmt!r} cannot be streamed; stream pcm or wav, or ask for {fmt} without streaming",
                "response_format",
            )
        kind = m.tts_model_type
        if body.task_type is not None:
            if body.task_type not in TASK_TYPES:
                raise ApiError(400, f"task_type {body.task_type!r} is not one of {list(TASK_TYPES)}", "task_type")
            if TASK_TYPES[body.task_type] != kind:
                raise ApiError(
                    400,
                    f"task_type {body.task_type!r} needs a {body.task_type} model; this server's model is "
                    f"{TASK_NAMES[kind]}",
                    "task_type",
                )
        if body.max_new_tokens is not None and body.max_new_tokens > cfg.max_new_tokens:
            raise ApiError(
                400,
                f"max_new_tokens {body.max_new_tokens} exceeds this server's limit {cfg.max_new_tokens} "
                f"(serve --max-new-tokens)",
                "max_new_tokens",
            )
        if len(body.input) > cfg.max_input_chars:
            raise ApiError(
                400,
                f"input is {len(body.input)} characters; this server's limit is {cfg.max_input_chars} "
                f"(serve --max-input-chars)",
                "input",
            )
        if body.language.lower() not in m.get_supported_languages():
            raise ApiError(
                400,
                f"language {body.language!r} is not supported; supported: {m.get_supported_languages()}",
                "language",
            )
        if kind == "custom_voice":
            if body.voice is not None and body.voice.lower() not in m.get_supported_speakers():
                raise ApiError(
                    400,
                    f"voice {body.voice!r} is not a preset speaker of this model; voices: {m.get_supported_speakers()}",
                    "voice",
                )
        elif kind == "voice_design":
            if not body.instructions or not body.instructions.strip():
                raise ApiError(
                    400, "instructions: a VoiceDesign model needs the voice described in `instructions`", "instructions"
                )
        else:
            if body.instructions is not None:
                raise ApiError(400, "instructions: a Base (voice clone) model takes no instructions", "instructions")
            uploaded = None if body.voice is None else self.voices.get(body.voice)
            if body.ref_audio is not None:
                # OpenAI's SDK always sends a voice: with ref_audio it is ignored unless it names an
                # uploaded voice, which would make the request ambiguous.
                if uploaded is not None:
                    raise ApiError(400, "give either voice (an uploaded voice) or ref_audio, not both", "ref_audio")
            elif body.voice is None:
                raise ApiError(
                    400,
                    "voice: a Base model needs `voice` (an uploaded voice, POST /v1/audio/voices) or `ref_audio`",
                    "voice",
                )
            elif uploaded is None:
                raise ApiError(
                    400, f"voice {body.voice!r} is not an uploaded voice; uploaded: {self.voices.names()}", "voice"
                )
            elif body.ref_text is not None or body.x_vector_only_mode:
                raise ApiError(
                    400,
                    "ref_text and x_vector_only_mode go with ref_audio; an uploaded voice carries its own",
                    "ref_text" if body.ref_text is not None else "x_vector_only_mode",
                )
        if kind != "base":
            for name in ("ref_audio", "ref_text"):
                if getattr(body, name) is not None:
                    raise ApiError(
                        400, f"{name} applies to a Base model; this server's model is {TASK_NAMES[kind]}", name
                    )
            if body.x_vector_only_mode:
                raise ApiError(
                    400,
                    f"x_vector_only_mode applies to a Base model; this server's model is {TASK_NAMES[kind]}",
                    "x_vector_only_mode",
                )
        return stream, stream_format

    def prepare(self, body: SpeechRequest) -> Job:
        """`check`, then build the engine requests (blocking: a one-off reference voice is encoded
        here, once for all segments). Raises ApiError naming the field."""
        m, cfg = self.model, self.config
        stream, stream_format = self.check(body)
        try:
            prompts, voice = self._prompts(body, m.tts_model_type)
        except (ValueError, TypeError, FileNotFoundError) as err:
            raise from_value_error(err, "input") from None
        job_id = f"speech-{uuid.uuid4().hex[:16]}"
        kw = body.sampling_kwargs()
        if self._long_form(body):
            return self._prepare_long(
                body, prompts, kw, Job(job_id, (), body.response_format, stream, stream_format, voice)
            )
        self._check_lengths(prompts[0], body)
        kw.setdefault("max_new_tokens", min(m.generation_config.max_new_tokens, cfg.max_new_tokens))
        try:
            (request,) = m.requests(prompts, **kw)
        except (ValueError, TypeError) as err:
            raise from_value_error(err) from None
        return Job(
            job_id, (dataclasses.replace(request, id=job_id),), body.response_format, stream, stream_format, voice
        )

    def _long_form(self, body: SpeechRequest) -> bool:
        mode = body.long_form or self.config.long_form_default
        if mode == "auto":
            return len(self.model.text_tokenizer.encode(body.input)) > self.config.segment_tokens
        return mode == "on"

    def _prepare_long(self, body: SpeechRequest, prompts, kw: dict, job: Job) -> Job:
        """The library's long-form plan (`Qwen3TTSModel.long_form_plan`: its segmentation, one
        voice prompt for all segments, every segment drawing with the request's key, each its
        own budget and loop guard), each segment's budget within the server's --max-new-tokens."""
        m, cfg = self.model, self.config
        options = LongFormOptions(max_tokens=cfg.segment_tokens)
        try:
            plan = m.long_form_plan(prompts, body.input, kw, options)
        except (ValueError, TypeError) as err:
            raise from_value_error(err, "input") from None
        (segments,), (requests,) = plan.segments, plan.requests
        for r in requests:
            self._check_lengths(r.prompt, body)
        requests = tuple(
            dataclasses.replace(r, id=f"{job.id}-{k}", max_new_tokens=min(r.max_new_tokens, cfg.max_new_tokens))
            for k, r in enumerate(requests)
        )
        return dataclasses.replace(job, requests=requests, segments=tuple(segments), join=options.join)

    def _prompts(self, body: SpeechRequest, kind: str):
        """The Python API's prompt builder for the request (after `check`), and the voice's name."""
        m = self.model
        if kind == "custom_voice":
            voice = body.voice if body.voice is not None else m.get_supported_speakers()[0]
            return m.custom_voice_prompts(body.input, voice, body.language, body.instructions), voice
        if kind == "voice_design":
            return m.voice_design_prompts(body.input, body.instructions, body.language), "(designed)"
        if body.ref_audio is not None:
            wav, sr = self.decode_data_url(body.ref_audio, "ref_audio")
            self._check_ref_seconds(len(wav) / sr, "ref_audio")
            return m.voice_clone_prompts(
                body.input,
                body.language,
                ref_audio=(wav, sr),
                ref_text=body.ref_text,
                x_vector_only_mode=body.x_vector_only_mode,
            ), "(ref_audio)"
        v = self.voices.get(body.voice)
        if v is None:  # deleted since `check`
            raise ApiError(
                400, f"voice {body.voice!r} is not an uploaded voice; uploaded: {self.voices.names()}", "voice"
            )
        return m.voice_clone_prompts(body.input, body.language, voice_clone_prompt=[v.item]), v.name

    def _check_lengths(self, prompt, body: SpeechRequest) -> None:
        limit = self.config.max_input_tokens
        n = len(prompt.text_ids) - TEMPLATE_TOKENS
        if n > limit:
            raise ApiError(
                400,
                f"input is {n} tokens; this server's limit is {limit} (serve --max-input-tokens); send "
                f'"long_form": "on" to have it cut into segments',
                "input",
            )
        for name, ids in (("instructions", prompt.instruct_ids), ("ref_text", prompt.ref_text_ids)):
            if ids is not None and len(ids) > limit:
                raise ApiError(
                    400, f"{name} is {len(ids)} tokens; this server's limit is {limit} (serve --max-input-tokens)", name
                )

    def _check_ref_seconds(self, seconds: float, name: str) -> None:
        if seconds > self.config.max_ref_seconds:
            raise ApiError(
                400,
                f"{name} is {seconds:.1f} s long; this server takes up to {self.config.max_ref_seconds:g} s "
                f"(serve --max-ref-seconds)",
                name,
            )

    @staticmethod
    def decode_data_url(url: str, name: str) -> tuple[np.ndarray, int]:
        """`data:audio/<type>;base64,<data>` → samples. Only data URLs: a server must not read
        its own files or fetch URLs on a client's behalf."""
        m = _DATA_URL.match(url)
        if m is None:
            raise ApiError(
                400,
                f"{name} must be a data:audio/...;base64, URL, got {url[:40]!r}{'...' if len(url) > 40 else ''}",
                name,
            )
        try:
            data = base64.b64decode(url[m.end() :], validate=True)
        except (binascii.Error, ValueError) as err:
            raise ApiError(400, f"{name}: the base64 data does not decode: {err}", name) from None
        try:
            return audio_formats.decode(data, name)
        except ValueError as err:
            raise ApiError(400, str(err), name) from None

    def submit(
        self, request: Request, prefetch: bool = False, on_preempt: Callable[[RequestHandle], bool] | None = None
    ) -> Future:
        """Queue an engine request (through the pacer): a future of its handle. `prefetch`: a
        long-form request's later segment submitted ahead, which only uses slots nobody needs and
        is stopped through `on_preempt` for a request that does (`server/pacer.py`)."""
        return self.pacer.submit(request, prefetch, on_preempt)

    def withdrawn(self, job: Job) -> None:
        """A request whose client went away before any of it reached the engine."""
        self.metrics.requests.labels("cancelled").inc()
        log.info("request %s voice=%s frames=0 ttfa=- rt=0.00x finish=cancelled (before admission)", job.id, job.voice)

    def finished(self, job: Job, results: list[Result], elapsed: float, late: int | None = None) -> None:
        """Account for an ended request (the results of its segments that ran, in order) and log
        its one line (for a request cancelled when its client went away, also how many frames
        the engine made after the cancel reached it, the most of any segment: at most one
        advance, one frame under the loop; `RequestHandle.frames_at_cancel`)."""
        m = self.metrics
        reasons = [r.finish_reason for r in results]
        reason = finish_reason(reasons, len(job.requests))
        m.requests.labels(reason).inc()
        seconds = sum(0 if r.audio is None else len(r.audio) for r in results) / audio_formats.SAMPLE_RATE
        m.audio_seconds.inc(seconds)
        first = results[0].time_to_first_audio if results else None
        if first is not None:
            m.ttfa.observe(first)
        rt = seconds / elapsed if elapsed else 0.0
        ttfa = "-" if first is None else f"{first:.3f}s"
        segments = f" segments={len(results)}/{len(job.requests)}:{','.join(reasons)}" if job.long_form else ""
        errors = sorted({r.error for r in results if r.error})
        log.info(
            "request %s voice=%s frames=%d ttfa=%s rt=%.2fx finish=%s%s%s%s",
            job.id,
            job.voice,
            sum(r.frames for r in results),
            ttfa,
            rt,
            reason,
            segments,
            "" if late is None else f" after_cancel=+{late}",
            f" error={'; '.join(errors)}" if errors else "",
        )

    # ------------------------------------------------------------------ voices

    def create_voice(self, name: str, data: bytes, mime_type: str, ref_text: str | None) -> Voice:
        """Build an uploaded voice's clone prompt once and store it (blocking)."""
        self.check_ready()
        if self.voices is None:
            raise ApiError(
                400, f"uploaded voices need a Base model; this server's model is {self.task_type}", "audio_sample"
            )
        try:
            check_name(name)
        except ValueError as err:
            raise ApiError(400, str(err), "name") from None
        if self.voices.get(name) is not None:
            raise ApiError(409, f"name: a voice named {name!r} exists already (DELETE it first)", "name")
        if len(data) > self.config.max_upload_bytes:
            raise ApiError(
                413, f"audio_sample is {len(data)} bytes; the limit is {self.config.max_upload_bytes}", "audio_sample"
            )
        if ref_text is not None and not ref_text.strip():
            ref_text = None
        try:
            wav, sr = audio_formats.decode(data, "audio_sample")
        except ValueError as err:
            raise ApiError(400, str(err), "audio_sample") from None
        self._check_ref_seconds(len(wav) / sr, "audio_sample")
        with self._voice_lock:
            try:
                (item,) = self.model.create_voice_clone_prompt((wav, sr), ref_text, x_vector_only_mode=ref_text is None)
            except (ValueError, TypeError) as err:
                e = from_value_error(err, "audio_sample")
                raise ApiError(400, e.message, "audio_sample" if e.param == "ref_audio" else e.param) from None
        if item.ref_code is not None:
            item = dataclasses.replace(item, ref_code=np.asarray(item.ref_code, np.int32))
        try:
            return self.voices.add(Voice(name, item, int(time.time()), mime_type, len(data)))
        except FileExistsError as err:
            raise ApiError(409, str(err), "name") from None
