"""Attention over only the written prefix of a budget-sized KV cache (`attend_live`): equal to
attending over every slot, at op level, for the talker against the reference's cache, and for
end-to-end greedy codes."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import assert_close
from reference.talker_steps import reference_talker_hidden

from qwen3tts_jax.config import GenerationConfig, Policy, Qwen3TTSConfig
from qwen3tts_jax.engine import Engine, EngineShape, Request, request_keys
from qwen3tts_jax.nn.attention import attend, attend_live
from qwen3tts_jax.prompt import PromptRequest
from qwen3tts_jax.sampling import SamplingConfig
from qwen3tts_jax.sharding import Placement
from qwen3tts_jax.talker import Talker, talker_cache
from qwen3tts_jax.weights import load_model_params


@pytest.mark.parametrize("t,slots,block", [(1, 37, 8), (1, 24, 8), (5, 37, 16), (3, 20, 20)])
def test_attend_live_equals_attend(t, slots, block):
    rng = np.random.RandomState(t * 100 + slots)
    b, h, kv, x = 2, 4, 2, 16
    q = jnp.asarray(rng.randn(b, t, h, x).astype(np.float32))
    k = jnp.asarray(rng.randn(b, slots, kv, x).astype(np.float32))
    v = jnp.asarray(rng.randn(b, slots, kv, x).astype(np.float32))
    for live in sorted({t, block - 1, block, block + 1, slots - 3, slots}):
        if not t <= live <= slots:
            continue
        end = live - t
        valid = np.zeros((b, slots), bool)
        valid[:, :live] = True
        valid[1, :3] = False  # left padding of row 1
        causal = np.arange(slots)[None, :] <= (end + np.arange(t))[:, None]
        mask = valid[:, None, :] & causal[None]
        # Slots past `live` hold garbage that must never be read.
        k_dirty = k.at[:, live:].set(1e30) if live < slots else k
        want = attend(q, k, v, jnp.asarray(mask), x**-0.5)
        got = attend_live(q, k_dirty, v, jnp.asarray(mask), x**-0.5, jnp.asarray(live), block)
        rows = mask.any(-1)  # queries with at least one visible key
        assert_close(
            np.asarray(got)[rows],
            np.asarray(want)[rows],
            1e-5,
            f"attend_live t={t} s={slots} block={block} live={live}",
        )


@pytest.mark.reference
def test_blocked_talker_steps_match_reference(tiny_model):
    """Prefill + steps with 4-slot blocks (several blocks, a clamped last one) vs the reference."""
    ref, folder = tiny_model("base-0b6-gqa")
    cfg = Qwen3TTSConfig.from_model_dir(folder)
    params = load_model_params(folder, cfg)
    policy = Policy(attention_block=4)
    rng = np.random.RandomState(0)
    x = rng.randn(2, 7, cfg.talker.transformer.hidden_size).astype(np.float32)
    mask = np.ones((2, 7), bool)
    mask[0, :2] = False
    x[0, :2] = 0.0
    steps = rng.randn(5, 2, 1, cfg.talker.transformer.hidden_size).astype(np.float32)
    talker = Talker(cfg.talker, policy)
    apply = jax.jit(lambda e, m, c: talker.apply({"params": params["talker"]}, e, m, c))
    hidden, cache = apply(jnp.asarray(x), jnp.asarray(mask), talker_cache(cfg.talker, policy, 2, 14))
    want = reference_talker_hidden(ref, x, mask, steps)
    assert_close(np.asarray(hidden)[mask], want[0].numpy()[mask], 1e-4, "blocked talker prefill")
    for i, e in enumerate(steps):
        h, cache = apply(jnp.asarray(e), jnp.ones((2, 1), bool), cache)
        assert_close(h, want[i + 1].numpy(), 1e-4, f"blocked talker step {i}")


@pytest.mark.reference
@pytest.mark.slow
def test_blocked_generation_codes_identical(tiny_model):
    """Greedy codes with 8-slot attention blocks equal the reference's (and the unblocked run's)."""
    ref, folder = tiny_model("custom-0b6-gqa")
    cfg = Qwen3TTSConfig.from_model_dir(folder)
    params = load_model_params(folder, cfg)
    text = [151644, 77091, 198, 9707, 11, 1879, 0, 2585, 374, 279, 151645, 198, 151644, 77091, 198]
    reqs = [
        PromptRequest(tuple(text), "english", "serena", non_streaming_mode=True),
        PromptRequest(tuple(text[:5] + text[-5:]), "auto", "ryan", non_streaming_mode=True),
    ]
    g = GenerationConfig(do_sample=False, subtalker_dosample=False)
    out = {}
    for block in (8, 0):
        policy = Policy(attention_block=block)
        model = types.SimpleNamespace(config=cfg, policy=policy, params=params, placement=Placement())
        sampling = SamplingConfig.from_configs(g, cfg.talker)
        requests = [
            Request(r, sampling, 30, k, audio=False) for r, k in zip(reqs, request_keys(jax.random.PRNGKey(0), 2))
        ]
        out[block] = [r.codes for r in Engine(model, EngineShape.fit(requests, cfg, Placement())).run(requests)]
    with torch.no_grad():
        want, _ = ref.generate(
            input_ids=[torch.tensor([r.text_ids]) for r in reqs],
            languages=[r.language for r in reqs],
            speakers=[r.speaker for r in reqs],
            non_streaming_mode=True,
            max_new_tokens=30,
            do_sample=False,
            subtalker_dosample=False,
        )
    for i, w in enumerate(want):
        np.testing.assert_array_equal(out[8][i], w.numpy(), err_msg=f"row {i} vs reference")
        np.testing.assert_array_equal(out[8][i], out[0][i], err_msg=f"row {i} blocked vs unblocked")
    print(f"[codes] blocked attention: identical, frames {[len(c) for c in out[8]]}")
