"""Single ops vs the reference: RMSNorm, RoPE (incl. the M-RoPE reduction), text projection."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import assert_close

from qwen3tts_jax.nn.norms import rms_norm
from qwen3tts_jax.nn.rope import apply_rope, inv_frequencies, rope_tables

pytestmark = pytest.mark.reference


def test_rms_norm_matches_reference():
    from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSRMSNorm

    rng = np.random.RandomState(0)
    x = rng.randn(3, 5, 48).astype(np.float32) * 3
    ref = Qwen3TTSRMSNorm(48, eps=1e-6)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(1 + 0.3 * rng.randn(48).astype(np.float32)))
        want = ref(torch.tensor(x)).numpy()
    got = rms_norm(jnp.asarray(x), jnp.asarray(ref.weight.detach().numpy()), 1e-6)
    assert_close(got, want, 1e-5, "RMSNorm")


@pytest.mark.parametrize("head_dim,theta", [(128, 1e6), (128, 1e4), (64, 1e4), (16, 1e6)])
def test_inv_frequencies_match_reference_buffer(head_dim, theta):
    base = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    assert_close(
        inv_frequencies(head_dim, theta),
        base.numpy(),
        1e-12 + 1e-7 * float(base.max()),
        f"inv_freq d={head_dim} θ={theta:g}",
    )


def _talker_rotary(head_dim, mrope_section, theta=1e6):
    from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSTalkerConfig
    from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSTalkerRotaryEmbedding

    cfg = Qwen3TTSTalkerConfig(
        hidden_size=head_dim * 4,
        num_attention_heads=4,
        head_dim=head_dim,
        rope_theta=theta,
        rope_scaling={"interleaved": True, "mrope_section": mrope_section, "rope_type": "default"},
    )
    cfg.head_dim = head_dim
    return Qwen3TTSTalkerRotaryEmbedding(cfg)


@pytest.mark.parametrize("head_dim,section", [(128, [24, 20, 20]), (16, [3, 2, 3])])
def test_interleaved_mrope_with_identical_rows_is_plain_rope(head_dim, section):
    """The talker's rotary class + apply_multimodal_rotary_pos_emb (interleaved, three identical
    position rows, as every reference code path builds them) equals our plain rotate-half RoPE."""
    from qwen_tts.core.models.modeling_qwen3_tts import apply_multimodal_rotary_pos_emb

    rng = np.random.RandomState(1)
    b, t, h = 2, 37, 3
    positions = np.stack([np.arange(t) + 5, np.maximum(np.arange(t) - 4, 0)]).astype(np.int64)  # b t
    q = rng.randn(b, h, t, head_dim).astype(np.float32)
    k = rng.randn(b, h, t, head_dim).astype(np.float32)
    rotary = _talker_rotary(head_dim, section)
    pos3 = torch.tensor(positions)[None].expand(3, -1, -1)
    cos, sin = rotary(torch.tensor(q), pos3)
    rq, rk = apply_multimodal_rotary_pos_emb(torch.tensor(q), torch.tensor(k), cos, sin, section, True)
    ocos, osin = rope_tables(jnp.asarray(positions), head_dim, 1e6)
    oq = apply_rope(jnp.asarray(q.transpose(0, 2, 1, 3)), ocos, osin).transpose(0, 2, 1, 3)
    ok = apply_rope(jnp.asarray(k.transpose(0, 2, 1, 3)), ocos, osin).transpose(0, 2, 1, 3)
    assert_close(oq, rq.numpy(), 1e-5, f"M-RoPE→RoPE q (d={head_dim})")
    assert_close(ok, rk.numpy(), 1e-5, f"M-RoPE→RoPE k (d={head_dim})")


def test_rope_matches_predictor_rotary():
    from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSTalkerCodePredictorConfig
    from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSRotaryEmbedding, apply_rotary_pos_emb

    cfg = Qwen3TTSTalkerCodePredictorConfig(hidden_size=64, num_attention_heads=4, head_dim=16, rope_theta=1e6)
    rotary = Qwen3TTSRotaryEmbedding(cfg)
    rng = np.random.RandomState(2)
    q = rng.randn(1, 4, 16, 16).astype(np.float32)
    pos = np.arange(16)[None]
    cos, sin = rotary(torch.tensor(q), torch.tensor(pos))
    rq, _ = apply_rotary_pos_emb(torch.tensor(q), torch.tensor(q), cos, sin)
    ocos, osin = rope_tables(jnp.asarray(pos), 16, 1e6)
    oq = apply_rope(jnp.asarray(q.transpose(0, 2, 1, 3)), ocos, osin).transpose(0, 2, 1, 3)
    assert_close(oq, rq.numpy(), 1e-5, "predictor RoPE")
