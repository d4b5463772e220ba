"""Continuous batching on the engine: requests arriving while others run, against one request alone.

    .venv/bin/python benchmarks/engine.py --model DIR|random:tiny [--frames 64] [--requests 8] [--gap 0.5]

What runs, in one process, with the serving setup (`EngineLoop` stepping on its own thread, a
`SamplingProgram` with sampling on so greedy and sampled requests share one compiled program,
first chunk after 1 frame, then 4-frame chunks, audio decoded per slot as it streams):

1. alone: one request in a 1-slot engine (what one user streaming by themselves gets), `--reps`
   times; then the same request in the idle `--requests`-slot engine;
2. staggered: `--requests` requests submitted `--gap` s apart from the main thread into the
   `--requests`-slot engine (requests 2.. join a batch that is running), `--reps` times.

Every request is the custom-voice prompt of one of bench.py's 8 texts with the model's default
sampling (seeded) and EOS blocked (`min_new_tokens`) so each makes exactly `--frames` frames.

Before timing, the admission shapes the staggered run is likely to meet are compiled on the bare
engine: newcomers that arrive during one engine step are admitted together, their prompts packed
(one program per group shape), so every window of up to 3 consecutive arrivals, and the first k
requests for every row bucket k (each bucket's advance); every codec push shape is
compiled ahead of time (`CodecSlots.compile`, as the server's warm-up does). The compile seconds JAX
reports during each timed run are recorded (`compile_during_run`; 0 when the warm-up covered it).

Figures: audio seconds per wall second (the sum of the requests' audio over first submit →
last result) and each request's time to first audio (`Result.time_to_first_audio`: submit →
first chunk). `throughput_over_alone` = staggered audio s/s ÷ the 1-slot alone audio s/s
(target ≥ 4×); `ttfa_join_over_alone` = median time to first audio of the requests that
joined a running batch ÷ alone's (target ≤ 2×). The official package has neither streaming nor
continuous batching, so there is no official side here (bench.py's end-to-end batch-8 figure is
the static-batch comparison). Prints one JSON line; bench.py runs it and tables it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import LANGUAGE, SPEAKER, TEXTS_8, CompileTimer, _no_eos, _r  # noqa: E402  (this folder is sys.path[0])


def _alone(loop, request, reps: int, sr: int) -> dict:
    runs = []
    for _ in range(reps):
        res = loop.submit(request).result()
        assert res.finish_reason == "length", res.finish_reason
        runs.append({"ttfa_s": res.time_to_first_audio, "total_s": res.total_time, "audio_s": len(res.audio) / sr})
    ttfa = statistics.median(r["ttfa_s"] for r in runs)
    total = statistics.median(r["total_s"] for r in runs)
    audio = runs[0]["audio_s"]
    return {
        "ttfa_s": _r(ttfa),
        "total_s": _r(total, 2),
        "audio_s": _r(audio, 2),
        "audio_s_per_s": _r(audio / total),
        "runs_ttfa_s": [_r(r["ttfa_s"]) for r in runs],
        "runs_total_s": [_r(r["total_s"], 2) for r in runs],
    }


def _staggered(loop, requests, gap: float, sr: int, timer: CompileTimer) -> dict:
    snap = timer.snapshot()
    handles, active_at_submit = [], []
    t0 = time.perf_counter()
    for i, r in enumerate(requests):
        time.sleep(max(0.0, t0 + i * gap - time.perf_counter()))
        active_at_submit.append(loop.engine.active)  # slots busy as it arrives (read without the lock: informative)
        handles.append(loop.submit(r))
    results = [h.result() for h in handles]
    end = max(h.submitted + r.total_time for h, r in zip(handles, results))
    assert all(r.finish_reason == "length" for r in results), [r.finish_reason for r in results]
    wall = end - t0
    audio = sum(len(r.audio) for r in results) / sr
    ttfa = [r.time_to_first_audio for r in results]
    return {
        "wall_s": _r(wall, 2),
        "audio_s": _r(audio, 2),
        "audio_s_per_s": _r(audio / wall),
        "ttfa_s": [_r(x) for x in ttfa],
        "total_s": [_r(r.total_time, 2) for r in results],
        "active_at_submit": active_at_submit,
        "compile_during_run": timer.since(snap),
    }


def _first_chunks(handle, n: int) -> None:
    """Read `n` chunks of a request, then cancel it and wait for its end."""
    for _, _chunk in zip(range(n), handle):
        pass
    handle.cancel()
    handle.result()


def _warm_admissions(engine, requests, largest: int = 3) -> int:
    """Compile every admission and advance the staggered run is likely to meet: requests arrive
    in order and those that arrive during one engine step are admitted together, packed into one
    program per group shape, so every window of up to `largest` consecutive requests is admitted
    once (then cancelled); and the first k requests together for every row bucket k, so each
    bucket's advance is compiled too. A larger group in the timed run compiles there
    (`compile_during_run`). Returns the number of windows."""
    windows = [requests[i : i + k] for k in range(1, largest + 1) for i in range(len(requests) - k + 1)]
    windows += [requests[:k] for k in engine.row_buckets if largest < k <= len(requests)]
    for window in windows:
        handles = [engine.submit(r) for r in window]
        engine.step()
        for h in handles:
            h.cancel()
        while not all(h.done for h in handles):
            engine.step()
    return len(windows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="random:tiny", help="a model folder, hub id or random:<name>")
    ap.add_argument("--frames", type=int, default=64, help="frames per request (EOS blocked)")
    ap.add_argument("--requests", type=int, default=8, help="staggered requests (= slots of the batch engine)")
    ap.add_argument("--gap", type=float, default=0.5, help="seconds between arrivals")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", type=Path, default=None, help="JAX persistent compilation cache (optional)")
    ap.add_argument("--no-live-rows", action="store_true", help="every advance steps all slots (live_rows=False)")
    ap.add_argument(
        "--advance-frames",
        type=int,
        default=None,
        help="at most this many frames per advance (Engine advance_frames; default 1 under an EngineLoop)",
    )
    ap.add_argument(
        "--codec-push-rows",
        type=int,
        default=None,
        help="rows per codec push of running requests' chunks (Policy.codec_push_rows; 0: all; default: the backend's)",
    )
    ap.add_argument(
        "--snake-sine",
        choices=("polynomial", "xla"),
        default=None,
        help="the codec's SnakeBeta sin² form (Policy.snake_sine; default: the backend's)",
    )
    args = ap.parse_args()
    for name in ("frames", "requests", "reps"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.gap < 0:
        raise SystemExit(f"--gap must be >= 0, got {args.gap}")
    if args.codec_push_rows is not None and args.codec_push_rows < 0:
        raise SystemExit(f"--codec-push-rows must be >= 0, got {args.codec_push_rows}")

    import jax

    jax.config.update("jax_platforms", "cpu")
    if args.cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(args.cache_dir))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    import dataclasses

    from qwen3tts_jax import Qwen3TTSModel
    from qwen3tts_jax.config import Policy
    from qwen3tts_jax.engine import Engine, EngineLoop, EngineShape
    from qwen3tts_jax.sampling import SamplingProgram

    log = lambda s: print(f"# {time.strftime('%H:%M:%S')} {s}", file=sys.stderr, flush=True)
    timer = CompileTimer()
    out: dict = {
        "benchmark": "engine arrivals",
        "model": args.model,
        "frames": args.frames,
        "gap_s": args.gap,
        "requests": args.requests,
        "reps": args.reps,
        "live_rows": not args.no_live_rows,
        "advance_frames": args.advance_frames,
        "loadavg_start": os.getloadavg(),
        "jax": jax.__version__,
    }
    policy = Policy.for_backend()
    if args.codec_push_rows is not None:
        policy = dataclasses.replace(policy, codec_push_rows=args.codec_push_rows)
    out["codec_push_rows"] = policy.codec_push_rows
    if args.snake_sine is not None:
        policy = dataclasses.replace(policy, snake_sine=args.snake_sine)
    out["snake_sine"] = policy.snake_sine
    t = time.perf_counter()
    model = Qwen3TTSModel.from_pretrained(args.model, policy=policy)
    out["load_s"] = _r(time.perf_counter() - t, 2)
    sr = model.speech_tokenizer.get_output_sample_rate()
    texts = [TEXTS_8[i % len(TEXTS_8)] for i in range(args.requests)]
    reqs = model.requests(model.custom_voice_prompts(texts, SPEAKER, LANGUAGE), seed=args.seed, **_no_eos(args.frames))
    p = reqs[0].sampling.program()
    program = SamplingProgram(p.eos_token_id, p.suppress, True, True)

    def engine(slots: int) -> Engine:
        # Both engines fit all the requests (same KV slots and text track): they differ in slots only.
        shape = EngineShape.fit(reqs, model.config, model.placement, slots=slots)
        return Engine(
            model,
            shape,
            program=program,
            chunk_frames=4,
            first_chunk_frames=1,
            live_rows=not args.no_live_rows,
            advance_frames=args.advance_frames,
        )

    one, batch = engine(1), engine(args.requests)
    out["slots"], out["cache_slots"] = batch.shape.slots, batch.shape.cache_slots
    snap = timer.snapshot()
    log("warming the admissions ...")
    out["warm_admission_shapes"] = _warm_admissions(one, reqs[:1]) + _warm_admissions(batch, reqs)
    out["warm_codec_shapes"] = one.codec.compile() + batch.codec.compile()  # every push shape, ahead of time
    loop_one, loop_batch = EngineLoop(one).start(), EngineLoop(batch).start()
    out["advance_frames_used"] = batch.advance_frames  # the EngineLoop default when --advance-frames is not given
    try:
        for loop in (loop_one, loop_batch):  # warm-up: the codec's 4-frame push (the admissions made the rest)
            _first_chunks(loop.submit(reqs[0]), 3)
        out["warm_up_compile"] = timer.since(snap)
        log(f"warm: {out['warm_up_compile']}; alone ...")
        out["alone"] = _alone(loop_one, reqs[0], args.reps, sr)
        out["alone_in_batch_engine"] = _alone(loop_batch, reqs[0], 1, sr)
        log(f"alone: {out['alone']}; staggered ...")
        runs = [_staggered(loop_batch, reqs, args.gap, sr, timer) for _ in range(args.reps)]
    finally:
        loop_one.stop()
        loop_batch.stop()
    alone = out["alone"]
    join = [statistics.median(r["ttfa_s"][1:]) for r in runs] if args.requests > 1 else [None]
    agg = statistics.median(r["audio_s_per_s"] for r in runs)
    out["staggered"] = {
        "requests": args.requests,
        "gap_s": args.gap,
        "frames": args.frames,
        "slots": batch.shape.slots,
        "audio_s_per_s": _r(agg),
        "throughput_over_alone": _r(agg / alone["audio_s_per_s"], 2),
        "ttfa_first_s": _r(statistics.median(r["ttfa_s"][0] for r in runs)),
        "ttfa_join_median_s": _r(statistics.median(join)) if join[0] is not None else None,
        "ttfa_join_max_s": _r(max(max(r["ttfa_s"][1:]) for r in runs)) if join[0] is not None else None,
        "ttfa_join_over_alone": _r(statistics.median(join) / alone["ttfa_s"], 2) if join[0] is not None else None,
        "runs": runs,
    }
    out["engine_steps"] = {"one": loop_one.steps, "batch": loop_batch.steps}
    # advances per row bucket (warm-ups included)
    out["rows_stepped"] = {"one": dict(one.rows_stepped), "batch": dict(batch.rows_stepped)}
    out["loadavg_end"] = os.getloadavg()
    import resource

    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
