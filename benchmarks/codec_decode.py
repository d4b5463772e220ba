"""Codec decode speed at the released size (random weights): the streaming step's cost per piece
size, offline decode new (`codec.decoder.decode`: pieces of the streaming step through
`CodecSlots`) vs old (the chunk padded to a power-of-two bucket, one forward: the code before
this benchmark's commit, reproduced here), and optionally the official PyTorch decoder.

Every figure is the median of `--reps` runs after one warm-up (the first call, compiles
included, is reported separately); the shapes, or old and new, alternate rep by rep so that the
machine's load moves them alike. Prints one JSON line, and a markdown table of each section on
stderr.

    .venv/bin/python benchmarks/codec_decode.py --pieces [--shapes 1x8 8x1 ...]   # step cost per shape
    .venv/bin/python benchmarks/codec_decode.py --offline           # old vs new, batch 1 and 8
    .venv/bin/python benchmarks/codec_decode.py --offline --reference   # + the official decoder
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
sys.path.insert(0, str(ROOT / "tests" / "reference" / "stubs"))


def _timed(fn, reps: int) -> tuple[float, float]:
    """(first call seconds, median of reps)."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return first, statistics.median(times)


def _interleaved(fns, reps: int) -> list[tuple[float, float]]:
    """(first call seconds, median of reps) of each function, the reps alternating between them
    so that the machine's load moves them alike."""
    first = []
    for fn in fns:
        t = time.perf_counter()
        fn()
        first.append(time.perf_counter() - t)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, ts in zip(fns, times):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
    return [(f, statistics.median(ts)) for f, ts in zip(first, times)]


def _old_bucket(n: int, cap: int) -> int:
    """The old `chunked_decode` chunk length: the next power of two >= 16, at most cap."""
    return min(max(16, 1 << (n - 1).bit_length()), max(cap, n))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pieces", action="store_true", help="streaming step cost per piece size")
    ap.add_argument(
        "--shapes",
        nargs="+",
        default=["1x1", "1x2", "1x4", "1x8", "1x16", "1x32", "1x64", "1x128", "8x1", "8x2", "8x4"],
        help="step shapes BATCHxFRAMES for --pieces",
    )
    ap.add_argument("--offline", action="store_true", help="offline decode, old vs new")
    ap.add_argument("--frames", type=int, nargs="+", default=[10, 64, 130, 300])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--reference", action="store_true", help="also time the official decoder (builds it: minutes)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--snake-sine",
        choices=("polynomial", "xla"),
        default="polynomial",
        help="the SnakeBeta sin² form (Policy.snake_sine)",
    )
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_default_matmul_precision", "highest")
    from qwen3tts_jax import presets
    from qwen3tts_jax.codec.config import Qwen3TTSTokenizerV2Config
    from qwen3tts_jax.codec.decoder import decode, decode_codes, init_state, prepare_params, stream_step
    from qwen3tts_jax.config import Policy
    from qwen3tts_jax.random_model import random_codec_params

    data = presets.tokenizer_config()
    codec_cfg = Qwen3TTSTokenizerV2Config.from_dict(data)
    cfg, policy = codec_cfg.decoder, Policy(snake_sine=args.snake_sine)
    if args.reference:
        import torch

        from qwen3tts_jax.codec.weights import decoder_entries
        from tests.reference.codec_models import build_reference_tokenizer

        torch.set_num_threads(2)
        ref = build_reference_tokenizer(data, seed=args.seed).decoder
        state = ref.state_dict()
        params: dict = {}
        for e in decoder_entries(cfg, prefix="decoder"):
            node = params
            for name in e.target[1:-1]:
                node = node.setdefault(name, {})
            node[e.target[-1]] = jnp.asarray(state[e.key[len("decoder.") :]].numpy())
    else:
        params = random_codec_params(codec_cfg, seed=args.seed)["decoder"]
    prepared = jax.block_until_ready(jax.jit(prepare_params, static_argnames=("cfg",))(params, cfg))
    load = os.getloadavg()[0]
    result: dict = {
        "benchmark": "codec_decode",
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "jax_backend": jax.default_backend(),
        "jax": jax.__version__,
        "reps": args.reps,
        "load_avg_start": round(load, 2),
        "weights": "official classes, seeded" if args.reference else "random_model.random_codec_params",
        "snake_sine": args.snake_sine,
    }
    rng = np.random.RandomState(args.seed)
    up = cfg.total_upsample

    if args.pieces:
        # Every shape compiled first, then timed round-robin (`--reps` rounds), so a change in
        # the machine's load moves all shapes alike.
        shapes = [tuple(int(v) for v in spec.split("x")) for spec in args.shapes]
        runs, compile_s = {}, {}
        for b, k in shapes:
            codes = jnp.asarray(rng.randint(0, cfg.codebook_size, (b, cfg.num_quantizers, k)), jnp.int32)
            st = init_state(cfg, b, policy)
            runs[b, k] = lambda st=st, codes=codes: stream_step(prepared, st, codes, cfg, policy, True)[
                0
            ].block_until_ready()
            t = time.perf_counter()
            runs[b, k]()
            compile_s[b, k] = time.perf_counter() - t
        times: dict = {shape: [] for shape in shapes}
        for _ in range(args.reps):
            for shape in shapes:
                t = time.perf_counter()
                runs[shape]()
                times[shape].append(time.perf_counter() - t)
        rows = []
        for (b, k), ts in times.items():
            s = statistics.median(ts)
            rows.append(
                {
                    "batch": b,
                    "frames": k,
                    "step_ms": round(1e3 * s, 1),
                    "ms_per_row_frame": round(1e3 * s / (b * k), 1),
                    "first_call_s": round(compile_s[b, k], 1),
                }
            )
        result["pieces"] = rows
        print(
            "\n| batch | frames | step (ms) | ms per row-frame | first call (s) |\n|---|---|---|---|---|",
            file=sys.stderr,
        )
        for r in rows:
            print(
                f"| {r['batch']} | {r['frames']} | {r['step_ms']} | {r['ms_per_row_frame']} | {r['first_call_s']} |",
                file=sys.stderr,
            )

    if args.offline:
        rows = []
        for b in args.batches:
            for frames in args.frames:
                codes = rng.randint(0, cfg.codebook_size, (b, frames, cfg.num_quantizers))
                bucket = _old_bucket(frames, 325)
                padded = jnp.asarray(
                    np.pad(codes.transpose(0, 2, 1), ((0, 0), (0, 0), (0, bucket - frames))), jnp.int32
                )

                def old(padded=padded, frames=frames):
                    return np.asarray(decode_codes(prepared, padded, cfg, policy, True))[:, : frames * up]

                def new(codes=codes):
                    return decode(prepared, codes, cfg, policy, prepared=True)

                (old_first, old_s), (new_first, new_s) = _interleaved([old, new], args.reps)
                err = float(np.abs(np.stack(new()) - old()).max())
                row = {
                    "batch": b,
                    "frames": frames,
                    "old_bucket": bucket,
                    "old_s": round(old_s, 3),
                    "new_s": round(new_s, 3),
                    "speedup": round(old_s / new_s, 2),
                    "old_first_s": round(old_first, 1),
                    "new_first_s": round(new_first, 1),
                    "max_abs_new_vs_old": err,
                }
                if args.reference:
                    ct = torch.from_numpy(codes.transpose(0, 2, 1).copy())

                    def official(ct=ct):
                        with torch.inference_mode():
                            return ref.chunked_decode(ct)[:, 0].numpy()

                    _, ref_s = _timed(official, args.reps)
                    row.update(
                        official_s=round(ref_s, 3),
                        max_abs_new_vs_official=float(np.abs(np.stack(new()) - official()).max()),
                    )
                rows.append(row)
                print(
                    f"# offline b={b} T={frames}: old {old_s:.3f} s (bucket {bucket}), new {new_s:.3f} s",
                    file=sys.stderr,
                    flush=True,
                )
        result["offline"] = rows
        head = "| batch | frames | old bucket | old (s) | new (s) | old/new |" + (
            " official (s) |" if args.reference else ""
        )
        print("\n" + head + "\n" + "|---" * (head.count("|") - 1) + "|", file=sys.stderr)
        for r in rows:
            line = (
                f"| {r['batch']} | {r['frames']} | {r['old_bucket']} | {r['old_s']} | {r['new_s']} | {r['speedup']} |"
            )
            print(line + (f" {r['official_s']} |" if args.reference else ""), file=sys.stderr)
    result["load_avg_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
