"""The one prepared accelerator check: parity of the device's program, then its speed, in one JSON.

    bash benchmarks/device_check.sh                      # on the GPU machine (≤ 8 min on one H200)
    python benchmarks/device_check.py --device cpu --quick --out /tmp/dc.json   # CI: tiny models

What it runs, in order. Each section writes the JSON as it ends (a run cut short still leaves
what it measured); a section that fails records its error and the next one runs; the exit status
is 1 if any parity check failed or any section raised.

1. `environment`: backend, devices, versions, the policy `Policy.for_backend()` picks here.
2. `parity_fp32`, `parity_bf16`: a tiny CustomVoice model (the `random:tiny` architecture with
   numpy-seeded weights, written as a released-layout folder and loaded with
   `Qwen3TTSModel.from_pretrained`) against what the official PyTorch classes computed from the
   same weights on CPU beforehand (`device_refs/tiny_custom_voice.npz`, made by
   `device_refs/make_refs.py`): talker prefill and cached-step logits, the code predictor's
   teacher-forced logits, greedy codes of a batch of 2 through the public API, codec waveforms.
   fp32 at the suite's tolerances (logits ≤ 1e-4, waveform ≤ 1e-3, codes identical); bf16
   against the bounds in `BF16_TINY` (greedy codes in bf16 are reported, not asserted: one bf16
   rounding can flip a near-tie and the sequence diverges from there).
3. `speed` (bf16, `random:0.6b-customvoice`, weights drawn on the device by `jax.random`):
   weight build time, single-stream ×RT (audio seconds per wall second, EOS blocked by
   `min_new_tokens=` for `--frames` frames, codec decode included) and its cold first call,
   streaming time to first audio (warm), batch 8/32/64 aggregate ×RT, the engine's admission
   (prefill) of a 256-token prompt, codec decode of 300 frames.
   The persistent compilation cache is off: "cold" means compiled in this process.

`--quick` runs the same code on `random:tiny` with a few frames (what CI runs so this script
never rots). `--budget-s` skips the speed items that would not fit (recorded as skipped).

Targets (H100/H200): single stream ≥ 10× real time, TTFA ≤ 100 ms, batch 32 ≥ 150 audio-s/s.

The paths used never read or write audio files: nothing imports soundfile or soxr (the device
image has neither).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFS = ROOT / "benchmarks" / "device_refs" / "tiny_custom_voice.npz"
FRAME_S = 0.08  # one 12.5 Hz codec frame = 80 ms of audio
TINY_SEED = 0

# The tiny parity case; device_refs/make_refs.py computes the references from the same values
# and stores them in the npz, which this script checks (a changed case needs new references).
CASE = {
    "seed": TINY_SEED,
    "greedy_texts": ["Hello world, how are you today?", "Speech on a device."],
    "greedy_speakers": ["ryan", "vivian"],
    "greedy_languages": ["english", "auto"],
    "greedy_max_new_tokens": 12,
    "step_cache_slots": 160,  # > the 64-slot attention block: the cached steps run `attend_live`
}

# bf16 bounds of the tiny parity model (the device's program in bf16 vs the fp32 reference).
# Measured with `--device cpu --quick` on the 2-core CPU machine: talker logits rel. err p99
# 1.41e-2, top-1 0.957 (one flip in 23 rows); predictor p99 1.40e-2, top-1 1.0 (30 sets); codec
# SNR 31.3 dB. Bounds: errors ×~3.5 (another backend's accumulation order), agreement allows 3
# flips, SNR −6 dB. The full-size bounds are in the README ("bf16 bounds").
BF16_TINY = {
    "talker_rel_p99": 0.05,
    "talker_top1": 0.85,
    "predictor_rel_p99": 0.05,
    "predictor_top1": 0.85,
    "codec_snr_db": 25.0,
}

SPEED_TEXTS = (
    "The quick brown fox jumps over the lazy dog, and then it runs far away into the quiet forest.",
    "Speech synthesis turns written words into sound.",
    "Every frame of audio is eighty milliseconds long, and sixteen codebooks describe it.",
    "A small model can still speak clearly when it is well trained.",
)
SPEED_SPEAKERS = ("ryan", "serena", "aiden", "vivian")
TARGETS = {"single_stream_xrt_min": 10.0, "ttfa_ms_max": 100.0, "batch32_audio_s_per_s_min": 150.0}
FULL = dict(
    model="random:0.6b-customvoice",
    frames=256,
    batches=(8, 32, 64),
    prefill_tokens=256,
    codec_frames=300,
    stream_frames=64,
    budget_s=450.0,
)
# Quick: no item is skipped (CI checks them all); ~2.5 min on an idle 2-core CPU machine.
QUICK = dict(
    model="random:tiny", frames=8, batches=(2,), prefill_tokens=16, codec_frames=16, stream_frames=6, budget_s=3600.0
)


# --------------------------------------------------------------------------------------------
# The run: JSON written section by section, a time budget
# --------------------------------------------------------------------------------------------


class Run:
    def __init__(self, out: Path, budget_s: float):
        self.out, self.budget_s, self.t0 = out, budget_s, time.perf_counter()
        self.data: dict = {
            "script": "benchmarks/device_check.py",
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "budget_s": budget_s,
        }
        self.failed: list[str] = []

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def write(self) -> None:
        self.data["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        self.data["failed"] = self.failed
        tmp = self.out.with_name(self.out.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        os.replace(tmp, self.out)  # never a half-written file

    def section(self, name: str, fn, *args) -> dict:
        t = time.perf_counter()
        result: dict = {}
        self.data[name] = result  # filled in place: `speed` writes as it goes
        try:
            result.update(fn(result, *args))
        except Exception as err:  # record and go on with the next section
            result.update(error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc(limit=12))
        if "error" in result or result.get("ok") is False:
            self.failed.append(name)
        result["section_s"] = round(time.perf_counter() - t, 1)
        self.write()
        print(
            f"[device_check] {name}: {'FAILED' if name in self.failed else 'ok'} in {result['section_s']} s", flush=True
        )
        return result


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _r(x, nd=4):
    return None if x is None else round(float(x), nd)


def _git() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _policy_dict(policy) -> dict:
    import jax.numpy as jnp

    return {k: (jnp.dtype(v).name if k.endswith("dtype") else v) for k, v in dataclasses.asdict(policy).items()}


def environment(_: dict) -> dict:
    import flax
    import jax
    import jaxlib
    import numpy as np

    from qwen3tts_jax.config import Policy

    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in devices],
        "device_kind": devices[0].device_kind,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "commit": _git(),
        "policy": _policy_dict(Policy.for_backend()),
        "loaded_audio_io": sorted(m for m in ("soundfile", "soxr") if m in sys.modules),
    }


def _peak_memory() -> int | None:
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


# --------------------------------------------------------------------------------------------
# The tiny parity model (shared with device_refs/make_refs.py)
# --------------------------------------------------------------------------------------------


def tensor_dicts(seed: int = TINY_SEED) -> tuple[dict, dict, dict, dict]:
    """(model config.json, speech_tokenizer config.json, model tensors, codec tensors) of the
    tiny CustomVoice model: HF keys → float32 numpy arrays in the checkpoint's layout."""
    import numpy as np

    from qwen3tts_jax import presets
    from qwen3tts_jax.codec.config import Qwen3TTSTokenizerV2Config
    from qwen3tts_jax.codec.weights import codec_entries
    from qwen3tts_jax.config import Qwen3TTSConfig
    from qwen3tts_jax.random_model import random_tree
    from qwen3tts_jax.weights import model_entries

    def tensors(entries, tree):
        out = {}
        for e in entries:
            node = tree
            for name in e.target:
                node = node[name]
            out[e.key] = np.asarray(node)
        return out

    model_cfg = {**presets.model_config("custom_voice", "tiny"), "transformers_version": "4.57.3"}
    codec_cfg = presets.tokenizer_config(tiny=True)
    entries = model_entries(Qwen3TTSConfig.from_dict(model_cfg))
    centries = codec_entries(Qwen3TTSTokenizerV2Config.from_dict(codec_cfg))
    return (
        model_cfg,
        codec_cfg,
        tensors(entries, random_tree(entries, seed)),
        tensors(centries, random_tree(centries, seed + 1)),
    )


def fingerprint(model_tensors: dict, codec_tensors: dict) -> list[float]:
    """Σ|w| of the model and of the codec tensors (float64): equal weights on both machines."""
    import numpy as np

    return [
        float(sum(np.abs(np.asarray(v, np.float64)).sum() for v in d.values())) for d in (model_tensors, codec_tensors)
    ]


def write_tiny_folder(folder: Path, seed: int = TINY_SEED) -> tuple[Path, list[float]]:
    """The tiny model as a released-layout folder (config, generation config, safetensors, a
    byte-level text tokenizer, speech_tokenizer/); returns it and its weights' fingerprint."""
    from safetensors.numpy import save_file

    from qwen3tts_jax import presets
    from qwen3tts_jax.random_model import byte_level_tokenizer_dir

    model_cfg, codec_cfg, model_t, codec_t = tensor_dicts(seed)
    folder.mkdir(parents=True, exist_ok=True)
    byte_level_tokenizer_dir(folder)
    (folder / "config.json").write_text(json.dumps(model_cfg))
    (folder / "generation_config.json").write_text(json.dumps(presets.GENERATION_CONFIG))
    save_file(model_t, str(folder / "model.safetensors"))
    st = folder / "speech_tokenizer"
    st.mkdir(exist_ok=True)
    (st / "config.json").write_text(json.dumps(codec_cfg))
    save_file(codec_t, str(st / "model.safetensors"))
    return folder, fingerprint(model_t, codec_t)


def greedy_requests(model) -> list:
    """The greedy case's prompt requests, built by the public API's own request builder."""
    c = CASE
    return model.custom_voice_prompts(
        list(c["greedy_texts"]), list(c["greedy_speakers"]), list(c["greedy_languages"]), None, True
    )


# --------------------------------------------------------------------------------------------
# Our side of each parity item (the model as loaded under the device's policy)
# --------------------------------------------------------------------------------------------


def ours_talker(model, x, mask, steps):
    """Prefill logits (b, t, v) of `x` under `mask`, then logits (n, b, v) of n cached steps."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from qwen3tts_jax.talker import Talker, talker_cache

    cfg, policy, params = model.config.talker, model.policy, model.params["talker"]
    talker = Talker(cfg, policy)
    # params are arguments, never closed over (a closure would make them constants of the program)
    step = jax.jit(lambda p, e, m, c: talker.apply({"params": p}, e, m, c))
    head = jax.jit(lambda p, h: talker.apply({"params": p}, h, method=Talker.logits))
    run = lambda e, m, c: step(params, e, m, c)
    logits = lambda h: head(params, h)
    hidden, cache = run(
        jnp.asarray(x), jnp.asarray(mask), talker_cache(cfg, policy, x.shape[0], CASE["step_cache_slots"])
    )
    prefill, stepped = np.asarray(logits(hidden)), []
    for e in steps:
        h, cache = run(jnp.asarray(e), jnp.ones(e.shape[:2], bool), cache)
        stepped.append(np.asarray(logits(h))[:, 0])
    return prefill, np.stack(stepped)


def ours_predictor(model, past, codes):
    import jax.numpy as jnp
    import numpy as np

    from qwen3tts_jax.finetune import subtalker_logits  # the predictor's teacher-forced forward

    return np.asarray(
        subtalker_logits(model.config, model.policy, model.params["talker"], jnp.asarray(past), jnp.asarray(codes))
    )


def ours_greedy(model) -> list:
    return model.generate_codes(
        greedy_requests(model), do_sample=False, subtalker_dosample=False, max_new_tokens=CASE["greedy_max_new_tokens"]
    )


def ours_codec(model, codes):
    """Waveforms of codes (b, 16, t) through the tokenizer's public decode."""
    import numpy as np

    wavs, _ = model.speech_tokenizer.decode([{"audio_codes": c.T} for c in codes])
    return np.stack(wavs)


def parity(_: dict, dtype: str) -> dict:
    import numpy as np

    from qwen3tts_jax import Qwen3TTSModel
    from qwen3tts_jax.config import Policy
    from qwen3tts_jax.parity import row_relative_error, snr_db, topk_agreement

    if not REFS.exists():
        raise FileNotFoundError(
            f"{REFS}: no references; make them on a CPU machine with benchmarks/device_refs/make_refs.py"
        )
    refs = np.load(REFS)
    stored = json.loads(str(refs["case"]))
    if stored != CASE:
        raise ValueError(f"{REFS}: made for case {stored}, this script runs {CASE}; rerun device_refs/make_refs.py")
    with tempfile.TemporaryDirectory(prefix="qwen3tts-tiny-") as tmp:
        folder, fp = write_tiny_folder(Path(tmp) / "tiny")
        same_weights = bool(np.allclose(fp, refs["fingerprint"], rtol=1e-9, atol=0))
        policy = Policy.for_backend(dtype=dtype)  # the device's own program
        model = Qwen3TTSModel.from_pretrained(folder, policy=policy)
    out: dict = {"dtype": dtype, "policy": _policy_dict(policy), "same_weights_as_references": same_weights}
    if not same_weights:
        out.update(
            ok=False,
            error=f"weights differ from the references' (fingerprint {fp} vs {refs['fingerprint'].tolist()}): "
            "numpy's random stream changed? rerun device_refs/make_refs.py",
        )
        return out
    mask = refs["talker_mask"]
    prefill, stepped = ours_talker(model, refs["talker_x"], mask, refs["talker_steps"])
    pred = ours_predictor(model, refs["predictor_past"], refs["predictor_codes"])
    greedy = ours_greedy(model)
    want_greedy = [refs[f"greedy_codes_{i}"] for i in range(len(CASE["greedy_texts"]))]
    wave = ours_codec(model, refs["codec_codes"])
    want_wave = refs["codec_wave"]
    talker_got = np.concatenate([prefill[mask], stepped.reshape(-1, stepped.shape[-1])])
    talker_want = np.concatenate(
        [refs["talker_prefill_logits"][mask], refs["talker_step_logits"].reshape(-1, stepped.shape[-1])]
    )
    same_frames = [g.shape == w.shape for g, w in zip(greedy, want_greedy)]
    agree = [
        float(np.mean(g[: len(w)] == w[: len(g)])) if min(len(g), len(w)) else 0.0 for g, w in zip(greedy, want_greedy)
    ]
    items = {
        "talker_prefill_max_abs": float(np.max(np.abs(prefill[mask] - refs["talker_prefill_logits"][mask]))),
        "talker_steps_max_abs": float(np.max(np.abs(stepped - refs["talker_step_logits"]))),
        "talker_rel_p99": float(np.quantile(row_relative_error(talker_got, talker_want), 0.99)),
        "talker_top1": topk_agreement(talker_got, talker_want, 1),
        "predictor_max_abs": float(np.max(np.abs(pred - refs["predictor_logits"]))),
        "predictor_rel_p99": float(np.quantile(row_relative_error(pred, refs["predictor_logits"]), 0.99)),
        "predictor_top1": topk_agreement(pred, refs["predictor_logits"], 1),
        "greedy_frames": [len(g) for g in greedy],
        "greedy_reference_frames": [len(w) for w in want_greedy],
        "greedy_code_agreement": agree,
        "codec_max_abs": float(np.max(np.abs(wave - want_wave))) if wave.shape == want_wave.shape else None,
        "codec_snr_db": snr_db(wave, want_wave) if wave.shape == want_wave.shape else None,
    }
    if dtype == "float32":
        checks = {
            "talker_prefill_max_abs<=1e-4": items["talker_prefill_max_abs"] <= 1e-4,
            "talker_steps_max_abs<=1e-4": items["talker_steps_max_abs"] <= 1e-4,
            "predictor_max_abs<=1e-4": items["predictor_max_abs"] <= 1e-4,
            "greedy_codes_identical": all(same_frames)
            and all(np.array_equal(g, w) for g, w in zip(greedy, want_greedy)),
            "codec_max_abs<=1e-3": items["codec_max_abs"] is not None and items["codec_max_abs"] <= 1e-3,
        }
    else:
        b = BF16_TINY
        checks = {
            f"talker_rel_p99<={b['talker_rel_p99']}": items["talker_rel_p99"] <= b["talker_rel_p99"],
            f"talker_top1>={b['talker_top1']}": items["talker_top1"] >= b["talker_top1"],
            f"predictor_rel_p99<={b['predictor_rel_p99']}": items["predictor_rel_p99"] <= b["predictor_rel_p99"],
            f"predictor_top1>={b['predictor_top1']}": items["predictor_top1"] >= b["predictor_top1"],
            f"codec_snr_db>={b['codec_snr_db']}": items["codec_snr_db"] is not None
            and items["codec_snr_db"] >= b["codec_snr_db"],
        }
    checks = {k: bool(v) for k, v in checks.items()}
    return {
        **out,
        **{k: (_r(v, 8) if isinstance(v, float) else v) for k, v in items.items()},
        "checks": checks,
        "ok": all(checks.values()),
    }


# --------------------------------------------------------------------------------------------
# Speed
# --------------------------------------------------------------------------------------------


def offline(model, batch: int, frames: int) -> float:
    """One `generate_custom_voice` call of `batch` texts, `frames` frames each (EOS blocked by
    `min_new_tokens` for every token: `max_new_tokens=frames + 1` tokens give `frames` frames);
    returns the audio seconds produced."""
    texts = [SPEED_TEXTS[i % len(SPEED_TEXTS)] for i in range(batch)]
    speakers = [SPEED_SPEAKERS[i % len(SPEED_SPEAKERS)] for i in range(batch)]
    wavs, sr = model.generate_custom_voice(
        texts if batch > 1 else texts[0],
        speakers if batch > 1 else speakers[0],
        language="english",
        max_new_tokens=frames + 1,
        min_new_tokens=frames + 1,
        seed=0,
    )
    lengths = {len(w) for w in wavs}
    if lengths != {frames * 1920}:
        raise AssertionError(
            f"expected {frames} frames ({frames * 1920} samples) per item, got lengths {sorted(lengths)}"
        )
    return sum(len(w) for w in wavs) / sr


def streamed(model, frames: int) -> tuple[float, float, float]:
    """One streaming call (first chunk after 1 frame, then 4-frame chunks; EOS blocked as in
    `offline`): (time to first audio, total time, audio seconds)."""
    t0, first, samples = time.perf_counter(), None, 0
    for chunk, _ in model.stream_custom_voice(
        SPEED_TEXTS[0],
        "ryan",
        language="english",
        max_new_tokens=frames + 1,
        min_new_tokens=frames + 1,
        chunk_frames=4,
        first_chunk_frames=1,
        seed=0,
    ):
        if first is None:
            first = time.perf_counter() - t0
        samples += len(chunk)
    return first, time.perf_counter() - t0, samples / 24000


def time_prefill(model, tokens: int, frames: int, reps: int = 5) -> dict:
    """The engine's admission program (`generate.compiled(sampler).admit`: prompt embedding,
    talker prefill, codec head, first-token sampling, the rows written into the slots) of one
    `tokens`-position prompt of random text ids into a 1-slot state sized for `frames` frames,
    with the sampling program of the model's generation config. Inputs are placed on the device
    before timing (what is timed is the device program and its dispatch, not the host's
    tokenization or transfers); the state it returns is fed to the next call (donated)."""
    import jax
    import numpy as np

    from qwen3tts_jax import generate as gen
    from qwen3tts_jax.engine import PACK_ATTENTION_SPAN, PROMPT_BUCKET, TEXT_TRACK_BUCKET, TRAILING_BUCKET
    from qwen3tts_jax.prompt import PromptTracks, pack_tracks
    from qwen3tts_jax.sampling import SamplingConfig

    cfg, t = model.config, model.config.talker
    sampling = SamplingConfig.from_configs(model.generation_config, t)
    sampler = gen.FrameSampler(cfg, model.policy, sampling.program(), model.placement)
    compiled = gen.compiled(sampler)
    rng = np.random.RandomState(0)
    off = np.zeros(tokens, bool)
    tracks = PromptTracks(  # every position a text position
        text_ids=rng.randint(0, t.text_vocab_size, tokens).astype(np.int32),
        text_on=np.ones(tokens, bool),
        codec_ids=np.zeros(tokens, np.int32),
        codec_on=off,
        spk_on=off,
        res_codes=np.zeros((tokens, t.num_code_groups - 1), np.int32),
        res_on=off,
        speaker=None,
        trailing=np.full(1, cfg.tts_pad_token_id, np.int32),
    )
    put = model.placement.put
    batch = put(pack_tracks([tracks], t.transformer.hidden_size, 1, PACK_ATTENTION_SPAN, PROMPT_BUCKET), "prompt")
    trailing = put(np.full((1, TRAILING_BUCKET), cfg.tts_pad_token_id, np.int32), "input/trailing_ids")
    rows, limits = put(np.zeros(1, np.int32), "input/rows"), put(np.full(1, frames + 1, np.int32), "input/limits")
    keys = put(np.asarray(jax.random.PRNGKey(0), np.uint32)[None], "input/keys")
    values = put(sampling.values(1), "input/values")
    state = compiled.init(1, gen.cache_slots(tokens, frames), TEXT_TRACK_BUCKET, 1)

    def run():
        nonlocal state
        state = compiled.admit(model.params["talker"], state, batch, trailing, rows, keys, values, limits)
        jax.block_until_ready(state.token)

    _, cold = _timed(run)
    warm = [_timed(run)[1] for _ in range(reps)]
    return {
        "tokens": tokens,
        "what": "generate.compiled(FrameSampler).admit of one prompt into a 1-slot state",
        "cold_s": _r(cold),
        "warm_ms": _r(statistics.median(warm) * 1000, 2),
        "warm_ms_all": [_r(w * 1000, 2) for w in warm],
    }


def time_codec(model, frames: int, reps: int = 3) -> dict:
    import numpy as np

    codes = np.random.RandomState(0).randint(0, 2048, (frames, 16))
    run = lambda: model.speech_tokenizer.decode([{"audio_codes": codes}])
    _, cold = _timed(run)
    warm = [_timed(run)[1] for _ in range(reps)]
    w = statistics.median(warm)
    return {"frames": frames, "cold_s": _r(cold), "warm_ms": _r(w * 1000, 2), "xrt": _r(frames * FRAME_S / w, 2)}


def speed(result: dict, run: Run, sizes: dict) -> dict:
    import jax

    from qwen3tts_jax import Qwen3TTSModel

    frames = sizes["frames"]
    result.update(model=sizes["model"], dtype="bfloat16", frames=frames, audio_s_per_item=_r(frames * FRAME_S, 2))
    model, build = _timed(lambda: Qwen3TTSModel.from_pretrained(sizes["model"], dtype="bfloat16"))
    jax.block_until_ready((model.params, model.speech_tokenizer.params))
    result.update(
        weights_build_s=_r(build, 2),
        weights_on_device=jax.default_backend() != "cpu",
        policy=_policy_dict(model.policy),
    )
    run.write()

    def item(name: str, need_s: float, fn):
        if run.left() < need_s:
            result[name] = {"skipped": f"time budget: {run.left():.0f} s left, needs ~{need_s:.0f} s"}
        else:
            try:
                result[name] = fn()
            except Exception as err:
                result[name] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(limit=8)}
                run.failed.append(f"speed.{name}")
        run.write()
        print(f"[device_check] speed.{name}: {result[name]}", flush=True)

    def single():
        audio, cold = _timed(lambda: offline(model, 1, frames))
        warm = [_timed(lambda: offline(model, 1, frames))[1] for _ in range(2)]
        w = statistics.median(warm)
        return {
            "audio_s": _r(audio, 2),
            "cold_first_call_s": _r(cold, 2),
            "compile_s_estimate": _r(cold - w, 2),
            "warm_s": [_r(x, 3) for x in warm],
            "xrt": _r(audio / w, 2),
        }

    def stream():
        cold = streamed(model, sizes["stream_frames"])
        warm = [streamed(model, sizes["stream_frames"]) for _ in range(2)]
        ttfa = statistics.median(w[0] for w in warm)
        return {
            "frames": sizes["stream_frames"],
            "cold_ttfa_s": _r(cold[0], 3),
            "ttfa_ms": _r(ttfa * 1000, 1),
            "ttfa_ms_all": [_r(w[0] * 1000, 1) for w in warm],
            "xrt": _r(warm[-1][2] / warm[-1][1], 2),
        }

    def batch(b: int):
        def fn():
            audio, cold = _timed(lambda: offline(model, b, frames))
            _, warm = _timed(lambda: offline(model, b, frames))
            return {
                "batch": b,
                "audio_s": _r(audio, 2),
                "cold_first_call_s": _r(cold, 2),
                "warm_s": _r(warm, 3),
                "audio_s_per_s": _r(audio / warm, 1),
            }

        return fn

    item("single_stream", 20, single)
    item("streaming", 15, stream)
    item("codec_decode", 10, lambda: time_codec(model, sizes["codec_frames"]))
    item("prefill", 10, lambda: time_prefill(model, sizes["prefill_tokens"], frames))
    for b in sizes["batches"]:
        item(f"batch_{b}", 40, batch(b))
    result["peak_device_bytes"] = _peak_memory()
    xrt = (result.get("single_stream") or {}).get("xrt")
    ttfa = (result.get("streaming") or {}).get("ttfa_ms")
    b32 = (result.get("batch_32") or {}).get("audio_s_per_s")
    result["targets"] = {
        **TARGETS,
        "single_stream_met": None if xrt is None else xrt >= TARGETS["single_stream_xrt_min"],
        "ttfa_met": None if ttfa is None else ttfa <= TARGETS["ttfa_ms_max"],
        "batch32_met": None if b32 is None else b32 >= TARGETS["batch32_audio_s_per_s_min"],
    }
    return result


# --------------------------------------------------------------------------------------------


def parse_args(argv):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--device",
        choices=("auto", "cpu", "gpu", "tpu"),
        default="auto",
        help="the JAX platform (auto: JAX's default); the run refuses a different backend",
    )
    ap.add_argument("--quick", action="store_true", help="tiny model, a few frames (the CI check)")
    ap.add_argument(
        "--out", type=Path, default=None, help="the JSON (default: $OUT/device_check.json, else ./device_check.json)"
    )
    ap.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="wall-clock budget for the whole run (speed items beyond it are skipped)",
    )
    ap.add_argument("--frames", type=int, default=None, help="frames per generated item (default 256; quick: 8)")
    ap.add_argument("--skip-speed", action="store_true", help="parity only")
    args = ap.parse_args(argv)
    if args.frames is not None and args.frames < 1:
        ap.error(f"--frames must be >= 1, got {args.frames}")
    if args.budget_s is not None and args.budget_s <= 0:
        ap.error(f"--budget-s must be > 0, got {args.budget_s}")
    if args.out is None:
        args.out = Path(os.environ.get("OUT", ".")) / "device_check.json"
    if not args.out.parent.is_dir():
        ap.error(f"--out: folder {args.out.parent} does not exist")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device != "auto":
        os.environ["JAX_PLATFORMS"] = {"gpu": "cuda"}.get(args.device, args.device)  # before jax is imported
    sys.path.insert(0, str(ROOT))
    import jax

    # "cold" must mean compiled here, whatever the environment configures.
    with contextlib.suppress(AttributeError, ValueError):
        jax.config.update("jax_compilation_cache_dir", None)
        jax.config.update("jax_enable_compilation_cache", False)
    if args.device != "auto" and jax.default_backend() != args.device:
        print(f"--device {args.device}: JAX's backend is {jax.default_backend()!r}", file=sys.stderr)
        return 2
    sizes = dict(QUICK if args.quick else FULL)
    if args.frames is not None:
        sizes["frames"] = args.frames
    run = Run(args.out, args.budget_s or sizes["budget_s"])
    run.data.update(quick=args.quick, sizes=sizes)
    run.section("environment", environment)
    run.section("parity_fp32", parity, "float32")
    run.section("parity_bf16", parity, "bfloat16")
    if not args.skip_speed:
        run.section("speed", speed, run, sizes)
    run.data["loaded_audio_io_at_end"] = sorted(m for m in ("soundfile", "soxr") if m in sys.modules)
    run.write()
    print(f"[device_check] wrote {args.out} ({run.data['elapsed_s']} s); failed: {run.failed or 'none'}", flush=True)
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
