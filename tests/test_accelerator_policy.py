"""The GPU/TPU program (`Policy.for_backend("gpu")`, fp32) built and run on CPU: the same parity
as the CPU program at the same tolerances, and checks that its own branches are what gets traced.

The CPU suite otherwise only ever compiles XLA:CPU's choices (unrolled layers, weight-stationary
small-batch products, fused few-query attention, a `lax.switch` predictor loop, a copied codec
state); an accelerator runs the other side of each switch. Tolerances: modules and logits ≤ 1e-4,
waveforms ≤ 1e-3, greedy codes identical (the suite's policy); bf16 is covered by test_bf16.py.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from reference.talker_steps import reference_talker_hidden, reference_talker_logits

from qwen3tts_jax import presets
from qwen3tts_jax.codec.config import Qwen3TTSTokenizerV2Config
from qwen3tts_jax.codec.decoder import chunked_decode, decode_codes
from qwen3tts_jax.codec.streaming import StreamingDecoder
from qwen3tts_jax.config import Policy, Qwen3TTSConfig
from qwen3tts_jax.finetune import subtalker_logits
from qwen3tts_jax.nn.attention import attend_live
from qwen3tts_jax.nn.linear import linear
from qwen3tts_jax.random_model import random_model_params
from qwen3tts_jax.talker import Talker, talker_cache
from qwen3tts_jax.weights import layout_model_params, load_model_params

GPU = Policy.for_backend("gpu")
CPU = Policy.for_backend("cpu")


def test_gpu_policy_fields():
    assert (GPU.scan_layers, GPU.matmul, GPU.few_query_attention, GPU.donate_codec_state, GPU.predictor_loop) == (
        True,
        "xla",
        False,
        True,
        "scan",
    )
    assert (CPU.scan_layers, CPU.matmul, CPU.few_query_attention, CPU.donate_codec_state, CPU.predictor_loop) == (
        False,
        "weight_stationary",
        True,
        False,
        "switch",
    )
    assert (GPU.codec_push_rows, CPU.codec_push_rows) == (0, 4)
    assert (GPU.snake_sine, CPU.snake_sine) == ("xla", "polynomial")
    with pytest.raises(ValueError, match=r"Policy.snake_sine must be 'polynomial' or 'xla', got 'fast'"):
        Policy(snake_sine="fast")
    assert Policy.for_backend("tpu") == GPU
    bf16 = Policy.for_backend("gpu", jnp.bfloat16)
    assert (
        bf16.dtype == bf16.param_dtype == jnp.bfloat16
        and dataclasses.replace(bf16, dtype=jnp.float32, param_dtype=jnp.float32) == GPU
    )
    with pytest.raises(ValueError, match=r"Policy.matmul must be 'weight_stationary' or 'xla', got 'tf32'"):
        Policy(matmul="tf32")
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match=rf"Policy.codec_push_rows must be an integer >= 0 .*got {bad!r}"):
            Policy(codec_push_rows=bad)
    with pytest.raises(ValueError, match=r"linear: form must be one of .* got 'fast'"):
        linear(jnp.ones((2, 3)), jnp.ones((4, 3)), form="fast")
    with pytest.raises(TypeError, match=r"Qwen3TTSModel.from_pretrained: policy must be a qwen3tts_jax.config.Policy"):
        Policy.resolve("gpu", None, "Qwen3TTSModel.from_pretrained")
    assert Policy.resolve(GPU, "bf16", "x").param_dtype == jnp.bfloat16 and Policy.resolve(GPU, None, "x") is GPU


# --------------------------------------------------------------------------------------------
# What is traced: each policy field reaches its op (these fail if a field were ignored)
# --------------------------------------------------------------------------------------------


def _prims(fn, *args) -> list[str]:
    """Every primitive of fn's jaxpr, sub-jaxprs (scan / while / cond bodies) included."""
    out = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            out.append(eqn.primitive.name)
            for value in eqn.params.values():
                for item in value if isinstance(value, (tuple, list)) else (value,):
                    sub = item if hasattr(item, "eqns") else getattr(item, "jaxpr", None)
                    if hasattr(sub, "eqns"):
                        walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return out


def test_linear_forms_trace_their_own_dot():
    x, w = jnp.ones((8, 32)), jnp.ones((48, 32))
    ws, xla = (
        _prims(lambda a, b: linear(a, b, form="weight_stationary"), x, w),
        _prims(lambda a, b: linear(a, b, form="xla"), x, w),
    )
    assert "optimization_barrier" in ws and "transpose" in ws
    assert "optimization_barrier" not in xla and "transpose" not in xla and xla.count("dot_general") == 1
    np.testing.assert_allclose(linear(x, w, form="xla"), linear(x, w), rtol=1e-6)


def test_attend_live_few_query_form_follows_the_flag():
    rng = np.random.RandomState(0)
    q = jnp.asarray(rng.randn(2, 1, 4, 16), jnp.float32)
    k, v = (jnp.asarray(rng.randn(2, 200, 2, 16), jnp.float32) for _ in range(2))
    mask = jnp.asarray(np.arange(200)[None, None] < np.array([150, 120])[:, None, None])
    run = lambda few: lambda *a: attend_live(*a, 0.25, jnp.asarray(150), 64, few)
    fused, dots = _prims(run(True), q, k, v, mask), _prims(run(False), q, k, v, mask)
    assert "dot_general" not in fused and "optimization_barrier" in fused
    assert dots.count("dot_general") == 2 and "optimization_barrier" not in dots
    assert_close(
        run(False)(q, k, v, mask), run(True)(q, k, v, mask), 1e-5, "attend_live: dots == fused multiply-reduce"
    )


def test_snake_sine_follows_the_policy():
    """The codec's SnakeBeta: the CPU program reduces the argument itself (`round`) and takes
    XLA's `sin` only in the out-of-range branch of a `cond`; the GPU program is XLA's `sin`."""
    from qwen3tts_jax.nn.activations import SnakeBeta

    x = jnp.linspace(-40.0, 40.0, 2 * 7 * 8).reshape(2, 7, 8)
    params = {"alpha": jnp.linspace(-0.5, 0.5, 8), "beta": jnp.linspace(0.3, -0.3, 8)}
    out = {}
    for name, policy in (("cpu", CPU), ("gpu", GPU)):
        mod = SnakeBeta(sine=policy.snake_sine)
        fn = lambda x, mod=mod: mod.apply({"params": params}, x)
        seen = _prims(fn, x)
        assert ("round" in seen and "cond" in seen) == (name == "cpu") and "sin" in seen
        out[name] = fn(x)
    assert_close(out["cpu"], out["gpu"], 1e-5, "SnakeBeta: polynomial sin² == XLA sin²")


def test_talker_and_predictor_programs_differ_by_policy():
    """A batch-2 decode step over a cache longer than the attention block, and the predictor's
    heads: the GPU program has no weight-stationary or fused-attention barrier, scans its layers;
    the CPU program has both barriers and no scan."""
    cfg = Qwen3TTSConfig.from_dict(presets.model_config("custom_voice", "tiny"))
    raw = random_model_params(cfg, 0)
    seen = {}
    for name, policy in (("cpu", CPU), ("gpu", GPU)):
        params = layout_model_params(raw, cfg, policy.scan_layers)["talker"]
        talker = Talker(cfg.talker, policy)
        cache = talker_cache(cfg.talker, policy, 2, 256)
        x = jnp.ones((2, 1, cfg.talker.transformer.hidden_size))

        def step(p, x, c, talker=talker):
            h, c = talker.apply({"params": p}, x, jnp.ones((2, 1), bool), c)
            return talker.apply({"params": p}, h, method=Talker.logits), c

        seen[name] = _prims(step, params, x, cache)
    assert "optimization_barrier" in seen["cpu"] and "scan" not in seen["cpu"]
    assert "optimization_barrier" not in seen["gpu"] and "scan" in seen["gpu"]


# --------------------------------------------------------------------------------------------
# Parity against the reference classes under the GPU policy
# --------------------------------------------------------------------------------------------


def _load(tiny_model, name):
    ref, folder = tiny_model(name)
    cfg = Qwen3TTSConfig.from_model_dir(folder)
    return ref, cfg, load_model_params(folder, cfg, scan_layers=GPU.scan_layers)


@pytest.mark.reference
@pytest.mark.parametrize("name", ["base-0b6-gqa", "custom-1b7-gqa"])
@pytest.mark.slow
def test_talker_prefill_and_steps_match_reference(tiny_model, name):
    """Prefill (batch 2, left padding) then 4 cached steps against the reference's DynamicCache
    decode; 160 cache slots > the 64-slot attention block, so the steps go through
    `attend_live` with per-head dots (the GPU form)."""

    ref, cfg, params = _load(tiny_model, name)
    rng = np.random.RandomState(0)
    d = cfg.talker.transformer.hidden_size
    x = rng.randn(2, 9, d).astype(np.float32)
    mask = np.ones((2, 9), bool)
    mask[1, :3] = False
    x[1, :3] = 0.0
    steps = rng.randn(4, 2, 1, d).astype(np.float32)
    talker = Talker(cfg.talker, GPU)
    run = jax.jit(lambda e, m, c: talker.apply({"params": params["talker"]}, e, m, c))
    logits = jax.jit(lambda h: talker.apply({"params": params["talker"]}, h, method=Talker.logits))
    hidden, cache = run(jnp.asarray(x), jnp.asarray(mask), talker_cache(cfg.talker, GPU, 2, 160))
    want = reference_talker_hidden(ref, x, mask, steps)
    want_logits = reference_talker_logits(ref, want)
    assert_close(np.asarray(hidden)[mask], want[0].numpy()[mask], 1e-4, f"gpu-policy talker prefill [{name}]")
    assert_close(
        np.asarray(logits(hidden))[mask], want_logits[0][mask], 1e-4, f"gpu-policy talker prefill logits [{name}]"
    )
    for i, e in enumerate(steps):
        h, cache = run(jnp.asarray(e), jnp.ones((2, 1), bool), cache)
        assert_close(logits(h), want_logits[i + 1], 1e-4, f"gpu-policy talker step {i} logits [{name}]")


@pytest.mark.reference
@pytest.mark.parametrize("name", ["base-0b6-gqa", "custom-1b7-gqa"])
def test_code_predictor_teacher_forced_logits_match_reference(tiny_model, name):
    import torch

    ref, cfg, params = _load(tiny_model, name)
    rng = np.random.RandomState(3)
    past = torch.tensor(rng.randn(2, cfg.talker.transformer.hidden_size).astype(np.float32))
    code0 = torch.tensor(rng.randint(0, 2048, (2, 1)))
    with torch.no_grad():
        e0_ref = ref.talker.model.codec_embedding(code0)
        codes15 = ref.talker.code_predictor.generate(
            inputs_embeds=torch.cat([past[:, None], e0_ref], 1),
            max_new_tokens=15,
            do_sample=False,
            return_dict_in_generate=True,
        ).sequences
        codes = torch.cat([code0, codes15], 1)
        want, _ = ref.talker.forward_sub_talker_finetune(codes, past)
    got = subtalker_logits(cfg, GPU, params["talker"], jnp.asarray(past.numpy()), jnp.asarray(codes.numpy()))
    assert_close(got, want.numpy(), 1e-4, f"gpu-policy code predictor 15 logit sets [{name}]")
    np.testing.assert_array_equal(np.argmax(np.asarray(got), -1), codes15.numpy())


GREEDY = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=8)
TEXTS = ["Hello world, how are you today?", "Guten Tag! 今天天气很好。"]


def _reference_api(folder):
    import torch
    from qwen_tts import Qwen3TTSModel as RefModel

    return RefModel.from_pretrained(str(folder), dtype=torch.float32, attn_implementation="eager")


def _compare(ours, ref, what):
    (ow, osr), (rw, rsr) = ours, ref
    assert osr == rsr == 24000 and len(ow) == len(rw)
    for i, (a, b) in enumerate(zip(ow, rw)):
        assert a.shape == b.shape, f"{what} item {i}: {a.shape} vs {b.shape} (frame counts differ: codes differ)"
        assert_close(a, b, 1e-3, f"{what} waveform {i}")


@pytest.mark.reference
@pytest.mark.slow
def test_greedy_custom_voice_matches_reference_api(tiny_full_model):
    """The public API with the whole GPU policy forced (`policy=`): scanned stacks, the scanned
    predictor loop, XLA dots; greedy codes identical (same frame counts), waveforms ≤ 1e-3."""
    from qwen3tts_jax import Qwen3TTSModel

    _, folder = tiny_full_model("custom-1b7-gqa")
    ours = Qwen3TTSModel.from_pretrained(folder, policy=GPU)
    assert ours.policy == GPU and ours.speech_tokenizer.policy == GPU
    kw = dict(speaker=["Eric", "vivian"], language=["Auto", "German"], instruct="Speak slowly and warmly.", **GREEDY)
    _compare(
        ours.generate_custom_voice(TEXTS, **kw),
        _reference_api(folder).generate_custom_voice(TEXTS, **kw),
        "gpu-policy custom voice",
    )


@pytest.mark.reference
@pytest.mark.slow
def test_greedy_voice_clone_icl_matches_reference_api(tiny_full_model):
    """ICL voice clone: the codec encoder (XLA dots) and speaker encoder run under the GPU policy too."""
    from qwen3tts_jax import Qwen3TTSModel

    _, folder = tiny_full_model("base-0b6-gqa")
    t = np.arange(int(1.3 * 16000)) / 16000
    f = 140 + 60 * np.sin(2 * np.pi * 1.3 * t)
    audio = (
        (0.4 * np.sin(2 * np.pi * np.cumsum(f) / 16000) + 0.05 * np.random.RandomState(0).randn(len(t))).astype(
            np.float32
        ),
        16000,
    )
    kw = dict(language="english", ref_audio=audio, ref_text="This is what the reference says.", **GREEDY)
    ours = Qwen3TTSModel.from_pretrained(folder, policy=GPU)
    _compare(
        ours.generate_voice_clone(TEXTS[0], **kw),
        _reference_api(folder).generate_voice_clone(TEXTS[0], **kw),
        "gpu-policy voice clone (ICL)",
    )


@pytest.mark.slow
def test_streaming_equals_offline_with_donated_codec_state():
    """Streaming under the GPU policy: the codec state is donated to each step."""
    from qwen3tts_jax import Qwen3TTSModel

    model = Qwen3TTSModel.from_pretrained("random:tiny", policy=GPU)
    kw = dict(max_new_tokens=12, seed=3)
    offline = model.generate_custom_voice("Streaming test here.", "serena", **kw)[0][0]
    chunks = [c for c, _ in model.stream_custom_voice("Streaming test here.", "serena", chunk_frames=3, **kw)]
    assert len(chunks) > 1
    # Both sides are our code: only the association order of chunked vs whole decoding differs.
    assert_close(np.concatenate(chunks), offline, 1e-4, "gpu-policy streaming vs offline waveform")


@pytest.fixture(scope="module")
def codec(tmp_path_factory):
    import torch

    from qwen3tts_jax.codec.weights import load_codec_params
    from tests.reference.codec_models import build_reference_tokenizer, codec_config_dict, save_reference_tokenizer

    torch.set_num_threads(2)
    model = build_reference_tokenizer(codec_config_dict(), seed=0)
    out = save_reference_tokenizer(model, tmp_path_factory.mktemp("codec") / "speech_tokenizer")
    return model, Qwen3TTSTokenizerV2Config.from_model_dir(out).decoder, load_codec_params(out)["decoder"]


@pytest.mark.reference
@pytest.mark.slow
def test_codec_chunked_decode_matches_reference(codec):
    """330 frames: two reference chunks (25 frames of re-decoded left context)."""
    import torch

    ref, cfg, params = codec
    codes = np.random.RandomState(330).randint(0, cfg.codebook_size, (2, cfg.num_quantizers, 330))
    with torch.no_grad():
        want = ref.decoder.chunked_decode(torch.from_numpy(codes)).numpy()[:, 0]
    got = chunked_decode(params, jnp.asarray(codes, jnp.int32), cfg, GPU)
    assert_close(got, want, 1e-3, "gpu-policy codec waveform T=330 (chunked decode)")


@pytest.mark.reference
def test_codec_streaming_with_donation_equals_one_shot(codec):
    _, cfg, params = codec
    codes = np.random.RandomState(7).randint(0, cfg.codebook_size, (2, cfg.num_quantizers, 96)).astype(np.int32)
    one_shot = np.asarray(decode_codes(params, jnp.asarray(codes), cfg, GPU))
    dec = StreamingDecoder(params, cfg, GPU, batch=2, reference_chunking=False)
    got = np.concatenate([dec.push(codes[..., i : i + 4]) for i in range(0, 96, 4)], -1)
    assert_close(got, one_shot, 1e-4, "gpu-policy codec stream (k=4, donated state) == one shot, 96 frames")
