"""bf16 against fp32 on the full-size 0.6B CustomVoice architecture (seeded random weights), on CPU.

    PYTHONPATH=$PWD nohup .venv/bin/python benchmarks/bf16_bounds.py > /tmp/bf16.log 2>&1 &   # ~1 h, 2 cores
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bf16_bounds.py --quick                     # tiny, a smoke test

The bf16 side is the accelerator program, `Policy.for_backend("gpu", bfloat16)`: bf16 weights and
activations, fp32 norm statistics, softmax, RoPE angles, accumulation and logits, scanned stacks,
XLA's dots. The fp32 side is the CPU program (`Policy.for_backend("cpu")`), the one the suite
holds to ≤ 1e-4 of the official PyTorch classes (the official model itself is not run here: at
full size on 2 cores it would triple the time, for a difference three orders below bf16's).
Both sides load the same numpy-seeded weights (`random:0.6b-customvoice`, seed 0).

Measured (README "bf16 bounds", benchmarks/RESULTS.md "bf16"):

* talker logits, teacher forced: a CustomVoice prompt (the API's own request builder), then
  `--steps` cached decode steps whose inputs are each program's own frame embeddings of the same
  random codes (Σ of the 16 codebook embeddings + the text track, as the frame step builds them);
  per logit vector the relative L2 error, top-1 agreement, KL(fp32 ‖ bf16) at temperature 1;
* code predictor logits: the 15 teacher-forced logit sets of `--predictor-frames` frames, the
  same talker states (fp32's, cast) and codes on both sides;
* codec waveform SNR over `--codec-frames` frames of random codes (the tokenizer's public decode,
  300-frame reference chunking).

Never imported by tests; the tiny-model bounds asserted in tests/test_bf16.py are separate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXT = "The quick brown fox jumps over the lazy dog, and then it runs far away into the quiet forest."


def _stats(rel, top1, kl=None) -> dict:
    import numpy as np

    out = {
        "rows": int(len(rel)),
        "rel_err_p50": float(np.median(rel)),
        "rel_err_p99": float(np.quantile(rel, 0.99)),
        "rel_err_max": float(rel.max()),
        "top1_agreement": float(np.mean(top1)),
    }
    if kl is not None:
        out.update(kl_mean=float(np.mean(kl)), kl_max=float(np.max(kl)))
    return out


def _kl(p_logits, q_logits):
    import numpy as np

    def logsoftmax(x):
        x = np.asarray(x, np.float64)
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    lp, lq = logsoftmax(p_logits), logsoftmax(q_logits)
    return (np.exp(lp) * (lp - lq)).sum(-1)


def talker_run(model, frames, steps: int):
    """Logits of every prompt position, then of `steps` cached steps fed the frames (T, 16), and
    the hidden states of the steps (fp32 numpy)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from qwen3tts_jax.prompt import (
        codebook_tables,
        embed_prompts,
        embed_text_ids,
        prompt_tracks,
        sum_codebook_embeddings,
    )
    from qwen3tts_jax.talker import Talker, talker_cache

    cfg, policy, params = model.config, model.policy, model.params["talker"]
    req = model.custom_voice_prompts(TEXT, "ryan", "english", None, True)[0]
    prompt = embed_prompts(params, cfg, policy, [req], step=1)[0][0]  # step 1: no padding positions
    # The frame step's input: Σ of the frame's 16 codebook embeddings + its text track entry (the
    # track's ids for frames 0, 1, ..., then tts_pad), as `generate.FrameSampler.frame_step` builds it.
    track = np.append(prompt_tracks(cfg, req).trailing, cfg.tts_pad_token_id)
    ids = track[np.minimum(np.arange(len(frames)), len(track) - 1)]
    text = embed_text_ids(params, jnp.asarray(ids[None], jnp.int32), cfg.talker, policy)[0]
    codes = sum_codebook_embeddings(
        codebook_tables(params, cfg.talker.num_code_groups), jnp.asarray(frames), policy.dtype
    )
    inputs = np.asarray((codes + text).astype(jnp.float32))
    talker = Talker(cfg.talker, policy)
    # params are arguments, never closed over: a closure would bake gigabytes of constants into the program
    step = jax.jit(lambda p, e, m, c: talker.apply({"params": p}, e, m, c), donate_argnums=(3,))
    head = jax.jit(lambda p, h: talker.apply({"params": p}, h, method=Talker.logits))
    run = lambda e, m, c: step(params, e, m, c)
    logits = lambda h: head(params, h)
    slots = -(-(len(prompt) + steps) // 256) * 256
    h, cache = run(
        jnp.asarray(prompt[None], policy.dtype),
        jnp.ones((1, len(prompt)), bool),
        talker_cache(cfg.talker, policy, 1, slots),
    )
    prompt_logits = np.asarray(logits(h))[0]
    step_logits, hidden = [], []
    for i in range(steps):
        h, cache = run(jnp.asarray(inputs[i][None, None], policy.dtype), jnp.ones((1, 1), bool), cache)
        step_logits.append(np.asarray(logits(h))[0, 0])
        hidden.append(np.asarray(h[0, 0], np.float32))
    return prompt_logits, np.stack(step_logits), np.stack(hidden)


def predictor_run(model, past, codes):
    import jax.numpy as jnp
    import numpy as np

    from qwen3tts_jax.code_predictor import CodePredictor
    from qwen3tts_jax.talker import Talker

    cfg, policy, params = model.config.talker, model.policy, model.params["talker"]
    e0 = Talker(cfg, policy).apply({"params": params}, jnp.asarray(codes[:, :1]), method=Talker.embed_codec)
    return np.asarray(
        CodePredictor(cfg, policy).apply(
            {"params": params["code_predictor"]},
            jnp.asarray(past, policy.dtype),
            e0[:, 0],
            jnp.asarray(codes),
            method=CodePredictor.teacher_forced_logits,
        )
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="random:tiny, a few steps (a smoke test of this script)")
    ap.add_argument("--steps", type=int, default=None, help="teacher-forced decode steps (default 256; quick 16)")
    ap.add_argument("--predictor-frames", type=int, default=None, help="default 64; quick 4")
    ap.add_argument("--codec-frames", type=int, default=None, help="default 300; quick 24")
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/bf16_bounds[-quick].json")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import jax
    import jax.numpy as jnp
    import numpy as np

    from qwen3tts_jax import Qwen3TTSModel
    from qwen3tts_jax.config import Policy
    from qwen3tts_jax.parity import row_relative_error, snr_db

    spec = "random:tiny" if args.quick else "random:0.6b-customvoice"
    steps = args.steps or (16 if args.quick else 256)
    n_pred = args.predictor_frames or (4 if args.quick else 64)
    n_codec = args.codec_frames or (24 if args.quick else 300)
    for name, v in (("--steps", steps), ("--predictor-frames", n_pred), ("--codec-frames", n_codec)):
        if v < 1:
            ap.error(f"{name} must be >= 1, got {v}")
    out = args.out or ROOT / "benchmarks" / "results" / f"bf16_bounds{'-quick' if args.quick else ''}.json"
    t0 = time.perf_counter()
    log = lambda msg: print(f"[bf16_bounds {time.perf_counter() - t0:7.1f} s] {msg}", flush=True)
    rng = np.random.RandomState(0)
    frames = rng.randint(0, 2048, (steps, 16))
    pred_codes = rng.randint(0, 2048, (n_pred, 16))
    codec_codes = rng.randint(0, 2048, (n_codec, 16))
    result = {
        "model": spec,
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})",
        "jax": jax.__version__,
        "steps": steps,
        "predictor_frames": n_pred,
        "codec_frames": n_codec,
    }
    runs = {}
    for label, policy in (("fp32", Policy.for_backend("cpu")), ("bf16", Policy.for_backend("gpu", jnp.bfloat16))):
        model = Qwen3TTSModel.from_pretrained(spec, policy=policy)
        log(f"{label}: loaded")
        prompt_l, step_l, hidden = talker_run(model, frames, steps)
        log(f"{label}: talker, {len(prompt_l)} prompt positions + {steps} steps")
        runs[label] = {"prompt": prompt_l, "steps": step_l, "hidden": hidden, "model": model}
        del model
    past = runs["fp32"]["hidden"][np.linspace(0, steps - 1, n_pred).astype(int)]
    for label in ("fp32", "bf16"):
        runs[label]["predictor"] = predictor_run(runs[label]["model"], past, pred_codes)
        wavs, _ = runs[label]["model"].speech_tokenizer.decode([{"audio_codes": codec_codes}])
        runs[label]["wave"] = wavs[0]
        log(f"{label}: predictor and codec")
    a, b = runs["fp32"], runs["bf16"]
    for part in ("prompt", "steps"):
        rel = row_relative_error(b[part], a[part])
        top1 = np.argmax(b[part], -1) == np.argmax(a[part], -1)
        result[f"talker_{part}"] = _stats(rel, top1, _kl(a[part], b[part]))
    allrows = np.concatenate([a["prompt"], a["steps"]]), np.concatenate([b["prompt"], b["steps"]])
    result["talker_all"] = _stats(
        row_relative_error(allrows[1], allrows[0]),
        np.argmax(allrows[1], -1) == np.argmax(allrows[0], -1),
        _kl(*allrows),
    )
    # How often top-1 flips where fp32's own top-2 margin is small: near-ties are what bf16 flips.
    s = np.sort(allrows[0], -1)
    margin = s[:, -1] - s[:, -2]
    flips = np.argmax(allrows[1], -1) != np.argmax(allrows[0], -1)
    result["talker_flip_margins"] = {
        "fp32_margin_p50": float(np.median(margin)),
        "largest_margin_flipped": float(margin[flips].max()) if flips.any() else None,
    }
    pa, pb = a["predictor"].reshape(-1, a["predictor"].shape[-1]), b["predictor"].reshape(-1, b["predictor"].shape[-1])
    result["predictor"] = _stats(row_relative_error(pb, pa), np.argmax(pb, -1) == np.argmax(pa, -1), _kl(pa, pb))
    result["codec"] = {
        "snr_db": snr_db(b["wave"], a["wave"]),
        "max_abs": float(np.max(np.abs(b["wave"] - a["wave"]))),
        "rms": float(a["wave"].std()),
        "clamped_fraction": float(np.mean(np.abs(a["wave"]) >= 1.0)),
    }
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out)
    log(f"wrote {out}")
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine",)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
