"""Codec decode speed at the released size: ours (JAX, jitted) vs the official PyTorch decoder.

Both sides get the same seeded random weights (`tests/reference/codec_models.py`); torch runs
with 2 threads, fp32, eager attention. Each figure is the median of `--reps` runs after one
warm-up (which includes our compile; compile time is reported separately). The reference runs
`Qwen3TTSTokenizerV2Decoder.chunked_decode` (what `decode` calls; one chunk up to 300 frames);
ours runs `decode_codes` at the exact shape (`chunked_decode` would pad 50 frames to the
64-frame bucket) on params whose conv kernels were laid out once by `prepare_params` (as a
loaded model keeps them; "ours_raw_s" re-lays them inside every call). Also: the max
|ours - reference| waveform difference at full size, and the per-frame time of 1- and 4-frame
streaming steps. Prints one JSON line.

    .venv/bin/python benchmarks/codec_decode.py [--frames 50 300] [--reps 3] [--no-stream]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "reference" / "stubs"))


def _median_time(fn, reps: int) -> tuple[float, float]:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[50, 300])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-stream", action="store_true", help="skip the 1-frame streaming step timing")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    jax.config.update("jax_default_matmul_precision", "highest")
    torch.set_num_threads(2)

    from qwen3tts_jax.codec.config import Qwen3TTSTokenizerV2Config
    from qwen3tts_jax.codec.decoder import decode_codes, prepare_params
    from qwen3tts_jax.codec.streaming import init_state, stream_step
    from qwen3tts_jax.codec.weights import decoder_entries
    from tests.reference.codec_models import build_reference_tokenizer, fullsize_codec_config_dict

    data = fullsize_codec_config_dict()
    cfg = Qwen3TTSTokenizerV2Config.from_dict(data).decoder
    t = time.perf_counter()
    model = build_reference_tokenizer(data, seed=args.seed)
    build_s = time.perf_counter() - t
    ref = model.decoder
    state = ref.state_dict()
    params: dict = {}
    for e in decoder_entries(cfg, prefix="decoder"):
        node = params
        for name in e.target[1:-1]:
            node = node.setdefault(name, {})
        node[e.target[-1]] = jnp.asarray(state[e.key[len("decoder.") :]].numpy())

    t = time.perf_counter()
    prepared = jax.block_until_ready(jax.jit(prepare_params, static_argnames=("cfg",))(params, cfg))
    prepare_s = time.perf_counter() - t

    result: dict = {
        "benchmark": "codec_decode", "machine": platform.processor() or platform.machine(),
        "jax_backend": jax.default_backend(), "torch_threads": torch.get_num_threads(),
        "jax": jax.__version__, "torch": torch.__version__, "reps": args.reps, "reference_build_s": round(build_s, 2),
        "prepare_params_s": round(prepare_s, 2),
    }
    rng = np.random.RandomState(args.seed)
    for frames in args.frames:
        codes = rng.randint(0, cfg.codebook_size, (1, cfg.num_quantizers, frames))
        codes_t, codes_j = torch.from_numpy(codes), jnp.asarray(codes, jnp.int32)

        def run_ref():
            with torch.inference_mode():
                return ref.chunked_decode(codes_t)

        def run_ours():
            return jax.block_until_ready(decode_codes(prepared, codes_j, cfg, prepared=True))

        def run_raw():
            return jax.block_until_ready(decode_codes(params, codes_j, cfg))

        t = time.perf_counter()
        decode_codes.lower(prepared, codes_j, cfg, prepared=True).compile()
        compile_s = time.perf_counter() - t
        _, ref_s = _median_time(run_ref, args.reps)
        _, ours_s = _median_time(run_ours, args.reps)
        _, raw_s = _median_time(run_raw, args.reps)
        err = float(np.abs(np.asarray(run_ours()) - run_ref()[:, 0].numpy()).max())
        audio_s = frames * cfg.total_upsample / 24000
        result[f"T{frames}"] = {
            "audio_s": audio_s, "reference_s": round(ref_s, 3), "ours_s": round(ours_s, 3),
            "speedup": round(ref_s / ours_s, 2), "ours_raw_s": round(raw_s, 3), "ours_compile_s": round(compile_s, 1), "max_abs_err": err,
        }
        print(f"# T={frames}: reference {ref_s:.3f} s, ours {ours_s:.3f} s, err {err:.2e}", file=sys.stderr)
    for k in () if args.no_stream else (1, 4):
        st = init_state(cfg, 1)
        frames = jnp.asarray(rng.randint(0, cfg.codebook_size, (1, cfg.num_quantizers, k)), jnp.int32)
        t = time.perf_counter()
        wav, st = stream_step(prepared, st, frames, cfg, prepared=True)
        jax.block_until_ready(wav)
        first = time.perf_counter() - t
        times = []
        for _ in range(max(5, args.reps)):
            t = time.perf_counter()
            wav, st = stream_step(prepared, st, frames, cfg, prepared=True)
            jax.block_until_ready(wav)
            times.append(time.perf_counter() - t)
        step = statistics.median(times)
        result[f"stream_k{k}"] = {"audio_ms": 80.0 * k, "step_ms": round(1e3 * step, 1),
                                  "ms_per_frame": round(1e3 * step / k, 1), "first_call_s": round(first, 1)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
