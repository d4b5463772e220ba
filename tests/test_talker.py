"""Talker and code predictor vs the reference classes on tiny random-weight models (fp32)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import assert_close
from reference.talker_steps import reference_talker_hidden

from qwen3tts_jax.code_predictor import CodePredictor, predictor_cache
from qwen3tts_jax.config import Policy, Qwen3TTSConfig
from qwen3tts_jax.finetune import subtalker_logits
from qwen3tts_jax.nn.transformer import DecoderCache
from qwen3tts_jax.talker import Talker, talker_cache
from qwen3tts_jax.weights import load_model_params

pytestmark = pytest.mark.reference

VARIANTS = ["base-0b6-gqa", "base-1b7-mha", "custom-1b7-gqa"]


def _load(tiny_model, name, scan=False):
    ref, folder = tiny_model(name)
    cfg = Qwen3TTSConfig.from_model_dir(folder)
    policy = Policy(scan_layers=scan)
    return ref, cfg, policy, load_model_params(folder, cfg, scan_layers=scan)


def _prompt(cfg, batch=2, length=9, pads=(0, 3), seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randn(batch, length, cfg.talker.transformer.hidden_size).astype(np.float32)
    mask = np.ones((batch, length), bool)
    for row, n in enumerate(pads):
        mask[row, :n] = False
        x[row, :n] = 0.0  # the reference left-pads with zero vectors
    return x, mask


@pytest.mark.parametrize("name", VARIANTS)
def test_text_projection_matches(tiny_model, name):
    ref, cfg, policy, params = _load(tiny_model, name)
    ids = np.array([[151644, 77091, 198, 9707, 11, 1879, 0, 151671]])
    got = Talker(cfg.talker, policy).apply({"params": params["talker"]}, jnp.asarray(ids), method=Talker.embed_text)
    with torch.no_grad():
        want = ref.talker.text_projection(ref.talker.model.text_embedding(torch.tensor(ids))).numpy()
    assert_close(got, want, 1e-5, f"text projection [{name}]")


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("scan", [False, True])
def test_talker_prefill_matches_reference(tiny_model, name, scan):
    """Batch of 2 with left padding: hidden states (after the final norm) and logits at real positions."""
    ref, cfg, policy, params = _load(tiny_model, name, scan)
    x, mask = _prompt(cfg)
    talker = Talker(cfg.talker, policy)
    cache = talker_cache(cfg.talker, policy, 2, 16)
    hidden, _ = talker.apply({"params": params["talker"]}, jnp.asarray(x), jnp.asarray(mask), cache)
    logits = talker.apply({"params": params["talker"]}, hidden, method=Talker.logits)
    with torch.no_grad():
        out = ref.talker(
            inputs_embeds=torch.tensor(x), attention_mask=torch.tensor(mask).long(), output_hidden_states=True
        )
    ref_hidden = out.hidden_states[0][-1].numpy()  # the model's last hidden state, after norm
    assert_close(np.asarray(hidden)[mask], ref_hidden[mask], 1e-4, f"talker hidden [{name}, scan={scan}]")
    assert_close(np.asarray(logits)[mask], out.logits.numpy()[mask], 1e-4, f"talker logits [{name}, scan={scan}]")


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("scan", [False, True])
def test_packed_prefill_matches_each_prompt_alone(tiny_model, name, scan):
    """Three prompts packed end to end in one row, padding after them (`segment`, as an engine
    admission packs them), each against the reference run on that prompt alone: hidden states
    at its positions, then two decode steps from its KV slots cut out of the packed cache."""
    ref, cfg, policy, params = _load(tiny_model, name, scan)
    d, lengths = cfg.talker.transformer.hidden_size, (5, 9, 3)
    rng = np.random.RandomState(3)
    prompts = [rng.randn(1, n, d).astype(np.float32) for n in lengths]
    steps = rng.randn(2, 1, 1, d).astype(np.float32)
    starts = np.cumsum((0,) + lengths)
    x = np.zeros((1, 20, d), np.float32)
    segment = np.full((1, 20), -1, np.int32)
    for i, (e, a) in enumerate(zip(prompts, starts)):
        x[0, a : a + lengths[i]], segment[0, a : a + lengths[i]] = e[0], i
    talker = Talker(cfg.talker, policy)
    run = jax.jit(lambda e, m, c, s=None: talker.apply({"params": params["talker"]}, e, m, c, s))
    hidden, cache = run(jnp.asarray(x), jnp.asarray(segment >= 0), talker_cache(cfg.talker, policy, 1, 20), segment)
    for i, (e, a, n) in enumerate(zip(prompts, starts, lengths)):
        want = reference_talker_hidden(ref, e, np.ones((1, n), bool), steps)
        assert_close(hidden[0, a : a + n], want[0].numpy()[0], 1e-4, f"packed prompt {i} [{name}, scan={scan}]")

        # Its KV slots alone, from slot 0, in a fresh 16-slot cache (the layer axis first if scanned).
        def cut(kv, a=a, n=n):
            return (
                jnp.zeros_like(kv, shape=(*kv.shape[:-3], 16, *kv.shape[-2:]))
                .at[..., :n, :, :]
                .set(kv[..., a : a + n, :, :])
            )

        own = DecoderCache(jax.tree.map(cut, cache.layers), jnp.arange(16)[None] < n, jnp.asarray(n, jnp.int32))
        for j, e_step in enumerate(steps):
            h, own = run(jnp.asarray(e_step), jnp.ones((1, 1), bool), own)
            assert_close(h, want[j + 1].numpy(), 1e-4, f"packed prompt {i}, step {j} [{name}, scan={scan}]")


@pytest.mark.parametrize("name", VARIANTS)
def test_talker_decode_steps_match_reference_cache(tiny_model, name):
    """Prefill + N single steps against the reference's own DynamicCache decode."""
    ref, cfg, policy, params = _load(tiny_model, name)
    x, mask = _prompt(cfg, length=7, pads=(2, 0))
    steps = np.random.RandomState(5).randn(4, 2, 1, cfg.talker.transformer.hidden_size).astype(np.float32)
    talker = Talker(cfg.talker, policy)
    apply = jax.jit(lambda e, m, c: talker.apply({"params": params["talker"]}, e, m, c))
    hidden, cache = apply(jnp.asarray(x), jnp.asarray(mask), talker_cache(cfg.talker, policy, 2, 16))
    want = reference_talker_hidden(ref, x, mask, steps)
    assert_close(np.asarray(hidden)[mask], want[0].numpy()[mask], 1e-4, f"talker prefill [{name}]")
    for i, e in enumerate(steps):
        h, cache = apply(jnp.asarray(e), jnp.ones((2, 1), bool), cache)
        assert_close(h, want[i + 1].numpy(), 1e-4, f"talker step {i} [{name}]")


@pytest.mark.parametrize("name", VARIANTS)
def test_full_forward_equals_prefill_plus_steps(tiny_model, name):
    _, cfg, policy, params = _load(tiny_model, name)
    x, mask = _prompt(cfg, length=10, pads=(0, 4))
    talker = Talker(cfg.talker, policy)
    run = jax.jit(lambda e, m, c: talker.apply({"params": params["talker"]}, e, m, c))
    full, _ = run(jnp.asarray(x), jnp.asarray(mask), talker_cache(cfg.talker, policy, 2, 12))
    hidden, cache = run(jnp.asarray(x[:, :6]), jnp.asarray(mask[:, :6]), talker_cache(cfg.talker, policy, 2, 12))
    parts = [hidden]
    for t in range(6, 10):
        h, cache = run(jnp.asarray(x[:, t : t + 1]), jnp.asarray(mask[:, t : t + 1]), cache)
        parts.append(h)
    stepped = np.concatenate([np.asarray(p) for p in parts], axis=1)
    assert_close(stepped[mask], np.asarray(full)[mask], 1e-5, f"talker full == prefill+4 steps [{name}]")


@pytest.mark.parametrize("name", VARIANTS)
def test_scan_and_unrolled_agree(tiny_model, name):
    _, cfg, _, params = _load(tiny_model, name)
    _, _, _, stacked = _load(tiny_model, name, scan=True)
    x, mask = _prompt(cfg)
    outs = []
    for scan, p in [(False, params), (True, stacked)]:
        policy = Policy(scan_layers=scan)
        h, cache = Talker(cfg.talker, policy).apply(
            {"params": p["talker"]}, jnp.asarray(x), jnp.asarray(mask), talker_cache(cfg.talker, policy, 2, 12)
        )
        outs.append(np.asarray(h))
    # Same math, different XLA fusion: the two agree to float rounding, not bit for bit.
    assert_close(outs[1][mask], outs[0][mask], 1e-5, f"scanned vs unrolled talker [{name}]")


def _reference_frame_codes(ref, past_hidden, code0, seed):
    """A frame's 15 codes from the reference predictor's own greedy generate."""
    with torch.no_grad():
        e0 = ref.talker.model.codec_embedding(code0)
        out = ref.talker.code_predictor.generate(
            inputs_embeds=torch.cat([past_hidden[:, None], e0], 1),
            max_new_tokens=15,
            do_sample=False,
            output_hidden_states=False,
            return_dict_in_generate=True,
        )
    return out.sequences  # b 15


@pytest.mark.parametrize("name", VARIANTS)
def test_code_predictor_teacher_forced_logits(  # finetune.subtalker_logits
    tiny_model, name
):
    """The 15 logit sets of a frame with the reference's own codes fed in."""
    ref, cfg, policy, params = _load(tiny_model, name)
    rng = np.random.RandomState(3)
    b = 2
    past = torch.tensor(rng.randn(b, cfg.talker.transformer.hidden_size).astype(np.float32))
    code0 = torch.tensor(rng.randint(0, 2048, (b, 1)))
    codes15 = _reference_frame_codes(ref, past, code0, 0)
    codes = torch.cat([code0, codes15], 1)  # b 16
    with torch.no_grad():
        want, _ = ref.talker.forward_sub_talker_finetune(codes, past)
    got = subtalker_logits(cfg, policy, params["talker"], jnp.asarray(past.numpy()), jnp.asarray(codes.numpy()))
    assert_close(got, want.numpy(), 1e-4, f"code predictor 15 logit sets [{name}]")
    # The reference generated these codes greedily: each is the argmax of its own logit set.
    np.testing.assert_array_equal(np.argmax(np.asarray(got), -1), codes15.numpy())


@pytest.mark.parametrize("name", VARIANTS)
def test_code_predictor_stepwise_equals_full_forward(tiny_model, name):
    """Prefill of 2 + 14 cached single steps == the one-shot teacher-forced forward."""
    _, cfg, policy, params = _load(tiny_model, name)
    rng = np.random.RandomState(4)
    b, n = 2, cfg.talker.code_predictor.num_code_groups - 1
    past = jnp.asarray(rng.randn(b, cfg.talker.transformer.hidden_size).astype(np.float32))
    codes = jnp.asarray(rng.randint(0, 2048, (b, n + 1)))
    p_cp = {"params": params["talker"]["code_predictor"]}
    cp = CodePredictor(cfg.talker, policy)
    e0 = Talker(cfg.talker, policy).apply({"params": params["talker"]}, codes[:, :1], method=Talker.embed_codec)
    full = subtalker_logits(cfg, policy, params["talker"], past, codes)  # the training loss's teacher-forced forward
    cache = predictor_cache(cfg.talker, policy, b)
    h, cache = cp.apply(p_cp, jnp.stack([past, e0[:, 0]], 1), jnp.ones((b, 2), bool), cache)
    logits = [cp.apply(p_cp, 0, h[:, -1], method=CodePredictor.head)]
    for j in range(1, n):
        emb = cp.apply(p_cp, j - 1, codes[:, j : j + 1], method=CodePredictor.embed)
        h, cache = cp.apply(p_cp, emb, jnp.ones((b, 1), bool), cache)
        logits.append(cp.apply(p_cp, j, h[:, -1], method=CodePredictor.head))
    assert_close(jnp.stack(logits, 1), full, 1e-5, f"predictor prefill+14 steps == full [{name}]")


def test_policy_is_hashable_and_frozen():
    p = Policy()
    assert hash(p) == hash(Policy())
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.scan_layers = True  # type: ignore[misc]
