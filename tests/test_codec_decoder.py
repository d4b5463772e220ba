"""Parity of the codec decoder (`qwen3tts_jax.codec.decoder`, `nn/conv.py`, `nn/activations.py`,
`codec/quantizer.py`) against the official `Qwen3TTSTokenizerV2Decoder`, fp32.

Tolerances (policy): single ops ≤ 1e-5, modules / intermediate stages ≤ 1e-4, waveform ≤ 1e-3.
Every test runs batch 2 so the chunk shapes (buckets 32, 64, 128, 325) compile once and are shared.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen3tts_jax.codec.config import Qwen3TTSTokenizerV2Config
from qwen3tts_jax.codec.decoder import Qwen3TTSTokenizerV2Decoder, chunked_decode, decode, decode_codes
from qwen3tts_jax.codec.quantizer import codebook_embedding, dequantize, nearest_code, residual_quantize
from qwen3tts_jax.codec.weights import load_codec_params
from qwen3tts_jax.nn.activations import POLYNOMIAL_LIMIT, SINES, sin_squared, snake_beta
from qwen3tts_jax.nn.conv import causal_padding, conv1d, conv_transpose1d, to_hio, transposed_to_hio
from tests.conftest import assert_close
from tests.reference.codec_models import REAL_UPSAMPLE_RATES, codec_config_dict

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.reference

OP_TOL, MODULE_TOL, WAVE_TOL = 1e-5, 1e-4, 1e-3


def _nwc(t) -> np.ndarray:
    """torch (b, c, t) → numpy (b, t, c)."""
    return t.detach().numpy().transpose(0, 2, 1)


class Tiny:
    """A reference tokenizer and our loaded params for one config."""

    def __init__(self, tmp_path_factory, seed: int, **sizes):
        from tests.reference.codec_models import build_reference_tokenizer, save_reference_tokenizer

        torch.set_num_threads(2)
        self.model = build_reference_tokenizer(codec_config_dict(**sizes), seed=seed)
        out = save_reference_tokenizer(self.model, tmp_path_factory.mktemp("codec") / "speech_tokenizer")
        self.cfg = Qwen3TTSTokenizerV2Config.from_model_dir(out)
        self.dcfg = self.cfg.decoder
        self.params = load_codec_params(out)
        self.dec = self.params["decoder"]

    def codes(self, t: int, seed: int, batch: int = 2) -> np.ndarray:
        rng = np.random.RandomState(seed)
        return rng.randint(0, self.dcfg.codebook_size, (batch, self.dcfg.num_quantizers, t)).astype(np.int64)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return Tiny(tmp_path_factory, seed=0)


# --------------------------------------------------------------------------------------------
# Single ops (≤ 1e-5)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cin,cout,k,stride,dilation,groups",
    [
        (6, 10, 7, 1, 1, 1),
        (8, 8, 7, 1, 9, 1),
        (12, 12, 7, 1, 1, 12),
        (6, 10, 4, 2, 1, 1),
        (5, 7, 8, 4, 1, 1),
        (6, 4, 1, 1, 1, 1),
    ],
)
def test_causal_conv1d_matches_reference_causal_convnet(cin, cout, k, stride, dilation, groups):
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2CausalConvNet

    torch.manual_seed(0)
    ref = Qwen3TTSTokenizerV2CausalConvNet(cin, cout, k, dilation=dilation, stride=stride, groups=groups)
    for length in (1, 13, 50):
        x = torch.randn(2, cin, length)
        with torch.no_grad():
            want = _nwc(ref(x))
        w, b = ref.conv.weight.detach().numpy(), ref.conv.bias.detach().numpy()
        pad = causal_padding(length, k, stride, dilation)
        got = conv1d(jnp.asarray(_nwc(x)), w, b, stride=stride, dilation=dilation, groups=groups, padding=pad)
        assert_close(got, want, OP_TOL, f"CausalConvNet({cin},{cout},k{k},s{stride},d{dilation},g{groups}) L={length}")
        hio = conv1d(
            jnp.asarray(_nwc(x)),
            to_hio(w),
            b,
            stride=stride,
            dilation=dilation,
            groups=groups,
            padding=pad,
            kernel_layout="HIO",
        )
        assert_close(hio, want, OP_TOL, "  ... HIO kernel layout")


def test_replicate_padding_matches_mimi_downsample():
    """Mimi's downsample conv (replicate padding both sides, stride 2) — used by the encoder."""
    from transformers import MimiConfig
    from transformers.models.mimi.modeling_mimi import MimiConv1d

    from qwen3tts_jax.nn.conv import CausalConv1d

    torch.manual_seed(1)
    ref = MimiConv1d(MimiConfig(), 6, 6, kernel_size=4, stride=2, bias=False, pad_mode="replicate")
    mod = CausalConv1d(6, 4, stride=2, use_bias=False, pad_mode="replicate")
    params = {"params": {"conv": {"weight": ref.conv.weight.detach().numpy()}}}
    for length in (7, 20):
        x = torch.randn(2, 6, length)
        with torch.no_grad():
            want = _nwc(ref(x))
        assert_close(mod.apply(params, jnp.asarray(_nwc(x))), want, OP_TOL, f"MimiConv1d replicate k4 s2 L={length}")


@pytest.mark.parametrize("cin,cout,k,stride", [(6, 5, 16, 8), (4, 6, 6, 3), (8, 8, 2, 2), (3, 4, 5, 2), (4, 4, 3, 1)])
def test_conv_transpose1d_matches_reference_causal_trans_convnet(cin, cout, k, stride):
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2CausalTransConvNet

    torch.manual_seed(2)
    ref = Qwen3TTSTokenizerV2CausalTransConvNet(cin, cout, k, stride)
    w, b = ref.conv.weight.detach().numpy(), ref.conv.bias.detach().numpy()
    for length in (1, 9, 31):
        x = torch.randn(2, cin, length)
        with torch.no_grad():
            want = _nwc(ref(x))
        got = conv_transpose1d(jnp.asarray(_nwc(x)), w, b, stride=stride)
        assert got.shape == (2, length * stride, cout)
        assert_close(got, want, OP_TOL, f"CausalTransConvNet({cin},{cout},k{k},s{stride}) L={length}")
        hio = conv_transpose1d(
            jnp.asarray(_nwc(x)), transposed_to_hio(w, stride), b, stride=stride, kernel_layout="HIO"
        )
        assert_close(hio, want, OP_TOL, "  ... HIO polyphase kernel")


@pytest.mark.parametrize("sine", SINES)
@pytest.mark.parametrize("scale", [3.0, 300.0, 3e6])
def test_snake_beta_matches_reference(sine, scale):
    """Both `sin²` forms, over inputs up to beyond the polynomial's range (3e6 > 2^20: the
    fallback through XLA's `sin` for the elements there). OP_TOL is absolute: at 3e6 it is
    relative to x itself, so the large case checks the small elements of the same tensor too."""
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import SnakeBeta

    torch.manual_seed(3)
    ref = SnakeBeta(16)
    with torch.no_grad():
        ref.alpha.normal_(0, 0.5)
        ref.beta.normal_(0, 0.5)
        x = torch.randn(2, 16, 40) * 3
        x[0, :, :4] *= scale / 3  # a few elements at the scale, the rest ordinary
        want = _nwc(ref(x))
    got = jax.jit(snake_beta, static_argnums=3)(
        jnp.asarray(_nwc(x)), ref.alpha.detach().numpy(), ref.beta.detach().numpy(), sine
    )
    small = np.abs(_nwc(x)) < 100
    assert_close(np.asarray(got)[small], want[small], OP_TOL, f"SnakeBeta sine={sine}")
    # large |x|: sin² is in [0, 1], so agreement is |x|·eps plus the sin² error
    assert_close(got, want, OP_TOL + 4 * float(np.finfo(np.float32).eps) * float(np.abs(want).max()), "SnakeBeta")


@pytest.mark.parametrize("scale", [1.0, 50.0, 1e4, 1e6, 1e8])
def test_sin_squared_polynomial_is_within_rounding_of_the_exact_value(scale):
    """The vectorised `sin²` against float64 over ±scale, and next to XLA's own `sin`: within
    3e-7 (≈2.5 ulp of 1; XLA's is ≈9e-8) at every scale, the 1e8 one through the fallback."""
    rng = np.random.default_rng(int(scale) % 97)
    y = ((rng.random(200_000) * 2 - 1) * scale).astype(np.float32)
    y[:3] = [0.0, np.pi / 2, -np.pi]
    exact = np.sin(y.astype(np.float64)) ** 2
    got = np.asarray(jax.jit(sin_squared)(jnp.asarray(y)), np.float64)
    xla = np.asarray(jax.jit(sin_squared, static_argnums=1)(jnp.asarray(y), "xla"), np.float64)
    assert np.abs(xla - exact).max() <= 1.5e-7
    assert np.abs(got - exact).max() <= 3e-7, np.abs(got - exact).max()
    big = jnp.asarray(np.float32(POLYNOMIAL_LIMIT * 4))  # the fallback itself, element by element
    assert float(sin_squared(big)) == pytest.approx(np.sin(np.float64(np.float32(big))) ** 2, abs=1.5e-7)


def test_sin_squared_rejects_an_unknown_form():
    with pytest.raises(ValueError, match="sine must be one of .*'taylor'"):
        sin_squared(jnp.zeros(3), "taylor")


def test_dequantize_matches_split_rvq_decode(tiny):
    codes = tiny.codes(40, seed=1)
    codes[0, :, 3] = 0
    with torch.no_grad():
        want = _nwc(tiny.model.decoder.quantizer.decode(torch.from_numpy(codes)))
    got = jax.jit(dequantize)(tiny.dec["quantizer"], jnp.asarray(codes, jnp.int32))
    assert_close(got, want, OP_TOL, "dequantised latents (split RVQ)")


def test_nearest_code_and_rvq_encode_match_mimi(tiny):
    """The encoder-side helpers against `MimiResidualVectorQuantizer.encode` (acoustic group)."""
    rvq = tiny.model.encoder.quantizer.acoustic_residual_vector_quantizer
    enc = tiny.params["encoder"]["quantizer"]["acoustic_residual_vector_quantizer"]
    n = 15
    torch.manual_seed(4)
    x = torch.randn(2, tiny.cfg.encoder.hidden_size, 30)
    with torch.no_grad():
        want = rvq.encode(x, num_quantizers=n).numpy()  # n b t
        z = rvq.input_proj(x)
    sums = [enc[f"layers_{j}"]["codebook"]["embed_sum"] for j in range(n)]
    usages = [enc[f"layers_{j}"]["codebook"]["cluster_usage"] for j in range(n)]
    got = np.asarray(jax.jit(residual_quantize)(jnp.asarray(_nwc(z)), sums, usages))
    mismatch = int((got != want).sum())
    print(f"[parity] RVQ encode: {mismatch} of {got.size} codes differ")
    assert mismatch == 0
    table = codebook_embedding(sums[0], usages[0])
    first = nearest_code(jnp.asarray(_nwc(z)), table)
    np.testing.assert_array_equal(np.asarray(first), want[0])


# --------------------------------------------------------------------------------------------
# Stages (≤ 1e-4) and waveforms (≤ 1e-3)
# --------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("cfg",))
def _stages(params, codes, cfg):
    return Qwen3TTSTokenizerV2Decoder(cfg).apply({"params": params}, codes, stages=True)


def test_intermediate_stages_match_reference(tiny):
    """T = 100 frames: past the 72-frame attention window."""
    codes = tiny.codes(100, seed=2)
    dec = tiny.model.decoder
    with torch.no_grad():
        c = torch.from_numpy(codes)
        q = dec.quantizer.decode(c)
        pre = dec.pre_conv(q)
        tr = dec.pre_transformer(inputs_embeds=pre.transpose(1, 2)).last_hidden_state
        h = tr.transpose(1, 2)
        ups = []
        for blocks in dec.upsample:
            for block in blocks:
                h = block(h)
            ups.append(_nwc(h))
        h = dec.decoder[0](h)
        blocks = []
        for block in dec.decoder[1:-2]:
            h = block(h)
            blocks.append(_nwc(h))
        wav = dec(c)[:, 0].numpy()
    got_wav, seen = _stages(tiny.dec, jnp.asarray(codes, jnp.int32), tiny.dcfg)
    assert_close(seen["quantizer"], _nwc(q), OP_TOL, "stage quantizer")
    assert_close(seen["pre_conv"], _nwc(pre), MODULE_TOL, "stage pre_conv")
    assert_close(seen["pre_transformer"], tr.numpy(), MODULE_TOL, "stage pre_transformer (window 72, T=100)")
    for i, want in enumerate(ups):
        assert_close(seen[f"upsample_{i}"], want, MODULE_TOL, f"stage upsample_{i}")
    for i, want in enumerate(blocks):
        assert_close(seen[f"decoder_{i + 1}"], want, MODULE_TOL, f"stage decoder block {i + 1}")
    assert_close(got_wav, wav, WAVE_TOL, "waveform T=100 (one forward)")
    clamped = float(np.mean(np.abs(wav) >= 1.0))
    print(f"[info] clamped fraction {clamped:.3f}, std {wav.std():.3f}")
    assert clamped < 0.2  # the comparison is not vacuous


@pytest.mark.parametrize("frames", [20, 100, 330])
@pytest.mark.slow
def test_waveform_matches_reference_chunked_decode(tiny, frames):
    """330 frames crosses a 300-frame chunk boundary (25 frames of re-decoded left context)."""
    codes = tiny.codes(frames, seed=frames)
    with torch.no_grad():
        want = tiny.model.decoder.chunked_decode(torch.from_numpy(codes))[:, 0].numpy()
    got = chunked_decode(tiny.dec, jnp.asarray(codes, jnp.int32), tiny.dcfg)
    assert_close(got, want, WAVE_TOL, f"waveform T={frames} (chunked decode)")


@pytest.mark.slow
def test_single_forward_differs_after_a_chunk_boundary(tiny):
    """Why chunking is reproduced: an unchunked forward of 330 frames is a different output."""
    codes = tiny.codes(330, seed=330)
    one = np.asarray(decode_codes(tiny.dec, jnp.asarray(codes, jnp.int32), tiny.dcfg))
    chunked = np.asarray(chunked_decode(tiny.dec, jnp.asarray(codes, jnp.int32), tiny.dcfg))
    up = tiny.dcfg.total_upsample
    assert_close(one[:, : 300 * up], chunked[:, : 300 * up], WAVE_TOL, "first chunk: one forward == chunked")
    assert np.abs(one[:, 300 * up :] - chunked[:, 300 * up :]).max() > 1e-2


@pytest.mark.slow
def test_batch_with_minus_one_padding_matches_reference_decode(tiny):
    """`Qwen3TTSTokenizerV2Model.decode` on (b, t, q) codes right-padded with -1."""
    a, b = tiny.codes(100, seed=5, batch=1)[0].T, tiny.codes(37, seed=6, batch=1)[0].T  # t q
    padded = np.full((2, 100, 16), -1, np.int64)
    padded[0], padded[1, :37] = a, b
    with torch.no_grad():
        want = [w.numpy() for w in tiny.model.decode(torch.from_numpy(padded), return_dict=True).audio_values]
    got = decode(tiny.dec, padded, tiny.dcfg)
    up = tiny.dcfg.total_upsample
    assert [g.shape for g in got] == [(100 * up,), (37 * up,)] == [w.shape for w in want]
    for i in range(2):
        assert_close(got[i], want[i], WAVE_TOL, f"padded batch item {i}")


def test_decode_rejects_bad_codes(tiny):
    with pytest.raises(ValueError, match=r"audio_codes must be \(batch, frames, 16\)"):
        decode(tiny.dec, np.zeros((1, 5, 8), np.int64), tiny.dcfg)
    with pytest.raises(ValueError, match="out of range"):
        decode(tiny.dec, np.full((1, 5, 16), 4096), tiny.dcfg)


@pytest.mark.slow
def test_released_upsample_rates_at_small_width(tmp_path_factory):
    """upsample_rates (8, 5, 4, 3): 1920 samples per frame, as released."""
    real = Tiny(tmp_path_factory, seed=7, upsample_rates=REAL_UPSAMPLE_RATES, decoder_dim=32)
    assert real.dcfg.total_upsample == 1920
    codes = real.codes(20, seed=8)
    with torch.no_grad():
        want = real.model.decoder.chunked_decode(torch.from_numpy(codes))[:, 0].numpy()
    got = chunked_decode(real.dec, jnp.asarray(codes, jnp.int32), real.dcfg)
    assert got.shape == (2, 20 * 1920)
    assert_close(got, want, WAVE_TOL, "waveform T=20, rates (8,5,4,3)")
