"""Streaming decode (`qwen3tts_jax.codec.streaming`, the state of `codec/state.py`) == one-shot
decode of the same frames.

No torch needed: random params come straight from the key table. Tolerance: waveform outputs
≤ 1e-4 (stricter than the 1e-3 waveform policy: both sides are our own code, so only the
association order of chunked vs whole computations differs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen3tts_jax.codec.config import Qwen3TTSTokenizerV2Config
from qwen3tts_jax.codec.decoder import chunked_decode, decode_codes
from qwen3tts_jax.codec.state import DecoderState
from qwen3tts_jax.codec.streaming import StreamingDecoder, init_state, stream_step
from qwen3tts_jax.codec.weights import decoder_entries
from tests.conftest import assert_close
from tests.reference.codec_models import codec_config_dict

STREAM_TOL = 1e-4


def random_decoder_params(cfg, seed: int = 0) -> dict:
    """Seeded params for every decoder table entry (same scales as the reference builder:
    unit-scale vectors, positive codebook usage, waveform kept mostly inside the clamp)."""
    rng = np.random.RandomState(seed)
    tree: dict = {}
    for e in decoder_entries(cfg):
        leaf = e.key.rsplit(".", 1)[-1]
        if leaf == "cluster_usage":
            v = rng.uniform(0.5, 2.0, e.shape)
        elif leaf in ("alpha", "beta"):
            v = rng.randn(*e.shape) * 0.2
        elif leaf == "bias":
            v = rng.randn(*e.shape) * 0.1
        elif len(e.shape) == 1:
            v = 1.0 + rng.randn(*e.shape) * 0.1
        elif leaf == "embedding_sum":
            v = rng.randn(*e.shape)
        else:
            fan_in = np.prod(e.shape[1:]) if ".block.1." not in e.key and ".upsample." not in e.key else e.shape[0] * 2
            v = rng.randn(*e.shape) / np.sqrt(fan_in)
            if e.key.endswith("conv2.conv.weight"):
                v *= 0.3
        node = tree
        for name in e.target[1:-1]:
            node = node.setdefault(name, {})
        node[e.target[-1]] = jnp.asarray(v, jnp.float32)
    last = f"decoder_{len(cfg.upsample_rates) + 2}"
    tree[last]["conv"]["weight"] = tree[last]["conv"]["weight"] * 0.2
    return tree


@pytest.fixture(scope="module")
def setup():
    cfg = Qwen3TTSTokenizerV2Config.from_dict(codec_config_dict()).decoder
    return cfg, random_decoder_params(cfg, seed=1)


def _codes(cfg, t: int, seed: int, batch: int = 2) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, cfg.codebook_size, (batch, cfg.num_quantizers, t)).astype(np.int32)


def _conv_paths(tree: dict, path: str = ""):
    """(param path, weight) of every conv module (`.../conv/weight`) in a decoder param tree."""
    for name, sub in tree.items():
        here = f"{path}/{name}" if path else name
        if name == "conv" and "weight" in sub:
            yield path, sub["weight"]
        elif isinstance(sub, dict):
            yield from _conv_paths(sub, here)


def test_state_structure_matches_the_step(setup):
    """The state the step returns has init_state's tree, shapes and dtypes; positions advance per
    row; its histories are keyed by the param paths of exactly the convs that see the past
    (kernel > 1, except the ConvNeXt upsamplers' transposed convs with kernel = stride), and the
    attention window is sliding_window - 1 frames."""
    cfg, params = setup
    state = init_state(cfg, 2)
    assert isinstance(state, DecoderState)
    shapes = jax.tree.map(lambda a: (a.shape, a.dtype), state)
    _, new = stream_step(params, init_state(cfg, 2), jnp.asarray(_codes(cfg, 3, 0)), cfg)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), new) == shapes
    np.testing.assert_array_equal(np.asarray(new.pos), [3, 3])
    want = {
        p for p, w in _conv_paths(params) if w.shape[-1] > 1 and not p.startswith("upsample_") or p.endswith("/dwconv")
    }
    assert set(state.history) == want
    assert all(h.shape[0] == 2 and h.shape[1] > 0 for h in state.history.values())
    assert state.history["decoder_1/block_4/conv1"].shape[1] == 6 * 9  # k7, dilation 9
    assert len(state.kv) == cfg.num_hidden_layers
    assert state.kv[0].k.shape == (2, cfg.sliding_window - 1, cfg.num_key_value_heads, cfg.head_dim)


@pytest.mark.slow
def test_state_rows_gather_reset_and_scatter(setup):
    cfg, _ = setup
    state = jax.tree.map(lambda a: jnp.arange(a.size, dtype=a.dtype).reshape(a.shape) + 1, init_state(cfg, 3))
    sub = state.take(jnp.array([2, 0, 3]))  # 3: a bucket's padding row, reads as zeros
    assert sub.batch == 3
    for a, b in zip(jax.tree.leaves(sub), jax.tree.leaves(state)):
        np.testing.assert_array_equal(a[:2], b[jnp.array([2, 0])])
        assert not np.asarray(a[2]).any()
    fresh = sub.reset(jnp.array([True, False, False]))
    for a, b in zip(jax.tree.leaves(fresh), jax.tree.leaves(sub)):
        assert not np.asarray(a[0]).any() and np.array_equal(a[1:], b[1:])
    back = state.put(jnp.array([2, 0, 3]), fresh)  # row 3 out of range: dropped
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(state)):
        assert not np.asarray(a[2]).any() and np.array_equal(a[:2], b[:2])


@pytest.mark.slow
def test_stream_equals_one_shot_within_window_and_beyond(setup):
    """128 frames (> the 72-frame window, ≤ one 300-frame chunk) fed in uneven pieces (128: the
    one-shot shape is a chunk bucket, compiled once per session)."""
    cfg, params = setup
    codes = _codes(cfg, 128, seed=2)
    one_shot = np.asarray(decode_codes(params, jnp.asarray(codes), cfg))
    print(f"[info] waveform std {one_shot.std():.3f}, clamped {np.mean(np.abs(one_shot) >= 1):.3f}")
    sizes = [1] * 80 + [4] * 8 + [1] * 16  # 128 frames
    dec = StreamingDecoder(params, cfg, batch=2, reference_chunking=False)
    pieces, at = [], 0
    for k in sizes:
        out = dec.push(codes[..., at : at + k])
        assert out.shape == (2, k * cfg.total_upsample)
        pieces.append(out)
        at += k
    assert at == 128
    assert_close(np.concatenate(pieces, -1), one_shot, STREAM_TOL, "stream (k=1/4) == one-shot, 128 frames")


@pytest.mark.slow
def test_reference_chunking_stream_equals_chunked_decode(setup):
    """Past a 300-frame boundary the stream reproduces the reference's chunked decode."""
    cfg, params = setup
    codes = _codes(cfg, 330, seed=3)
    want = np.asarray(chunked_decode(params, jnp.asarray(codes), cfg))
    dec = StreamingDecoder(params, cfg, batch=2, reference_chunking=True)
    got = np.concatenate([dec.push(codes[..., i : i + 25]) for i in range(0, 330, 25)], -1)
    assert_close(got, want, STREAM_TOL, "reference-chunked stream (k=25) == chunked_decode, 330 frames")
    plain = StreamingDecoder(params, cfg, batch=2, reference_chunking=False)
    unchunked = np.concatenate([plain.push(codes[..., i : i + 25]) for i in range(0, 330, 25)], -1)
    up = cfg.total_upsample
    assert np.abs(unchunked[:, 300 * up :] - want[:, 300 * up :]).max() > 1e-2  # documented difference


def test_push_rejects_wrong_shape(setup):
    cfg, params = setup
    dec = StreamingDecoder(params, cfg, batch=1)
    with pytest.raises(ValueError, match=r"codes must be \(1, 16, k\)"):
        dec.push(np.zeros((2, 16, 1), np.int32))
