"""`apply_layer`: an unrolled stack traces its identical layers once, and gives what the layers
called one by one as Flax children give; `existing_param` checks shapes by name."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

from qwen3tts_jax.config import Policy, TransformerConfig
from qwen3tts_jax.nn.params import existing_param
from qwen3tts_jax.nn.transformer import DecoderStack, init_cache

CFG = TransformerConfig(
    hidden_size=48, intermediate_size=80, num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=2, head_dim=16
)


def _setup():
    policy = Policy(scan_layers=False, attention_block=0)
    stack = DecoderStack(CFG, policy)
    x = jnp.asarray(np.random.RandomState(0).randn(2, 7, CFG.hidden_size).astype(np.float32))
    mask = jnp.ones((2, 7), bool).at[0, :2].set(False)  # left padding in row 0
    cache = init_cache(CFG, policy, 2, 12)
    params = stack.init(jax.random.PRNGKey(1), x, mask, cache)["params"]
    return stack, params, x, mask, cache


@pytest.mark.slow
def test_layers_traced_once_and_equal_to_inline_children():
    stack, params, x, mask, cache = _setup()
    jaxpr = jax.make_jaxpr(lambda p: stack.apply({"params": p}, x, mask, cache))(params)
    calls = [e for e in jaxpr.jaxpr.eqns if e.primitive.name in ("pjit", "jit") and e.params.get("name") == "_apply"]
    assert len(calls) == CFG.num_hidden_layers, [e.params.get("name") for e in jaxpr.jaxpr.eqns]
    assert len({id(e.params["jaxpr"]) for e in calls}) == 1  # one trace serves every layer

    shared, _ = jax.jit(lambda p: stack.apply({"params": p}, x, mask, cache))(params)
    # capturing intermediates makes every layer run as an ordinary child module (inline)
    (inline, _), _ = jax.jit(
        lambda p: stack.apply({"params": p}, x, mask, cache, capture_intermediates=True, mutable=["intermediates"])
    )(params)
    rows = np.asarray(mask)  # padded query rows are never used
    assert_close(np.asarray(shared)[rows], np.asarray(inline)[rows], 1e-6, "apply_layer vs inline layers")


def test_existing_param_names_the_param_and_both_shapes():
    class Bad(nn.Module):
        @nn.compact
        def __call__(self, x):
            return x @ existing_param(self, "weight", nn.initializers.ones, (3, 4), jnp.float32)

    with pytest.raises(ValueError, match=r"param weight: expected shape \(3, 4\), got \(3, 5\)"):
        Bad().apply({"params": {"weight": jnp.ones((3, 5))}}, jnp.ones((2, 3)))
