"""What sampling costs a frame: the warpers alone, and the codes-only frame loop sampled vs greedy.

    .venv/bin/python benchmarks/sampling.py [--model random:0.6b-customvoice] [--frames 32]

1. The warpers (`sampling.warp`: temperature → top-k → top-p) and the whole pick
   (`sampling.pick`: warpers + a Gumbel-max draw per row), jitted, at the talker's (3072) and
   the sub-talker's (2048) vocabularies, batch 1 and 8, with the models' default values
   (temperature 0.9, top-k 50, top-p 1.0). A frame runs one talker pick and 15 sub-talker picks.
2. The engine's frame loop, codes only (`audio=False`), on bench.py's 8 custom-voice prompts
   (batch 1: the first), EOS blocked: seconds a frame = (run of `--frames` + 2 tokens − run of
   2 tokens) / `--frames`, best of 3, sampled with the model's defaults and greedy.

Uses public functions only, so the same command runs on any commit (RESULTS.md compares two).
Prints one JSON line. Timing does not belong in tests.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _best_ms(f, *args, n: int = 100, reps: int = 5) -> float:
    f(*args).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(n):
            r = f(*args)
        r.block_until_ready()
        best = min(best, (time.perf_counter() - t) / n)
    return round(best * 1e3, 4)


def warpers() -> dict:
    import jax
    import jax.numpy as jnp

    from qwen3tts_jax import sampling as S

    warp, pick = jax.jit(S.warp), jax.jit(S.pick)
    out = {}
    for b in (1, 8):
        for v in (3072, 2048):
            x = jax.random.normal(jax.random.PRNGKey(0), (b, v))
            values = jax.tree.map(jnp.asarray, S.SamplerConfig(True, 0.9, 50, 1.0).values(b))
            keys = S.row_keys(jax.random.PRNGKey(1), b)
            out[f"b{b}_v{v}"] = {"warp_ms": _best_ms(warp, x, values), "pick_ms": _best_ms(pick, x, keys, values)}
    return out


def frame_loop(model_name: str, frames: int) -> dict:
    sys.path.insert(0, str(ROOT))
    # bench.py by path: an installed package named `benchmarks` shadows this folder.
    spec = importlib.util.spec_from_file_location("bench", ROOT / "benchmarks" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from qwen3tts_jax import Qwen3TTSModel

    model = Qwen3TTSModel.from_pretrained(model_name)
    prompts = model.custom_voice_prompts(bench.TEXTS_8, bench.SPEAKER, bench.LANGUAGE)
    out = {}
    for b in (1, 8):
        for mode, extra in (("sampled", {}), ("greedy", bench.GREEDY)):

            def run(n: int, b=b, extra=extra):
                kw = dict(bench._no_eos(n), seed=0, **extra)
                return model.run(model.requests(prompts[:b], audio=False, **kw))

            run(1), run(frames + 1)  # compiles
            per_frame = []
            for _ in range(3):
                t = time.perf_counter()
                run(1)
                short = time.perf_counter() - t
                t = time.perf_counter()
                run(frames + 1)
                per_frame.append((time.perf_counter() - t - short) / frames)
            out[f"b{b}_{mode}_s_per_frame"] = round(min(per_frame), 4)
            out[f"b{b}_{mode}_runs"] = [round(x, 4) for x in per_frame]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="random:0.6b-customvoice")
    ap.add_argument("--frames", type=int, default=32)
    args = ap.parse_args()
    if args.frames < 1:
        ap.error(f"--frames must be >= 1, got {args.frames}")
    import subprocess

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "qwen3tts_jax"], capture_output=True)
    out = {
        "commit": commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else ""),
        "loadavg_start": os.getloadavg(),
        "warpers": warpers(),
        "frame_loop": frame_loop(args.model, args.frames),
        "loadavg_end": os.getloadavg(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
