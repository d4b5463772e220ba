"""End-to-end codes vs the reference's `generate` (greedy), all voice modes and both text modes;
batching, seeded sampling, eager vs jitted, and the compile count."""

from __future__ import annotations

import types

import jax
import numpy as np
import pytest
import torch

from qwen3tts_jax import generate as gen_mod
from qwen3tts_jax.config import GenerationConfig, Policy, Qwen3TTSConfig
from qwen3tts_jax.engine import Engine, EngineShape, Request, request_keys
from qwen3tts_jax.prompt import PromptRequest
from qwen3tts_jax.sampling import SamplingConfig
from qwen3tts_jax.sharding import Placement
from qwen3tts_jax.weights import load_model_params

pytestmark = pytest.mark.reference

ROLE, TAIL = [151644, 77091, 198], [151645, 198, 151644, 77091, 198]
TEXT_A = ROLE + [9707, 11, 1879, 0, 2585, 374, 279] + TAIL
TEXT_B = ROLE + [3838, 374] + TAIL
REF_TEXT = [151644, 77091, 198, 40, 1079, 1588, 151645, 198]
INSTRUCT = [151644, 872, 198, 32, 6554, 8251, 151645, 198]
N = 10  # max_new_tokens


def _setup(tiny_model, name, do_sample=False, scan=False):
    """The reference model, and ours as the engine sees a model (codes only: no codec)."""
    ref, folder = tiny_model(name)
    cfg = Qwen3TTSConfig.from_model_dir(folder)
    policy = Policy(scan_layers=scan)
    params = load_model_params(folder, cfg, scan_layers=scan)
    model = types.SimpleNamespace(config=cfg, policy=policy, params=params, placement=Placement())
    g = GenerationConfig(do_sample=do_sample, subtalker_dosample=do_sample)
    return ref, model, SamplingConfig.from_configs(g, cfg.talker)


def _ours(model, sampling, requests, key=0, max_new_tokens=N):
    reqs = [
        Request(r, sampling, max_new_tokens, k, audio=False)
        for r, k in zip(requests, request_keys(jax.random.PRNGKey(key), len(requests)))
    ]
    engine = Engine(model, EngineShape.fit(reqs, model.config, model.placement))
    return [r.codes for r in engine.run(reqs)]


def _reference(ref, requests, voice_clone_prompt=None, **kw):
    ids = [torch.tensor([r.text_ids]) for r in requests]
    instruct = [torch.tensor([r.instruct_ids]) if r.instruct_ids else None for r in requests]
    ref_ids = [torch.tensor([r.ref_text_ids]) if r.ref_text_ids else None for r in requests]
    speakers = [r.speaker for r in requests] if any(r.speaker for r in requests) else None
    with torch.no_grad():
        codes, _ = ref.generate(
            input_ids=ids,
            instruct_ids=instruct if any(i is not None for i in instruct) else None,
            ref_ids=ref_ids if any(i is not None for i in ref_ids) else None,
            voice_clone_prompt=voice_clone_prompt,
            languages=[r.language for r in requests],
            speakers=speakers,
            non_streaming_mode=requests[0].non_streaming_mode,
            max_new_tokens=kw.get("max_new_tokens", N),
            do_sample=False,
            subtalker_dosample=False,
        )
    return [c.numpy() for c in codes]


def _assert_same(ours, ref, what):
    assert len(ours) == len(ref)
    for i, (o, r) in enumerate(zip(ours, ref)):
        assert o.shape == r.shape, f"{what} row {i}: {o.shape} frames vs reference {r.shape}"
        np.testing.assert_array_equal(o, r, err_msg=f"{what} row {i}")
    print(f"[codes] {what}: identical, frames {[o.shape[0] for o in ours]}")


@pytest.mark.parametrize("non_streaming", [True, False])
@pytest.mark.parametrize("name", ["custom-0b6-gqa", "custom-1b7-gqa"])
def test_custom_voice_codes_identical(tiny_model, name, non_streaming):
    ref, model, dec = _setup(tiny_model, name)
    instruct = tuple(INSTRUCT) if model.config.tts_model_size == "1b7" else None
    reqs = [
        PromptRequest(
            tuple(TEXT_A), "auto", "eric", instruct_ids=instruct, non_streaming_mode=non_streaming
        ),  # dialect override
        PromptRequest(tuple(TEXT_B), "english", "Serena", non_streaming_mode=non_streaming),
    ]
    _assert_same(
        _ours(model, dec, reqs), _reference(ref, reqs), f"custom voice [{name}, non_streaming={non_streaming}]"
    )


@pytest.mark.parametrize("non_streaming", [True, False])
def test_voice_design_codes_identical(tiny_model, non_streaming):
    ref, model, dec = _setup(tiny_model, "design-1b7-gqa")
    reqs = [
        PromptRequest(tuple(TEXT_A), "chinese", instruct_ids=tuple(INSTRUCT), non_streaming_mode=non_streaming),
        PromptRequest(
            tuple(TEXT_B), "auto", instruct_ids=tuple(INSTRUCT[:3] + INSTRUCT[-2:]), non_streaming_mode=non_streaming
        ),
    ]
    _assert_same(_ours(model, dec, reqs), _reference(ref, reqs), f"voice design [non_streaming={non_streaming}]")


def _clone_inputs(cfg, icl, non_streaming, seed=0):
    rng = np.random.RandomState(seed)
    d = cfg.talker.transformer.hidden_size
    spk = [rng.randn(d).astype(np.float32) for _ in range(2)]
    # Reference codes of different lengths: one shorter and one longer than the text (both ICL branches).
    ref_codes = [rng.randint(0, 2048, (3, 16)), rng.randint(0, 2048, (14, 16))] if icl else [None, None]
    reqs = [
        PromptRequest(
            tuple(t),
            lang,
            speaker_embedding=s,
            ref_text_ids=tuple(REF_TEXT) if icl else None,
            ref_code=c,
            non_streaming_mode=non_streaming,
        )
        for t, lang, s, c in zip([TEXT_A, TEXT_B], ["english", "auto"], spk, ref_codes)
    ]
    vcp = {
        "ref_code": [torch.tensor(c) if c is not None else None for c in ref_codes],
        "ref_spk_embedding": [torch.tensor(s) for s in spk],
        "x_vector_only_mode": [not icl] * 2,
        "icl_mode": [icl] * 2,
    }
    return reqs, vcp


@pytest.mark.parametrize("icl", [True, False])
@pytest.mark.parametrize("non_streaming", [True, False])
@pytest.mark.parametrize("name", ["base-0b6-gqa", "base-1b7-mha"])
def test_voice_clone_codes_identical(tiny_model, name, icl, non_streaming):
    ref, model, dec = _setup(tiny_model, name)
    reqs, vcp = _clone_inputs(model.config, icl, non_streaming)
    _assert_same(
        _ours(model, dec, reqs),
        _reference(ref, reqs, vcp),
        f"voice clone [{name}, icl={icl}, non_streaming={non_streaming}]",
    )


@pytest.mark.slow
def test_batch_equals_single_runs(tiny_model):
    _, model, dec = _setup(tiny_model, "custom-0b6-gqa")
    reqs = [PromptRequest(tuple(TEXT_A), "german", "aiden"), PromptRequest(tuple(TEXT_B), "auto", "dylan")]
    both = _ours(model, dec, reqs)
    for i, r in enumerate(reqs):
        np.testing.assert_array_equal(both[i], _ours(model, dec, [r])[0])


@pytest.mark.slow
def test_scanned_decoding_matches_unrolled(tiny_model):
    _, model, dec = _setup(tiny_model, "custom-1b7-gqa")
    _, model_s, dec_s = _setup(tiny_model, "custom-1b7-gqa", scan=True)
    reqs = [PromptRequest(tuple(TEXT_A), "auto", "vivian")]
    a = _ours(model, dec, reqs)
    b = _ours(model_s, dec_s, reqs)
    np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.slow
def test_sampling_is_reproducible_per_seed(tiny_model):
    _, model, dec = _setup(tiny_model, "custom-0b6-gqa", do_sample=True)
    reqs = [PromptRequest(tuple(TEXT_A), "auto", "ryan")]
    a = _ours(model, dec, reqs, key=1)
    b = _ours(model, dec, reqs, key=1)
    c = _ours(model, dec, reqs, key=2)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[0].shape != c[0].shape or not np.array_equal(a[0], c[0])


@pytest.mark.slow
def test_eager_and_jitted_paths_agree(tiny_model):
    """The eager twin: the same engine and steps with jit disabled, op by op."""
    _, model, dec = _setup(tiny_model, "custom-0b6-gqa", do_sample=True)
    reqs = [PromptRequest(tuple(TEXT_B), "auto", "sohee")]
    jitted = _ours(model, dec, reqs, key=3)
    with jax.disable_jit():
        eager = _ours(model, dec, reqs, key=3)
    np.testing.assert_array_equal(eager[0], jitted[0])


def _compiles(model, dec):
    return gen_mod.compile_count(gen_mod.FrameSampler(model.config, model.policy, dec.program(), model.placement))


def test_no_recompilation_within_a_bucket(tiny_model):
    _, model, dec = _setup(tiny_model, "custom-0b6-gqa")
    for nsm in (True, False):  # warm both prompt-length buckets (non-streaming prompts hold all the text)
        _ours(model, dec, [PromptRequest(tuple(TEXT_A), "auto", "ryan", non_streaming_mode=nsm)])
    before = _compiles(model, dec)
    for text in [TEXT_B, ROLE + [11] * 3 + TAIL, TEXT_A[:-5] + [15, 16] + TAIL]:
        for nsm in (True, False):
            _ours(model, dec, [PromptRequest(tuple(text), "french", "ryan", non_streaming_mode=nsm)])
    assert _compiles(model, dec) == before


def test_prompt_buckets_share_the_frame_loop(tiny_model):
    """A prompt in another length bucket compiles its own admission, not another frame loop:
    the cache slots are rounded up (`cache_slots`) and the text track's bucket is coarse."""
    _, model, dec = _setup(tiny_model, "custom-0b6-gqa")
    long_text = ROLE + [9707, 11, 1879] * 15 + TAIL  # 50 text ids: other prompt and text-track buckets than TEXT_A
    for nsm in (True, False):
        _ours(model, dec, [PromptRequest(tuple(TEXT_A), "auto", "ryan", non_streaming_mode=nsm)])
    before = _compiles(model, dec)
    for nsm in (True, False):
        _ours(model, dec, [PromptRequest(tuple(long_text), "auto", "ryan", non_streaming_mode=nsm)])
    after = _compiles(model, dec)
    assert after["admit"] > before["admit"], (before, after)  # the new bucket is real
    assert after["advance"] == before["advance"], (before, after)


def test_max_new_tokens_bounds_frames(tiny_model):
    _, model, dec = _setup(tiny_model, "custom-0b6-gqa")
    for m in (1, 2, 5):
        out = _ours(model, dec, [PromptRequest(tuple(TEXT_A), "auto", "ryan")], max_new_tokens=m)
        assert out[0].shape[0] <= m - 1 and out[0].shape[1] == 16
    with pytest.raises(ValueError, match="max_new_tokens"):
        _ours(model, dec, [PromptRequest(tuple(TEXT_A), "auto", "ryan")], max_new_tokens=0)
