"""The bf16 policy against the fp32 reference classes, on tiny random-weight models: measured
bounds, not parity.

bf16 = `Policy.for_backend("gpu", bfloat16)` (the accelerator program; bf16 weights and
activations, fp32 norm statistics, softmax, RoPE angles, accumulation and logits). The metrics are
those of the full-size measurement (`benchmarks/bf16_bounds.py`, README "bf16 bounds"): per-row
relative L2 error of logit vectors, top-1 agreement, waveform SNR. Each bound below is the value
measured here on the 2-core CPU machine with a margin (noted beside it): tiny models have fewer,
narrower layers than the released ones, so their errors are not the full-size numbers — those
are in the README.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference.talker_steps import reference_talker_hidden, reference_talker_logits

from qwen3tts_jax.config import Policy, Qwen3TTSConfig
from qwen3tts_jax.finetune import subtalker_logits
from qwen3tts_jax.parity import row_relative_error, snr_db, topk_agreement
from qwen3tts_jax.talker import Talker, talker_cache
from qwen3tts_jax.weights import load_model_params

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.reference

BF16 = {"gpu": Policy.for_backend("gpu", jnp.bfloat16), "cpu": Policy.for_backend("cpu", jnp.bfloat16)}

# Measured on the 2-core CPU machine (XLA 0.10.2, these seeds; the GPU and CPU programs gave the
# same figures): talker logits rel. err p99 1.39e-2 / 1.41e-2, max 1.55e-2 / 1.62e-2, top-1
# agreement 0.976 / 0.984 (base-0b6-gqa / custom-1b7-gqa, 123 positions); predictor p99 1.25e-2 /
# 1.64e-2, top-1 0.988 / 0.996 (240 sets); codec SNR 24.1 dB. Bounds: errors ×~2.2, agreement −~5
# points (one flipped near-tie in 123 rows is 0.8 points), SNR −4 dB.
TALKER_REL_P99, TALKER_REL_MAX, TALKER_TOP1 = 3e-2, 4e-2, 0.93
PREDICTOR_REL_P99, PREDICTOR_TOP1 = 3.5e-2, 0.95
CODEC_SNR_DB = 20.0


def _talker_case(tiny_model, name, policy):
    """Teacher-forced logits over a 40-position prefill (batch 2, row 1 left-padded by 5) and 24
    single steps: ours under `policy` and the reference's in fp32, at real positions."""
    ref, folder = tiny_model(name)
    cfg = Qwen3TTSConfig.from_model_dir(folder)
    params = load_model_params(folder, cfg, dtype=policy.param_dtype, scan_layers=policy.scan_layers)["talker"]
    rng = np.random.RandomState(11)
    d = cfg.talker.transformer.hidden_size
    x = rng.randn(2, 40, d).astype(np.float32)
    mask = np.ones((2, 40), bool)
    mask[1, :5] = False
    x[1, :5] = 0.0
    steps = rng.randn(24, 2, 1, d).astype(np.float32)
    talker = Talker(cfg.talker, policy)
    run = jax.jit(lambda e, m, c: talker.apply({"params": params}, e, m, c))
    logits = jax.jit(lambda h: talker.apply({"params": params}, h, method=Talker.logits))
    hidden, cache = run(jnp.asarray(x), jnp.asarray(mask), talker_cache(cfg.talker, policy, 2, 160))
    want = reference_talker_logits(ref, reference_talker_hidden(ref, x, mask, steps))
    ours = [np.asarray(logits(hidden))[mask]]
    for e in steps:
        h, cache = run(jnp.asarray(e), jnp.ones((2, 1), bool), cache)
        ours.append(np.asarray(logits(h))[:, 0])
    want = [want[0][mask]] + [w[:, 0] for w in want[1:]]
    return np.concatenate(ours), np.concatenate(want)


@pytest.mark.parametrize("policy", ["gpu", "cpu"])
@pytest.mark.parametrize("name", ["base-0b6-gqa", "custom-1b7-gqa"])
def test_talker_logits_within_bf16_bounds(tiny_model, name, policy):
    got, want = _talker_case(tiny_model, name, BF16[policy])
    assert got.dtype == np.float32
    rel = row_relative_error(got, want)
    top1 = topk_agreement(got, want, 1)
    print(
        f"[bf16] talker logits [{name}, {policy}]: {len(rel)} positions, rel. err p50 {np.median(rel):.2e} "
        f"p99 {np.quantile(rel, 0.99):.2e} max {rel.max():.2e}, top-1 agreement {top1:.3f}"
    )
    assert np.quantile(rel, 0.99) <= TALKER_REL_P99 and rel.max() <= TALKER_REL_MAX and top1 >= TALKER_TOP1


def test_bf16_logits_are_not_rounded_to_bf16(tiny_model):
    """The heads accumulate and return fp32: most logits are not bf16 values (a bf16 head
    output upcast afterwards would make every one of them exactly representable)."""
    got, _ = _talker_case(tiny_model, "base-0b6-gqa", BF16["gpu"])
    representable = np.asarray(jnp.asarray(got).astype(jnp.bfloat16).astype(jnp.float32)) == got
    assert representable.mean() < 0.05, representable.mean()


@pytest.mark.parametrize("name", ["base-0b6-gqa", "custom-1b7-gqa"])
def test_code_predictor_logits_within_bf16_bounds(tiny_model, name):
    """The 15 teacher-forced logit sets of 16 frames (random talker states and codes)."""
    policy = BF16["gpu"]
    ref, folder = tiny_model(name)
    cfg = Qwen3TTSConfig.from_model_dir(folder)
    params = load_model_params(folder, cfg, dtype=policy.param_dtype, scan_layers=policy.scan_layers)["talker"]
    rng = np.random.RandomState(12)
    past = rng.randn(16, cfg.talker.transformer.hidden_size).astype(np.float32)
    codes = rng.randint(0, 2048, (16, 16))
    with torch.no_grad():
        want, _ = ref.talker.forward_sub_talker_finetune(torch.tensor(codes), torch.tensor(past))
    got = np.asarray(subtalker_logits(cfg, policy, params, jnp.asarray(past), jnp.asarray(codes)))
    rel = row_relative_error(got, want.numpy())
    top1 = topk_agreement(got, want.numpy(), 1)
    print(
        f"[bf16] predictor logits [{name}]: {len(rel)} sets, rel. err p50 {np.median(rel):.2e} "
        f"p99 {np.quantile(rel, 0.99):.2e} max {rel.max():.2e}, top-1 agreement {top1:.3f}"
    )
    assert np.quantile(rel, 0.99) <= PREDICTOR_REL_P99 and top1 >= PREDICTOR_TOP1


@pytest.mark.slow
def test_codec_waveform_snr_within_bf16_bound(tmp_path_factory):
    """100 frames (past the 72-frame attention window), batch 2, against the reference's fp32
    chunked decode."""
    from qwen3tts_jax.codec.config import Qwen3TTSTokenizerV2Config
    from qwen3tts_jax.codec.decoder import chunked_decode
    from qwen3tts_jax.codec.weights import load_codec_params
    from tests.reference.codec_models import build_reference_tokenizer, codec_config_dict, save_reference_tokenizer

    policy = BF16["gpu"]
    model = build_reference_tokenizer(codec_config_dict(), seed=0)
    out = save_reference_tokenizer(model, tmp_path_factory.mktemp("codec") / "speech_tokenizer")
    cfg = Qwen3TTSTokenizerV2Config.from_model_dir(out).decoder
    params = load_codec_params(out, dtype=policy.param_dtype)["decoder"]
    codes = np.random.RandomState(13).randint(0, cfg.codebook_size, (2, cfg.num_quantizers, 100))
    with torch.no_grad():
        want = model.decoder.chunked_decode(torch.from_numpy(codes)).numpy()[:, 0]
    got = np.asarray(chunked_decode(params, jnp.asarray(codes, jnp.int32), cfg, policy), np.float32)
    snr = snr_db(got, want)
    print(f"[bf16] codec waveform 100 frames: SNR {snr:.1f} dB (signal rms {want.std():.3f})")
    assert snr >= CODEC_SNR_DB
