"""The ECAPA-TDNN speaker encoder and `extract_speaker_embedding` against the reference.

Reference models are the official `Qwen3TTSForConditionalGeneration` with seeded random weights,
saved in the released layout and loaded back through `weights.load_model_params`, so the key
table is exercised too. Each (config, length) costs one XLA compile (~5 s on 2 CPU cores), which
is why the lengths below are few.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close
from test_mel import test_signal

from qwen3tts_jax.config import Qwen3TTSConfig, SpeakerEncoderConfig
from qwen3tts_jax.speaker_encoder import (
    SpeakerEncoder,
    check_config,
    extract_speaker_embedding,
    min_samples,
    same_padding,
)
from qwen3tts_jax.weights import load_model_params, speaker_encoder_entries

# A 1.7B-shaped tiny model (predictor narrower than the talker) whose speaker encoder differs from
# the default tiny one everywhere a shape can: even kernel (asymmetric "same" padding), dilation in
# the first TDNN and the MFA, 2 SE-Res2Net blocks, res2net scale 3, odd attention/SE widths.
CUSTOM_ENCODER = {
    "enc_channels": [24, 24, 24, 48],
    "enc_kernel_sizes": [3, 2, 5, 3],
    "enc_dilations": [2, 1, 3, 2],
    "enc_res2net_scale": 3,
    "enc_se_channels": 6,
    "enc_attention_channels": 12,
}


def speech_like(n: int, seed: int = 0) -> np.ndarray:
    """The mel tests' non-stationary signal, scaled to peak 0.9 (the reference warns above 1)."""
    x = test_signal(n, seed)
    return (0.9 * x / np.max(np.abs(x))).astype(np.float32)


def _reference_and_ours(tmp_path_factory, cfg_dict: dict, seed: int, name: str):
    from reference.models import build_reference_model, save_reference_model

    model = build_reference_model(cfg_dict, seed)
    folder = save_reference_model(model, tmp_path_factory.mktemp(name))
    params = load_model_params(folder)
    return model, params, Qwen3TTSConfig.from_model_dir(folder)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, torch_threads):
    from reference.models import config_dict

    return _reference_and_ours(tmp_path_factory, config_dict("base", text_vocab=1000), 0, "tiny")


@pytest.fixture(scope="module")
def custom(tmp_path_factory, torch_threads):
    from reference.models import config_dict

    cfg = config_dict("base", hidden=48, predictor_hidden=32, text_vocab=1000)
    cfg["speaker_encoder_config"].update(CUSTOM_ENCODER)
    return _reference_and_ours(tmp_path_factory, cfg, 1, "custom")


def reference_embedding(model, wav: np.ndarray) -> np.ndarray:
    return model.extract_speaker_embedding(wav, 24000).numpy()


# --------------------------------------------------------------------------------------------
# Parity
# --------------------------------------------------------------------------------------------


@pytest.mark.reference
@pytest.mark.parametrize("n", [1280, 24000 + 77])  # the shortest accepted input, and an odd length
def test_embedding_matches_reference_tiny(tiny, n):
    model, params, cfg = tiny
    wav = speech_like(n)
    ours = np.asarray(extract_speaker_embedding(params["speaker_encoder"], cfg.speaker_encoder, wav))
    ref = reference_embedding(model, wav)
    assert ours.shape == ref.shape == (cfg.speaker_encoder.enc_dim,)
    assert_close(ours, ref, 1e-4, f"speaker embedding, tiny, n={n}")


@pytest.mark.reference
def test_embedding_matches_reference_custom_shapes(custom):
    model, params, cfg = custom
    assert cfg.speaker_encoder.enc_kernel_sizes == (3, 2, 5, 3)
    wav = speech_like(12000 + 1, seed=3)
    ours = np.asarray(extract_speaker_embedding(params["speaker_encoder"], cfg.speaker_encoder, wav))
    assert_close(ours, reference_embedding(model, wav), 1e-4, "speaker embedding, custom enc_* / 1.7B-shaped tiny")


@pytest.mark.reference
def test_embedding_matches_reference_fullsize_channels(tmp_path_factory, torch_threads):
    """Released encoder widths (enc_channels [512]*4+[1536], attention/SE 128, scale 8, enc_dim
    1024) on a 1 s clip; the talker around it stays tiny (1 layer, 1.7B-shaped)."""
    from reference.models import config_dict

    cfg_dict = config_dict("base", hidden=1024, predictor_hidden=32, layers=1, predictor_layers=1, text_vocab=1000)
    cfg_dict["speaker_encoder_config"] = {"enc_dim": 1024, "sample_rate": 24000}  # the rest: class defaults
    model, params, cfg = _reference_and_ours(tmp_path_factory, cfg_dict, 2, "fullsize")
    assert cfg.speaker_encoder == SpeakerEncoderConfig(enc_dim=1024)
    wav = speech_like(24000, seed=4)
    ours = np.asarray(extract_speaker_embedding(params, cfg, wav))  # whole-model params + top config
    assert_close(ours, reference_embedding(model, wav), 1e-4, "speaker embedding, full-size channels, 1 s")


# --------------------------------------------------------------------------------------------
# Structure (no torch)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg",
    [
        SpeakerEncoderConfig(),
        SpeakerEncoderConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in CUSTOM_ENCODER.items()}),
    ],
    ids=["released", "custom"],
)
def test_param_tree_matches_key_table(cfg):
    shapes = jax.eval_shape(lambda: SpeakerEncoder(cfg).init(jax.random.key(0), jnp.zeros((1, 8, cfg.mel_dim))))
    flat = {
        "/".join(k.key for k in path): leaf.shape
        for path, leaf in jax.tree_util.tree_flatten_with_path(shapes["params"])[0]
    }
    table = {"/".join(e.target[1:]): e.shape for e in speaker_encoder_entries(cfg)}
    assert flat == table


def test_same_padding_matches_torch_rule():
    assert same_padding(1, 1) == (0, 0)
    assert same_padding(5, 1) == (2, 2)
    assert same_padding(3, 4) == (4, 4)
    assert same_padding(2, 1) == (0, 1)  # torch puts the odd sample on the right
    assert same_padding(4, 3) == (4, 5)


def test_min_samples():
    assert min_samples(SpeakerEncoderConfig()) == 5 * 256  # widest pad 4 (k3, d4) → 5 frames


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.reference
def test_shortest_input_is_the_references_too(tiny):
    """One sample below `min_samples` the reference itself fails (reflect pad ≥ length)."""
    model, _, cfg = tiny
    n = min_samples(cfg.speaker_encoder)
    with pytest.raises(RuntimeError):
        reference_embedding(model, speech_like(n - 1))


@pytest.mark.parametrize(
    "wav,sr,match",
    [
        (np.zeros(24000, np.float32), 16000, "sr=16000"),
        (np.zeros((2, 24000), np.float32), 24000, r"shape \(2, 24000\)"),
        (np.zeros(24000, np.int16), 24000, "dtype int16"),
        (np.zeros(0, np.float32), 24000, "empty"),
        (np.array([0.0] * 3000 + [np.nan] * 2, np.float32), 24000, "2 non-finite samples .first at index 3000: nan"),
        (np.array([np.inf] + [0.0] * 3000, np.float32), 24000, "index 0: inf"),
        (np.zeros(1279, np.float32), 24000, "1279 samples"),
    ],
    ids=["sample-rate", "stereo", "int-pcm", "empty", "nan", "inf", "too-short"],
)
def test_bad_waveform_raises(wav, sr, match):
    cfg = SpeakerEncoderConfig()
    with pytest.raises(ValueError, match=match):
        extract_speaker_embedding({}, cfg, wav, sr=sr)  # checks run before any params are touched


@pytest.mark.parametrize(
    "change,match",
    [
        ({"sample_rate": 16000}, "sample_rate=16000"),
        ({"mel_dim": 80}, "mel_dim=80"),
        ({"enc_channels": (32, 32, 32, 32, 64)}, "sum"),
        ({"enc_channels": (16, 32, 32, 32, 96)}, "must be equal"),
        ({"enc_channels": (32, 32), "enc_kernel_sizes": (5, 1), "enc_dilations": (1, 1)}, "at least 3"),
        ({"enc_channels": (30, 30, 30, 30, 90)}, "must divide"),
    ],
)
def test_bad_config_raises(change, match):
    with pytest.raises(ValueError, match=match):
        check_config(dataclasses.replace(SpeakerEncoderConfig(), **change))


@pytest.mark.reference  # reference.models imports torch
def test_model_without_speaker_encoder_raises():
    from reference.models import config_dict

    cfg = Qwen3TTSConfig.from_dict(config_dict("custom_voice"))
    assert cfg.speaker_encoder is None
    with pytest.raises(ValueError, match="no speaker encoder"):
        extract_speaker_embedding({}, cfg, np.zeros(24000, np.float32))


@pytest.mark.reference
def test_loud_input_warns_like_the_reference(tiny):
    _, params, cfg = tiny
    wav = 1.5 * speech_like(24000 + 77)  # same length as a parity case: no new compile
    with pytest.warns(UserWarning, match="peaks at 1.350"):
        out = extract_speaker_embedding(params["speaker_encoder"], cfg.speaker_encoder, wav)
    assert np.isfinite(np.asarray(out)).all()
