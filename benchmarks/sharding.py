"""Aggregate synthesis throughput vs device count on a (data, model) mesh of virtual CPU devices.

One process with `--devices` virtual CPU devices (default 8); each configuration is a mesh over
the first data×model of them ("none" = the plain one-device path). Data-parallel rows grow the
batch with the data axis (`--rows-per-replica` each), so the figure is aggregate throughput;
tensor-parallel rows keep the batch and split the weights. `none:8` is the one-device path at
batch 8 (compare it with data=4: same batch, split or not). Per configuration: load + first calls
(compile included), then the median of `--reps` timed `model.run` calls of greedy generation
(fixed `--max-new-tokens`; frames counted; `audio=False`: codes only) and of the same requests
with audio (each slot's streaming codec decode, as `generate_*` runs them): `audio_s_per_s` is
audio seconds per second of the latter. Public API only. Prints one JSON line per
configuration and a table.

    .venv/bin/python benchmarks/sharding.py [--model random:tiny] [--configs "none;data=1;data=2;..."]

Reading the figures on this project's machines: XLA:CPU virtual devices share the host's cores
(2 physical cores here, no accelerator), and each device's computations already use XLA's
intra-op thread pool. So the best a mesh can do on such a host is use both cores where one
device's program would leave one idle — at most ≈2× — while every split adds collectives
(in-process copies on CPU) and the time-sliced devices wait on each other at each of them. The
numbers measure the partitioned programs' overhead, not the scaling a real multi-chip mesh
gives; run the same script on a GPU/TPU host (drop `--devices`) for that.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_CONFIGS = "none;none:8;data=1;data=2;data=4;data=8;model=2;model=4;data=4,model=2;data=2,model=4"
TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "A second sentence for the batch.",
    "Sharded inference on a CPU mesh.",
    "One more line of text to speak.",
)


def _timed(fn, reps: int) -> tuple[float, float, object]:
    t = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return first, statistics.median(times), out


def run_config(spec: str, args) -> dict:
    from qwen3tts_jax import Qwen3TTSModel

    spec, _, batch = spec.partition(":")
    mesh = None if spec == "none" else spec
    t = time.perf_counter()
    model = Qwen3TTSModel.from_pretrained(args.model, mesh=mesh, scan_layers=args.scan_layers or None)
    load_s = time.perf_counter() - t
    data = 1 if model.mesh is None else int(dict(model.mesh.shape)["data"])
    devices = 1 if model.mesh is None else int(model.mesh.size)
    rows = int(batch) if batch else args.rows_per_replica * data
    texts = [TEXTS[i % len(TEXTS)] for i in range(rows)]
    speaker = (model.get_supported_speakers() or [None])[0]
    reqs = model.custom_voice_prompts(texts, speaker, None, None, True)
    kw = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=args.max_new_tokens, seed=0)
    # Codes only, then codes + audio (each slot's streaming codec) through the same engine path.
    gen_first, gen_s, results = _timed(lambda: model.run(model.requests(reqs, audio=False, **kw)), args.reps)
    syn_first, syn_s, wavs = _timed(lambda: [r.audio for r in model.run(model.requests(reqs, **kw))], args.reps)
    frames = int(sum(r.frames for r in results))
    audio_s = float(sum(len(w) for w in wavs)) / 24000
    return {
        "config": spec + (f":{batch}" if batch else ""),
        "devices": devices,
        "batch": rows,
        "frames": frames,
        "load_s": round(load_s, 2),
        "first_call_s": round(gen_first + syn_first, 2),
        "generate_s": round(gen_s, 4),
        "synthesize_s": round(syn_s, 4),
        "frames_per_s": round(frames / gen_s, 2),
        "audio_s_per_s": round(audio_s / syn_s, 3),
        "ms_per_frame_step": round(1000 * gen_s / max(1, frames // rows), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="random:tiny")
    ap.add_argument("--devices", type=int, default=8, help="virtual CPU devices (set before JAX starts)")
    ap.add_argument(
        "--configs",
        default=DEFAULT_CONFIGS,
        help="';'-separated mesh specs, 'none' = no mesh; ':B' sets the batch (default rows-per-replica x data)",
    )
    ap.add_argument("--rows-per-replica", type=int, default=2, help="batch rows per data-axis replica")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--scan-layers", action="store_true", help="scanned layer stacks (the GPU/TPU policy)")
    args = ap.parse_args()

    import jax

    if args.devices:  # before any backend query; only the CPU backend reads it
        jax.config.update("jax_num_cpu_devices", args.devices)
    header = {
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "model": args.model,
        "jax": jax.__version__,
    }
    print(json.dumps({"setup": header}), flush=True)
    rows = []
    for spec in args.configs.split(";"):
        r = run_config(spec.strip(), args)
        rows.append(r)
        print(json.dumps(r), flush=True)
    base = next((r for r in rows if r["config"] == "none"), rows[0])
    print(
        f"\n{'config':<18}{'devices':>8}{'batch':>6}{'frames/s':>10}{'x':>6}"
        f"{'audio s/s':>11}{'ms/step':>9}{'first call s':>14}"
    )
    for r in rows:
        print(
            f"{r['config']:<18}{r['devices']:>8}{r['batch']:>6}{r['frames_per_s']:>10.1f}"
            f"{r['frames_per_s'] / base['frames_per_s']:>6.2f}{r['audio_s_per_s']:>11.3f}{r['ms_per_frame_step']:>9.1f}"
            f"{r['first_call_s']:>14.1f}"
        )


if __name__ == "__main__":
    main()
