"""Side-by-side speed of qwen3tts-jax and the official PyTorch qwen-tts 0.1.1, one command.

    .venv/bin/python benchmarks/bench.py --quick        # the check that everything runs (tens of minutes on 2 loaded
    cores)
    .venv/bin/python benchmarks/bench.py                # the full run (about an hour; use nohup)
    .venv/bin/python benchmarks/bench.py --device gpu   # ours in bf16 on a GPU (UNTESTED, see below)

What runs (each implementation in its own process, so each has its own peak RSS):

1. setup: the full-size 0.6B CustomVoice architecture and the full-size 12 Hz speech tokenizer
   are built from the official classes with seeded random weights (`tests/reference/`), saved as
   one complete released-layout model folder (cached in `--workdir`, rebuilt when missing);
2. official worker (fp32, eager attention, torch threads = 2): loads that folder with the
   official `qwen_tts.Qwen3TTSModel.from_pretrained`;
3. ours worker: loads the same folder with `qwen3tts_jax.Qwen3TTSModel.from_pretrained`, with a
   fresh persistent compilation cache (`jax_compilation_cache_dir`, min compile time and entry
   size 0): cold compile times, then the warm figures;
4. ours, second process: the same cache directory, a fresh process: load + the first streaming
   call's time to first audio (compiles come from the persistent cache);
5. `benchmarks/engine.py`: requests arriving while others run (an `EngineLoop`), vs one alone;
6. `benchmarks/codec_decode.py` (the codec engineer's script, run as is) for codec decode.

Ours uses only the public API: `custom_voice_prompts`, `requests(..., min_new_tokens=)`,
`run`, `engine(EngineShape)` with `submit`/`step`/`cancel`, `generate_custom_voice`,
`stream_custom_voice`, and `jax.monitoring` for compile seconds.

Figures (each the median of `--reps` timed runs after a warm-up run):

* frame decode rate, batch 1 and batch 8: greedy, a fixed `--frames` frames with EOS blocked
  on both sides so both run the same length. Official: a forward hook on `talker.codec_head` sets
  the EOS logit to -inf (what a min-new-tokens processor does), and forward hooks on the talker
  time-stamp each step: time per frame = (end of step N − end of prefill) / N. Ours: the requests
  with `min_new_tokens = max_new_tokens = frames + 1` in an engine sized for them (codes only);
  one untimed step admits them and makes each row's first frame, then the timed steps make the
  rest, 32 frames per step (the engine's chunk capacity; one host read each): time per frame =
  their time / their frames. At batch 1 the two implementations' greedy codes are compared
  (`codes_identical`; random full-size weights can have near-ties, so this is reported, not
  asserted);
* ours at batch 1 with the API's default budget (`max_new_tokens=8192`, an 8,448-slot KV cache;
  cancelled after `--frames` frames): attention visits only the written prefix, so the rate
  should not depend on the budget;
* prefill of a 64- and a 256-token prompt: official `talker(inputs_embeds=…)` (stack + codec
  head) on random embeddings; ours one request whose custom-voice prompt is that many positions
  (text chosen to fit), `max_new_tokens=1`, run through a 1-slot engine: the admission (prompt
  embedding, stack, head, first-token sampling, KV rows written into the slot) and the release;
* end to end, batch 8: `generate_custom_voice` of the 8 texts (default sampling) on both sides,
  10 and 64 frames each (EOS blocked: hook / `min_new_tokens`), prompt → waveforms;
* codec decode of 50 and 300 frames, and the 1-frame streaming step (from codec_decode.py);
* time to first audio: ours streams (`stream_custom_voice`, first chunk after 1 frame, then
  4-frame chunks, warm); the official package cannot stream (it returns audio after the whole
  utterance), so its figure is the `generate_custom_voice` time of the same `--frames`-frame
  utterance;
* ours cold: the seconds JAX reports tracing, lowering and compiling (`jax.monitoring` events)
  during the first offline call (batch 1, codes only: admission + frame loop), and the first
  streaming call of the first process; ours second process: first streaming call's time to
  first audio from the persistent cache, plus import and load times;
* staggered arrivals (engine.py): aggregate audio seconds per wall second of 8 requests
  arriving 0.5 s apart against one request alone, and the time to first audio of a request
  that joins a running batch against one alone;
* peak RSS of each process (`ru_maxrss`);
* frame-step weight traffic: bytes of weights one batch-1 frame reads (28 talker layers + codec
  head once, the 5 predictor layers 15 times, the 15 predictor heads once; embedding rows
  ignored) divided by the frame time, against a matvec bandwidth probe (28 separate fp32
  6144×1024 weights, batch 1, jitted) run interleaved with the frame reps in the same process:
  `fraction_of_floor` = (bytes / probe bandwidth) / frame time, median over the pairs.

Outputs `--out` (default benchmarks/results/bench[-quick].json) and the markdown table next to it
(.md), and prints the table. The machine (CPU model, cores, load average before and after each
worker, JAX/jaxlib/torch versions, devices) is recorded; on a shared machine read the ratios, not
the absolute figures.

`--device gpu` (UNTESTED: no GPU was available when this was written): ours runs in bfloat16 on
the default JAX GPU backend (policy: scanned layers, bf16 activations, fp32 norms/softmax/logits),
the probe uses bf16 weights, the bytes per frame count 2 bytes per weight; the official worker
stays on the CPU in fp32 as the baseline. engine.py runs on the CPU either way. Its figures have
never been produced.

Never imported by tests; timing assertions do not belong in tests/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FRAME_S = 0.08  # one 12.5 Hz codec frame = 80 ms of audio
SPEAKER, LANGUAGE = "ryan", "english"
TEXT_1 = "The quick brown fox jumps over the lazy dog, and then it runs far away into the quiet forest."
TEXTS_8 = [
    TEXT_1,
    "Speech synthesis turns written words into sound.",
    "Every frame of audio is eighty milliseconds long, and sixteen codebooks describe it.",
    "Benchmarks should be run on a quiet machine.",
    "A small model can still speak clearly when it is well trained.",
    "Please read the results as ratios.",
    "The second process loads its compiled programs from a persistent cache on disk.",
    "Thank you for listening.",
]
PROBE_SHAPE = (28, 6144, 1024)  # the shared perf notes' probe: 28 separate (out, in) weights
E2E_FRAMES = (10, 64)  # end-to-end batch-8 lengths (frames per text; --quick: the first only)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _median(xs):
    return statistics.median(xs) if xs else None


def _r(x, nd=3):
    return None if x is None else round(float(x), nd)


def _git() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        return rev + (" (+ uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# ------------------------------------------------------------------------------------------------
# setup: one complete released-layout folder with seeded random weights
# ------------------------------------------------------------------------------------------------


def setup_folder(workdir: Path, seed: int) -> Path:
    folder = workdir / f"model-0b6-customvoice-seed{seed}"
    marker = folder / ".complete"
    if marker.is_file():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT))
    import torch

    from tests.reference.codec_models import (
        build_reference_tokenizer,
        fullsize_codec_config_dict,
        save_reference_tokenizer,
    )
    from tests.reference.models import build_reference_model, fullsize_config_dict, save_reference_model
    from tests.reference.text_fixture import write_tokenizer_files

    torch.set_num_threads(2)
    t = time.perf_counter()
    model = build_reference_model(fullsize_config_dict("custom_voice", "0b6"), seed)
    save_reference_model(model, folder)
    del model
    codec = build_reference_tokenizer(fullsize_codec_config_dict(), seed)
    save_reference_tokenizer(codec, folder / "speech_tokenizer")
    del codec
    write_tokenizer_files(folder)
    marker.write_text(json.dumps({"seed": seed, "built_s": round(time.perf_counter() - t, 1)}))
    return folder


# ------------------------------------------------------------------------------------------------
# official worker (torch only; never imports jax)
# ------------------------------------------------------------------------------------------------


def worker_official(args) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "tests" / "reference" / "stubs"))
    torch.set_num_threads(2)
    from qwen_tts import Qwen3TTSModel as RefModel

    out: dict = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(), "loadavg_start": os.getloadavg()}
    t = time.perf_counter()
    api = RefModel.from_pretrained(str(args.folder), dtype=torch.float32, attn_implementation="eager")
    out["load_s"] = _r(time.perf_counter() - t, 2)
    model = api.model
    talker = model.talker
    eos = model.config.talker_config.codec_eos_token_id

    def no_eos(_module, _inputs, logits):  # a min-new-tokens processor that never lets go
        logits = logits.clone()
        logits[..., eos] = float("-inf")
        return logits

    talker.codec_head.register_forward_hook(no_eos)
    stamps: list[float] = []
    talker.register_forward_hook(lambda *_: stamps.append(time.perf_counter()))

    def decode_run(texts, frames):
        ids = api._tokenize_texts([api._build_assistant_text(x) for x in texts])
        stamps.clear()
        with torch.no_grad():
            codes, _ = model.generate(
                input_ids=ids,
                instruct_ids=[None] * len(texts),
                languages=[LANGUAGE] * len(texts),
                speakers=[SPEAKER] * len(texts),
                non_streaming_mode=True,
                max_new_tokens=frames + 1,
                do_sample=False,
                subtalker_dosample=False,
            )
        assert len(stamps) == frames + 1, (len(stamps), frames)
        assert all(c.shape[0] == frames for c in codes), [c.shape for c in codes]
        return (stamps[-1] - stamps[0]) / frames, [c.numpy() for c in codes]

    for name, texts in (("b1", [TEXT_1]), ("b8", TEXTS_8)):
        decode_run(texts, min(args.frames, 4))  # warm-up
        times, codes = [], None
        for _ in range(args.reps):
            dt, codes = decode_run(texts, args.frames)
            times.append(dt)
        per = _median(times)
        out[f"decode_{name}"] = {
            "batch": len(texts),
            "frames": args.frames,
            "s_per_step": _r(per, 4),
            "frames_per_s": _r(len(texts) / per),
            "x_realtime": _r(len(texts) * FRAME_S / per),
            "runs_s_per_step": [_r(x, 4) for x in times],
        }
        if name == "b1":
            np.save(args.codes_out, codes[0])

    rng = np.random.RandomState(args.seed)
    for length in (64, 256):
        x = torch.from_numpy(rng.randn(1, length, model.config.talker_config.hidden_size).astype(np.float32))
        mask = torch.ones(1, length, dtype=torch.long)

        def run(x=x, mask=mask):
            with torch.no_grad():
                talker(inputs_embeds=x, attention_mask=mask, use_cache=True)

        run()
        times = []
        for _ in range(args.reps):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
        out[f"prefill_{length}"] = {"s": _r(_median(times)), "runs_s": [_r(x) for x in times]}

    # No streaming in the official package: its first audio is the whole utterance's audio.
    def utterance():
        t = time.perf_counter()
        wavs, sr = api.generate_custom_voice(
            TEXT_1,
            speaker=SPEAKER,
            language=LANGUAGE,
            max_new_tokens=args.frames + 1,
            do_sample=False,
            subtalker_dosample=False,
        )
        return time.perf_counter() - t

    times = [utterance() for _ in range(max(1, args.reps - 1))]
    out["first_audio"] = {
        "s": _r(_median(times)),
        "what": f"generate_custom_voice of {args.frames} frames (no streaming)",
        "runs_s": [_r(x) for x in times],
    }

    # End to end, batch 8: 8 texts in one generate_custom_voice (default sampling), EOS blocked
    # by the hook, so both sides make `frames` frames per text.
    out["e2e_b8"] = {}
    api.generate_custom_voice(TEXTS_8, speaker=[SPEAKER] * 8, language=[LANGUAGE] * 8, max_new_tokens=3)  # warm-up
    for frames in args.e2e_frames:
        times = []
        for _ in range(args.e2e_reps):
            t = time.perf_counter()
            wavs, _ = api.generate_custom_voice(
                TEXTS_8, speaker=[SPEAKER] * 8, language=[LANGUAGE] * 8, max_new_tokens=frames + 1
            )
            times.append(time.perf_counter() - t)
        assert all(len(w) == frames * 1920 for w in wavs), [len(w) for w in wavs]
        out["e2e_b8"][str(frames)] = {
            "s": _r(_median(times)),
            "runs_s": [_r(x) for x in times],
            "audio_s_per_s": _r(8 * frames * FRAME_S / _median(times)),
        }

    # torch matvec probe (for reference; the floor uses ours' probe)
    w = [torch.randn(PROBE_SHAPE[1], PROBE_SHAPE[2]) for _ in range(PROBE_SHAPE[0])]
    v = torch.randn(1, PROBE_SHAPE[2])
    bws = []
    with torch.no_grad():
        for _ in range(7):
            t = time.perf_counter()
            for m in w:
                torch.nn.functional.linear(v, m)
            bws.append(4 * PROBE_SHAPE[0] * PROBE_SHAPE[1] * PROBE_SHAPE[2] / (time.perf_counter() - t) / 1e9)
    out["probe_torch_gbps"] = _r(max(bws[1:]), 1)
    out["loadavg_end"] = os.getloadavg()
    out["peak_rss_mb"] = round(_rss_mb())
    return out


# ------------------------------------------------------------------------------------------------
# ours
# ------------------------------------------------------------------------------------------------


def _jax_setup(args):
    import jax

    jax.config.update("jax_compilation_cache_dir", str(args.cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if args.device == "cpu":
        jax.config.update("jax_platforms", "cpu")
    return jax


def _load_ours(args):
    from qwen3tts_jax import Qwen3TTSModel

    dtype = "bfloat16" if args.device == "gpu" else None
    return Qwen3TTSModel.from_pretrained(str(args.folder), dtype=dtype)


class CompileTimer:
    """Seconds JAX spends tracing, lowering and compiling, read from its own monitoring events
    (`jax.monitoring`; public). On a persistent-cache hit "backend compile" is the cache read and
    deserialisation, also reported alone as `cache_read_s`."""

    EVENTS = {
        "/jax/core/compile/jaxpr_trace_duration": "trace_s",
        "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
        "/jax/core/compile/backend_compile_duration": "backend_compile_s",
        "/jax/compilation_cache/cache_retrieval_time_sec": "cache_read_s",
    }

    def __init__(self):
        import jax.monitoring

        self.totals = {name: 0.0 for name in self.EVENTS.values()}
        self.programs = 0
        jax.monitoring.register_event_duration_secs_listener(self._on_event)

    def _on_event(self, event: str, duration: float, **_) -> None:
        name = self.EVENTS.get(event)
        if name is not None:
            self.totals[name] += duration
            self.programs += name == "backend_compile_s"

    def snapshot(self) -> dict:
        return dict(self.totals, programs=self.programs)

    def since(self, snap: dict) -> dict:
        now = self.snapshot()
        out = {k: _r(now[k] - snap[k], 2) for k in self.totals}
        out["programs"] = now["programs"] - snap["programs"]
        out["total_s"] = _r(sum(now[k] - snap[k] for k in ("trace_s", "lower_s", "backend_compile_s")), 2)
        return out


def _no_eos(frames: int) -> dict:
    """Generation kwargs for exactly `frames` frames: M tokens make M-1 frames, and EOS is blocked
    until the budget ends (`min_new_tokens`, our addition to the reference's kwargs)."""
    return {"max_new_tokens": frames + 1, "min_new_tokens": frames + 1}


GREEDY = {"do_sample": False, "subtalker_dosample": False}


def _stream_ttfa(model, frames) -> float:
    """Wall time from the `stream_custom_voice` call (prompt building included) to its first chunk."""
    t = time.perf_counter()
    it = model.stream_custom_voice(
        TEXT_1, SPEAKER, language=LANGUAGE, chunk_frames=4, max_new_tokens=frames + 1, **GREEDY
    )
    next(it)
    dt = time.perf_counter() - t
    it.close()
    return dt


def _drain(handle) -> int:
    """Frames in the chunks waiting in `handle.events` (consumed; `handle.result()` keeps them all)."""
    import queue

    from qwen3tts_jax.engine import Chunk

    n = 0
    while True:
        try:
            event = handle.events.get_nowait()
        except queue.Empty:
            return n
        if isinstance(event, Chunk):
            n += len(event.codes)


def _timed_frames(engine, requests, frames: int):
    """Seconds per frame step: submit `requests`, one step (admission + each row's first frame,
    untimed), then time the steps up to `frames` frames (32 per step: the engine's chunk
    capacity, one host read each). Requests with a longer budget are cancelled there."""
    handles = [engine.submit(r) for r in requests]
    engine.step()
    first = made = _drain(handles[0])
    t = time.perf_counter()
    while made < frames and not handles[0].done:
        engine.step()
        made += _drain(handles[0])
    dt = time.perf_counter() - t
    for h in handles:
        if not h.done:
            h.cancel()
    while not all(h.done for h in handles):
        engine.step()
    return dt / (made - first), [h.result() for h in handles]


def _text_of_prompt_length(model, n: int) -> tuple[str, int]:
    """A text whose custom-voice prompt (non-streaming: all text in the prompt) is `n` positions
    (or the closest below, when the tokenizer skips `n`)."""
    from qwen3tts_jax.prompt import prompt_tracks

    def length(text: str) -> int:
        return prompt_tracks(model.config, model.custom_voice_prompts(text, SPEAKER, LANGUAGE)[0]).length

    words = " ".join(TEXTS_8 * 8).split()
    lo = 1
    while lo < len(words) and length(" ".join(words[: lo + 1])) <= n:
        lo += 1
    text = " ".join(words[:lo])
    while length(text + " a") <= n:
        text += " a"
    return text, length(text)


def _frame_bytes(params, bytes_per_weight: int, groups: int) -> dict:
    import numpy as np

    def size(tree) -> int:
        import jax

        return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))

    talker = params["talker"]
    model = talker["model"]
    cp = talker["code_predictor"]
    talker_layers = size({k: v for k, v in model.items() if k.startswith("layers")}) + size(model["norm"])
    head = size(talker["codec_head"])
    cp_layers = size({k: v for k, v in cp["model"].items() if k.startswith("layers")}) + size(cp["model"]["norm"])
    cp_heads = size({k: v for k, v in cp.items() if k.startswith("lm_head")})
    weights = talker_layers + head + (groups - 1) * cp_layers + cp_heads
    return {
        "talker_layers": talker_layers,
        "codec_head": head,
        "predictor_layers_x15": (groups - 1) * cp_layers,
        "predictor_heads": cp_heads,
        "bytes": weights * bytes_per_weight,
    }


def _probe(jax, jnp, dtype):
    """A jitted matvec over 28 separate (out, in) weights: bytes/s of streaming weights."""
    import numpy as np

    n, o, i = PROBE_SHAPE
    ws = [jnp.asarray(np.random.RandomState(k).randn(o, i).astype(np.float32) * 0.02, dtype) for k in range(n)]
    x = jnp.ones((1, i), dtype)

    @jax.jit
    def f(ws, x):
        return sum(
            jnp.einsum("bi,oi->bo", x, w, precision=jax.lax.Precision.HIGHEST if dtype == jnp.float32 else None)[0, 0]
            for w in ws
        )

    f(ws, x).block_until_ready()
    nbytes = n * o * i * jnp.dtype(dtype).itemsize

    def once() -> float:
        best = 0.0
        for _ in range(3):
            t = time.perf_counter()
            f(ws, x).block_until_ready()
            best = max(best, nbytes / (time.perf_counter() - t))
        return best

    return once


def worker_ours(args) -> dict:
    t_import = time.perf_counter()
    jax = _jax_setup(args)
    import jax.numpy as jnp
    import numpy as np

    from qwen3tts_jax.engine import CHUNK_CAPACITY, EngineShape

    if args.device == "gpu" and jax.default_backend() != "gpu":
        raise SystemExit(f"--device gpu: JAX's default backend is {jax.default_backend()!r}, no GPU")
    timer = CompileTimer()
    out: dict = {
        "jax": jax.__version__,
        "jaxlib": __import__("jaxlib").__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "loadavg_start": os.getloadavg(),
    }
    t = time.perf_counter()
    model = _load_ours(args)
    out["import_s"] = _r(t - t_import, 2)
    out["load_s"] = _r(time.perf_counter() - t, 2)
    dtype = model.policy.dtype

    def requests(texts, frames, budget=None, **kw):
        prompts = model.custom_voice_prompts(texts, SPEAKER, LANGUAGE)
        extra = _no_eos(frames) if budget is None else {"max_new_tokens": budget, "min_new_tokens": budget}
        return model.requests(prompts, seed=0, **{**GREEDY, "audio": False, **extra, **kw})

    def engine_for(reqs):
        return model.engine(
            EngineShape.fit(reqs, model.config, model.placement), chunk_frames=CHUNK_CAPACITY, first_chunk_frames=1
        )

    # ---- cold: the first offline call (batch 1, codes only), persistent cache empty
    snap, t = timer.snapshot(), time.perf_counter()
    model.run(requests([TEXT_1], args.frames))
    out["compile_cold"] = dict(timer.since(snap), first_call_s=_r(time.perf_counter() - t, 2))
    snap = timer.snapshot()
    out["first_stream_call_ttfa_s"] = _r(_stream_ttfa(model, args.frames), 2)  # + the codec's streaming programs
    out["first_stream_call_compile"] = timer.since(snap)

    # ---- frame decode rate: greedy, EOS blocked, 32 frames per engine step
    probe = _probe(jax, jnp, jnp.dtype(dtype))
    fb = _frame_bytes(model.params, jnp.dtype(dtype).itemsize, model.config.talker.num_code_groups)
    out["frame_weight_bytes"] = fb
    runs = [("b1", [TEXT_1], None)]
    if not args.quick:
        runs.append(("b1_budget8192", [TEXT_1], 8192))
    runs.append(("b8", TEXTS_8, None))
    for name, texts, budget in runs:
        reqs = requests(texts, args.frames, budget)
        engine = engine_for(reqs)
        _timed_frames(engine, reqs, min(args.frames, 4))  # warm-up (compiles this shape)
        times, bws, fracs, results = [], [], [], None
        for _ in range(args.reps):
            bw = probe() if name == "b1" else None
            per, results = _timed_frames(engine, reqs, args.frames)
            times.append(per)
            if bw:
                bws.append(bw)
                fracs.append(fb["bytes"] / bw / per)
        per = _median(times)
        rec = {
            "batch": len(texts),
            "frames": args.frames,
            "cache_slots": engine.shape.cache_slots,
            "s_per_step": _r(per, 4),
            "frames_per_s": _r(len(texts) / per),
            "x_realtime": _r(len(texts) * FRAME_S / per),
            "runs_s_per_step": [_r(x, 4) for x in times],
        }
        if name == "b1":
            codes = results[0].codes
            rec["probe_gbps"] = _r(_median(bws) / 1e9, 1)
            rec["weight_gbps"] = _r(fb["bytes"] / per / 1e9, 1)
            rec["fraction_of_floor"] = _r(_median(fracs))
            rec["floor_s_per_frame"] = _r(fb["bytes"] / _median(bws), 4)
            if args.reference_codes and Path(args.reference_codes).is_file():
                ref = np.load(args.reference_codes)
                rec["codes_identical"] = bool(ref.shape == codes.shape and np.array_equal(ref, codes))
                if not rec["codes_identical"] and ref.shape == codes.shape:
                    rec["first_differing_frame"] = int(np.nonzero((ref != codes).any(1))[0][0])
        out[f"decode_{name}"] = rec
        del engine

    # ---- prefill: one request admitted into a 1-slot engine and ended at its first token
    # (max_new_tokens=1): prompt embedding, the talker stack over the prompt, codec head,
    # first-token sampling, the KV rows written into the slot, the slot released.
    for length in (64, 256):
        text, n = _text_of_prompt_length(model, length)
        # The API asks for max_new_tokens >= 2 (a WAV of >= 1 frame); the engine takes 1.
        reqs = [dataclasses.replace(r, max_new_tokens=1) for r in requests([text], 1, budget=2)]
        engine = engine_for(reqs)
        engine.run(reqs)
        times = []
        for _ in range(args.reps):
            t = time.perf_counter()
            res = engine.run(reqs)
            times.append(time.perf_counter() - t)
        assert res[0].finish_reason == "length" and res[0].frames == 0, res[0]
        out[f"prefill_{length}"] = {
            "s": _r(_median(times)),
            "runs_s": [_r(x) for x in times],
            "prompt_positions": n,
            "what": "Engine.run of one request with max_new_tokens=1 (admission)",
        }
        del engine

    # ---- end to end, batch 8: generate_custom_voice (default sampling), EOS blocked
    out["e2e_b8"] = {}
    for frames in args.e2e_frames:
        kw = dict(_no_eos(frames), seed=0)
        model.generate_custom_voice(TEXTS_8, SPEAKER, LANGUAGE, **kw)  # warm-up
        times = []
        for _ in range(args.e2e_reps):
            t = time.perf_counter()
            wavs, _ = model.generate_custom_voice(TEXTS_8, SPEAKER, LANGUAGE, **kw)
            times.append(time.perf_counter() - t)
        assert all(len(w) == frames * 1920 for w in wavs), [len(w) for w in wavs]
        out["e2e_b8"][str(frames)] = {
            "s": _r(_median(times)),
            "runs_s": [_r(x) for x in times],
            "audio_s_per_s": _r(8 * frames * FRAME_S / _median(times)),
        }

    # ---- streaming time to first audio (warm)
    times = [_stream_ttfa(model, args.frames) for _ in range(max(1, args.reps))]
    out["first_audio"] = {
        "s": _r(_median(times)),
        "what": "stream_custom_voice, first chunk 1 frame (then 4-frame chunks), warm",
        "runs_s": [_r(x) for x in times],
    }
    out["loadavg_end"] = os.getloadavg()
    out["peak_rss_mb"] = round(_rss_mb())
    return out


def worker_ours_cached(args) -> dict:
    """A second process: everything compiled comes from the persistent cache."""
    t0 = time.perf_counter()
    jax = _jax_setup(args)
    timer = CompileTimer()
    out: dict = {"loadavg_start": os.getloadavg()}
    t = time.perf_counter()
    model = _load_ours(args)
    out["import_s"] = _r(t - t0, 2)
    out["load_s"] = _r(time.perf_counter() - t, 2)
    snap = timer.snapshot()
    out["ttfa_s"] = _r(_stream_ttfa(model, args.frames), 2)
    out["ttfa_compile"] = timer.since(snap)  # backend compile = persistent-cache reads here
    out["process_to_first_audio_s"] = _r(time.perf_counter() - t0, 2)
    out["cache_files"] = sum(1 for _ in Path(args.cache_dir).rglob("*") if _.is_file())
    out["loadavg_end"] = os.getloadavg()
    out["peak_rss_mb"] = round(_rss_mb())
    del jax
    return out


# ------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------


def _run_worker(kind: str, args, extra: list[str], log) -> dict:
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as fh:
        path = fh.name
    cmd = (
        [
            sys.executable,
            __file__,
            "--worker",
            kind,
            "--worker-out",
            path,
            "--folder",
            str(args.folder),
            "--frames",
            str(args.frames),
            "--reps",
            str(args.reps),
            "--seed",
            str(args.seed),
            "--device",
            args.device,
            "--cache-dir",
            str(args.cache_dir),
            "--e2e-reps",
            str(args.e2e_reps),
        ]
        + (["--quick"] if args.quick else [])
        + extra
    )
    log(f"# running {kind} worker ...")
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-6000:])
        raise SystemExit(f"{kind} worker failed (exit {proc.returncode})")
    result = json.loads(Path(path).read_text())
    os.unlink(path)
    result["wall_s"] = round(time.perf_counter() - t, 1)
    log(f"#   {kind} done in {result['wall_s']} s")
    return result


def _codec(args, log) -> dict:
    """benchmarks/codec_decode.py in its own process: offline decode at batch 1 against the
    official `chunked_decode` (same seeded weights), and the 1-frame streaming step; its rows
    renamed to this table's keys (`T50`, `T300`, `stream_k1`)."""
    frames = ["50"] if args.quick else ["50", "300"]
    log("# running benchmarks/codec_decode.py ...")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "codec_decode.py"),
            "--offline",
            "--reference",
            "--batches",
            "1",
            "--frames",
            *frames,
            "--pieces",
            "--shapes",
            "1x1",
            "--reps",
            str(args.reps),
            "--seed",
            str(args.seed),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        return {"error": f"codec_decode.py exit {proc.returncode}"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for row in out.get("offline", []):
        out[f"T{row['frames']}"] = {
            "reference_s": row["official_s"],
            "ours_s": row["new_s"],
            "max_abs_err": row["max_abs_new_vs_official"],
        }
    for row in out.get("pieces", []):
        if (row["batch"], row["frames"]) == (1, 1):
            out["stream_k1"] = {"step_ms": row["step_ms"]}
    return out


def _arrivals(args, log) -> dict:
    """benchmarks/engine.py in its own process: requests arriving while others run, vs alone."""
    log("# running benchmarks/engine.py (staggered arrivals) ...")
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "engine.py"),
        "--model",
        str(args.folder),
        "--frames",
        str(args.frames),
        "--reps",
        str(max(1, args.reps - 1)),
        "--seed",
        str(args.seed),
        "--cache-dir",
        str(args.cache_dir),
    ]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        return {"error": f"engine.py exit {proc.returncode}"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = round(time.perf_counter() - t, 1)
    log(f"#   engine.py done in {out['wall_s']} s")
    return out


def _row(name, unit, official, ours, better, target=None, met=None, note=""):
    ratio = None if official in (None, 0) or ours is None else ours / official
    speed = None if ratio in (None, 0) else (ratio if better == "higher" else 1 / ratio)
    return {
        "figure": name,
        "unit": unit,
        "official": official,
        "ours": ours,
        "ours_over_official": _r(ratio),
        "speedup": _r(speed, 2),
        "target": target,
        "met": met,
        "note": note,
    }


def build_table(res: dict) -> list[dict]:
    o, j, j2, c = res["official"], res["ours"], res["ours_second_process"], res.get("codec", {})
    rows = []
    for b in ("b1", "b8"):
        ro, rj = o[f"decode_{b}"], j[f"decode_{b}"]
        target = "≥ 1.0× official" if b == "b1" else "≥ 2× official"
        rows.append(
            _row(
                f"frame rate, batch {ro['batch']} ({ro['frames']} frames)",
                "frames/s",
                ro["frames_per_s"],
                rj["frames_per_s"],
                "higher",
                target,
                rj["frames_per_s"] / ro["frames_per_s"] >= (1.0 if b == "b1" else 2.0),
                f"×RT official {ro['x_realtime']}, ours {rj['x_realtime']}",
            )
        )
    b1, b8 = j["decode_b1"], j["decode_b8"]
    scale = b8["frames_per_s"] / b1["frames_per_s"]
    rows.append(_row("batch-8 aggregate / our batch 1", "×", None, _r(scale, 2), "higher", "≥ 4×", scale >= 4))
    rows.append(
        _row(
            "frame step: fraction of the bandwidth floor (batch 1)",
            "",
            None,
            b1["fraction_of_floor"],
            "higher",
            "≥ 0.85",
            b1["fraction_of_floor"] >= 0.85,
            f"{b1['weight_gbps']} GB/s of weights vs probe {b1['probe_gbps']} GB/s (torch probe "
            f"{o.get('probe_torch_gbps')} GB/s)",
        )
    )
    if "decode_b1_budget8192" in j:
        lb = j["decode_b1_budget8192"]
        rows.append(
            _row(
                "frame rate, batch 1, budget 8192 frames (API default)",
                "frames/s",
                None,
                lb["frames_per_s"],
                "higher",
                note=f"{_r(lb['frames_per_s'] / b1['frames_per_s'], 2)}× the short-budget rate",
            )
        )
    if "codes_identical" in b1:
        rows.append(
            _row(
                "greedy codes identical to official (batch 1)",
                "",
                None,
                b1["codes_identical"],
                "higher",
                note="" if b1["codes_identical"] else f"first differing frame {b1.get('first_differing_frame')}",
            )
        )
    for n in (64, 256):
        po, pj = o[f"prefill_{n}"]["s"], j[f"prefill_{n}"]["s"]
        rows.append(
            _row(
                f"prefill, {n}-token prompt",
                "s",
                po,
                pj,
                "lower",
                "≥ 1.5× official",
                po / pj >= 1.5,
                f"ours: admission of a {j[f'prefill_{n}']['prompt_positions']}-position prompt",
            )
        )
    for frames in E2E_FRAMES:
        eo, ej = o.get("e2e_b8", {}).get(str(frames)), j.get("e2e_b8", {}).get(str(frames))
        if eo and ej:
            rows.append(
                _row(
                    f"end to end, batch 8, {frames} frames (generate_custom_voice)",
                    "s",
                    eo["s"],
                    ej["s"],
                    "lower",
                    "≥ 2× official",
                    eo["s"] / ej["s"] >= 2,
                    f"audio s per wall s: official {eo['audio_s_per_s']}, ours {ej['audio_s_per_s']}",
                )
            )
    a = res.get("arrivals", {})
    if "staggered" in a:
        s, alone = a["staggered"], a["alone"]
        rows.append(
            _row(
                f"{s['requests']} requests {s['gap_s']} s apart: audio s per wall s / one alone",
                "×",
                None,
                s["throughput_over_alone"],
                "higher",
                "≥ 4×",
                s["throughput_over_alone"] >= 4,
                f"{s['audio_s_per_s']} audio s/s vs alone {alone['audio_s_per_s']} ({s['frames']} frames each)",
            )
        )
        rows.append(
            _row(
                "time to first audio, joining a running batch / alone",
                "×",
                None,
                s["ttfa_join_over_alone"],
                "lower",
                "≤ 2×",
                s["ttfa_join_over_alone"] <= 2,
                f"joining: median {s['ttfa_join_median_s']} s, max {s['ttfa_join_max_s']} s; alone "
                f"{alone['ttfa_s']} s (1 slot), {a['alone_in_batch_engine']['ttfa_s']} s (idle {s['slots']}-slot "
                "engine)",
            )
        )
    for n in (50, 300):
        if f"T{n}" in c:
            co = c[f"T{n}"]
            rows.append(
                _row(
                    f"codec decode, {n} frames",
                    "s",
                    co["reference_s"],
                    co["ours_s"],
                    "lower",
                    "≥ 1.0× official",
                    co["reference_s"] / co["ours_s"] >= 1.0,
                    f"max |diff| {co['max_abs_err']:.1e}",
                )
            )
    if "stream_k1" in c:
        rows.append(_row("codec streaming step, 1 frame (80 ms audio)", "ms", None, c["stream_k1"]["step_ms"], "lower"))
    fo, fj = o["first_audio"]["s"], j["first_audio"]["s"]
    rows.append(
        _row(
            "time to first audio (ours: stream, warm; official: whole utterance)",
            "s",
            fo,
            fj,
            "lower",
            note=f"official {o['first_audio']['what']}",
        )
    )
    cc = j["compile_cold"]
    rows.append(
        _row(
            "cold jit compile, first offline call (batch 1: admission + frame loop)",
            "s",
            None,
            cc["total_s"],
            "lower",
            "≤ 30 s",
            cc["total_s"] <= 30,
            f"{cc['programs']} programs: trace {cc['trace_s']} s, lower {cc['lower_s']} s, XLA "
            f"{cc['backend_compile_s']} s;"
            f" the call {cc['first_call_s']} s",
        )
    )
    rows.append(
        _row("first streaming call, first process (compiles)", "s", None, j["first_stream_call_ttfa_s"], "lower")
    )
    rows.append(
        _row(
            "time to first audio, second process (persistent cache)",
            "s",
            None,
            j2["ttfa_s"],
            "lower",
            "≤ 5 s",
            j2["ttfa_s"] <= 5,
            f"import {j2['import_s']} s, load {j2['load_s']} s, process start → audio "
            f"{j2['process_to_first_audio_s']} s; in the call {j2['ttfa_compile']['programs']} programs "
            f"from the cache ({j2['ttfa_compile']['cache_read_s']} s read), trace+lower "
            f"{_r(j2['ttfa_compile']['trace_s'] + j2['ttfa_compile']['lower_s'], 2)} s",
        )
    )
    rows.append(_row("model load (same folder)", "s", o["load_s"], j["load_s"], "lower"))
    rows.append(
        _row(
            "peak RSS, benchmark process",
            "MB",
            o["peak_rss_mb"],
            j["peak_rss_mb"],
            "lower",
            note=f"ours second process {j2['peak_rss_mb']} MB",
        )
    )
    return rows


def _fmt(x):
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"
    return str(x)


def markdown(res: dict, rows: list[dict]) -> str:
    m, j = res["machine"], res["ours"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; JAX {j['jax']} (jaxlib {j['jaxlib']}, "
        f"backend {j['backend']}, devices {', '.join(j['devices'])}), torch {res['official']['torch']} "
        f"({res['official']['torch_threads']} threads, fp32, eager attention). Mode: {res['mode']}, "
        f"{res['frames']} frames, median of {res['reps']} runs. Load average (1 min) official "
        f"{res['official']['loadavg_start'][0]:.1f}→{res['official']['loadavg_end'][0]:.1f}, ours "
        f"{j['loadavg_start'][0]:.1f}→{j['loadavg_end'][0]:.1f}. {res['date']}, commit {res.get('commit')}.",
        "",
        "| figure | unit | official | ours | ours/official | speed-up | target | met | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                _fmt(r[k])
                for k in (
                    "figure",
                    "unit",
                    "official",
                    "ours",
                    "ours_over_official",
                    "speedup",
                    "target",
                    "met",
                    "note",
                )
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="few frames and reps, no 300-frame codec run, no 8192 budget")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="gpu: ours in bf16 on a GPU (untested)")
    ap.add_argument("--frames", type=int, default=None, help="frames per decode run (default 64, quick 12)")
    ap.add_argument("--reps", type=int, default=None, help="timed runs per figure (default 3, quick 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "qwen3tts-bench")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--official-json", type=Path, default=None, help="reuse an earlier run's official figures (development)"
    )
    ap.add_argument("--e2e-reps", type=int, default=None, help="timed runs per end-to-end figure (default 2, quick 1)")
    ap.add_argument("--no-codec", action="store_true")
    ap.add_argument("--no-arrivals", action="store_true", help="skip benchmarks/engine.py (staggered arrivals)")
    # worker-only
    ap.add_argument("--worker", choices=("setup", "official", "ours", "ours_cached"), help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--codes-out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--reference-codes", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.frames = args.frames or (12 if args.quick else 64)
    args.reps = args.reps or (2 if args.quick else 3)
    args.e2e_reps = args.e2e_reps or (1 if args.quick else 2)
    args.e2e_frames = E2E_FRAMES[:1] if args.quick else E2E_FRAMES
    sys.path.insert(0, str(ROOT))

    if args.worker == "setup":
        print(setup_folder(args.workdir, args.seed))
        return
    if args.worker:
        fn = {"official": worker_official, "ours": worker_ours, "ours_cached": worker_ours_cached}[args.worker]
        args.worker_out.write_text(json.dumps(fn(args)))
        return

    log = lambda s: print(s, file=sys.stderr, flush=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    log("# setup: full-size random-weight model folder (cached) ...")
    # Its own process (torch's memory is given back), through this file: an installed package
    # named `benchmarks` shadows this folder for `import benchmarks.bench`.
    setup = subprocess.run(
        [sys.executable, __file__, "--worker", "setup", "--workdir", str(args.workdir), "--seed", str(args.seed)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if setup.returncode != 0:
        sys.stderr.write(setup.stderr[-4000:])
        raise SystemExit("setup failed")
    args.folder = Path(setup.stdout.strip().splitlines()[-1])
    args.cache_dir = args.workdir / "jax-cache"
    codes = args.workdir / "official-codes-b1.npy"
    res: dict = {
        "benchmark": "qwen3tts-jax vs qwen-tts 0.1.1",
        "mode": "quick" if args.quick else "full",
        "device": args.device,
        "frames": args.frames,
        "reps": args.reps,
        "seed": args.seed,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "commit": _git(),
        "machine": _machine(),
        "setup_s": round(time.perf_counter() - t, 1),
    }
    if args.official_json:
        res["official"] = json.loads(args.official_json.read_text())["official"]
    else:
        res["official"] = _run_worker("official", args, ["--codes-out", str(codes)], log)
    if args.cache_dir.exists():
        shutil.rmtree(args.cache_dir)
    res["ours"] = _run_worker("ours", args, ["--reference-codes", str(codes)], log)
    res["ours_second_process"] = _run_worker("ours_cached", args, [], log)
    if not args.no_arrivals:
        res["arrivals"] = _arrivals(args, log)
    if not args.no_codec:
        res["codec"] = _codec(args, log)
    rows = build_table(res)
    res["table"] = rows
    out = (
        args.out
        or ROOT
        / "benchmarks"
        / "results"
        / f"bench{'-quick' if args.quick else ''}{'-gpu' if args.device == 'gpu' else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    md = markdown(res, rows)
    out.with_suffix(".md").write_text(md)
    print(md)
    log(f"# wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
