"""The speech tokenizer's config parsing and key table (`qwen3tts_jax.codec.config/weights`)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from qwen3tts_jax.codec.config import ConfigError, Qwen3TTSTokenizerV2Config
from qwen3tts_jax.codec.weights import CODEC_IGNORED, codec_entries, load_codec_params
from qwen3tts_jax.weights import CheckpointError, check_keys, flax_path
from tests.reference.codec_models import codec_config_dict, fullsize_codec_config_dict

FULLSIZE_STATE_NUMEL = 170_557_441  # parameters + persistent buffers of the released tokenizer


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


def test_fullsize_config_values():
    cfg = Qwen3TTSTokenizerV2Config.from_dict(fullsize_codec_config_dict())
    d, e = cfg.decoder, cfg.encoder
    assert (d.hidden_size, d.intermediate_size, d.latent_dim, d.decoder_dim, d.codebook_dim) == (
        512,
        1024,
        1024,
        1536,
        512,
    )
    assert (d.codebook_vector_dim, d.head_dim, d.sliding_window, d.total_upsample, d.output_dim) == (
        256,
        64,
        72,
        1920,
        96,
    )
    assert d.upsample_rates == (8, 5, 4, 3) and d.upsampling_ratios == (2, 2)
    assert (e.hop_length, e.encodec_frame_rate, e.frame_rate, e.frame_size, e.downsample_kernel_size) == (
        960,
        25,
        12.5,
        1920,
        4,
    )
    assert e.num_acoustic_quantizers == 31 and cfg.encoder_valid_num_quantizers == 16
    hash(cfg)  # static-jit-argument ready


def _write(tmp_path: Path, data: dict) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(data))
    return tmp_path


def test_config_missing_field_names_file_and_field(tmp_path):
    data = codec_config_dict()
    del data["decoder_config"]["hidden_size"]
    with pytest.raises(ConfigError, match=r"config\.json: decoder_config\.hidden_size is missing"):
        Qwen3TTSTokenizerV2Config.from_model_dir(_write(tmp_path, data))
    data = codec_config_dict()
    del data["decoder_config"]["codebook_dim"]  # kwargs-only in the reference: no class default
    with pytest.raises(ConfigError, match=r"decoder_config\.codebook_dim is missing"):
        Qwen3TTSTokenizerV2Config.from_dict(data)
    data = codec_config_dict()
    del data["encoder_config"]["upsampling_ratios"]
    with pytest.raises(ConfigError, match=r"encoder_config\.upsampling_ratios is missing"):
        Qwen3TTSTokenizerV2Config.from_dict(data)


def test_config_rejects_unknown_model_type_and_inconsistent_rates(tmp_path):
    data = dict(codec_config_dict(), model_type="qwen3_tts_tokenizer_25hz")
    with pytest.raises(ConfigError, match=r"config\.json: model_type='qwen3_tts_tokenizer_25hz'"):
        Qwen3TTSTokenizerV2Config.from_model_dir(_write(tmp_path, data))
    data = dict(codec_config_dict(), decode_upsample_rate=1920)
    with pytest.raises(ConfigError, match=r"decode_upsample_rate=1920 differs"):
        Qwen3TTSTokenizerV2Config.from_dict(data)
    data = codec_config_dict()
    data["decoder_config"]["hidden_act"] = "gelu"
    with pytest.raises(ConfigError, match=r"decoder_config\.hidden_act='gelu'"):
        Qwen3TTSTokenizerV2Config.from_dict(data)
    with pytest.raises(FileNotFoundError, match="config.json"):
        Qwen3TTSTokenizerV2Config.from_model_dir(tmp_path / "nowhere")


def test_key_table_paths_follow_the_naming_convention():
    entries = codec_entries(Qwen3TTSTokenizerV2Config.from_dict(codec_config_dict()))
    by_key = {e.key: e for e in entries}
    # nested ModuleLists fold the same way linen names nested lists: upsample.0.1 -> upsample_0_1
    assert by_key["decoder.decoder.1.block.2.conv1.conv.weight"].target == (
        "decoder",
        "decoder_1",
        "block_2",
        "conv1",
        "conv",
        "weight",
    )
    assert by_key["decoder.upsample.1.1.gamma"].target == ("decoder", "upsample_1_1", "gamma")
    assert by_key["decoder.upsample.0.1.dwconv.conv.weight"].shape == (32, 1, 7)  # depthwise (out, in/groups, k)
    assert by_key["decoder.decoder.1.block.1.conv.weight"].shape == (64, 32, 4)  # ConvTranspose1d (in, out, k)
    assert all(e.target == flax_path(e.key) for e in entries)
    fp32 = {e.key.rsplit(".", 1)[-1] for e in entries if e.keep_fp32}
    assert fp32 == {"cluster_usage", "embedding_sum", "embed_sum"}


# --------------------------------------------------------------------------------------------
# Against the reference state_dict
# --------------------------------------------------------------------------------------------


@pytest.mark.reference
def test_fullsize_key_set_matches_reference_state_dict():
    """The released architecture built on torch's meta device: every key used or ignored."""
    import torch
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Model

    from tests.reference.codec_models import reference_tokenizer_config

    data = fullsize_codec_config_dict()
    with torch.device("meta"):
        model = Qwen3TTSTokenizerV2Model(reference_tokenizer_config(data))
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    report = check_keys(codec_entries(Qwen3TTSTokenizerV2Config.from_dict(data)), state, CODEC_IGNORED)
    assert report.ok, report.error("meta state_dict")
    print(
        f"[keys] {len(state)} tensors, {len(report.ignored)} ignored: "
        f"{sorted({k.rsplit('.', 1)[-1] for k in report.ignored})}"
    )
    assert sum(int(np.prod(s)) for s in state.values()) == FULLSIZE_STATE_NUMEL
    # the ignored keys are exactly the 32 `initialized` flags and the 2 unused decoder input_proj
    assert len(report.ignored) == 34


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    pytest.importorskip("torch")
    from tests.reference.codec_models import build_reference_tokenizer, save_reference_tokenizer

    model = build_reference_tokenizer(codec_config_dict(), seed=3)
    out = save_reference_tokenizer(model, tmp_path_factory.mktemp("codec") / "speech_tokenizer")
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    return out, state


@pytest.mark.reference
def test_load_round_trip_and_fp32_codebooks(tiny_dir):
    import jax.numpy as jnp

    out, state = tiny_dir
    assert (out / "preprocessor_config.json").is_file()
    params = load_codec_params(out)
    assert set(params) == {"encoder", "decoder"}
    cfg = Qwen3TTSTokenizerV2Config.from_model_dir(out)
    for e in codec_entries(cfg):
        node = params
        for name in e.target:
            node = node[name]
        np.testing.assert_array_equal(np.asarray(node), state[e.key], err_msg=e.key)
    low = load_codec_params(out, dtype=jnp.bfloat16)
    dec = low["decoder"]
    assert dec["quantizer"]["rvq_rest"]["vq"]["layers_3"]["_codebook"]["embedding_sum"].dtype == jnp.float32
    assert (
        low["encoder"]["quantizer"]["acoustic_residual_vector_quantizer"]["layers_0"]["codebook"]["cluster_usage"].dtype
        == jnp.float32
    )
    assert dec["pre_conv"]["conv"]["weight"].dtype == jnp.bfloat16


def _rewrite(src: Path, dst: Path, state: dict) -> Path:
    from safetensors.numpy import save_file

    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "config.json", dst / "config.json")
    save_file(state, str(dst / "model.safetensors"))
    return dst


@pytest.mark.reference
def test_missing_unexpected_wrong_shape_keys_are_named(tiny_dir, tmp_path):
    out, state = tiny_dir
    key = "decoder.pre_transformer.layers.1.mlp.up_proj.weight"
    bad = {k: v for k, v in state.items() if k != key}
    with pytest.raises(CheckpointError, match=f"missing key {re.escape(key)}"):
        load_codec_params(_rewrite(out, tmp_path / "missing", bad))
    bad = dict(state, **{"decoder.extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError, match=r"unexpected key decoder\.extra\.weight"):
        load_codec_params(_rewrite(out, tmp_path / "unexpected", bad))
    key = "decoder.decoder.2.block.1.conv.weight"
    bad = dict(state, **{key: np.zeros((5, 5, 5), np.float32)})
    shape = tuple(state[key].shape)
    with pytest.raises(CheckpointError, match=re.escape(f"wrong shape for {key}: expected {shape}, found (5, 5, 5)")):
        load_codec_params(_rewrite(out, tmp_path / "shape", bad))


@pytest.mark.reference
def test_corrupt_file_is_named(tiny_dir, tmp_path):
    out, _ = tiny_dir
    dst = tmp_path / "corrupt"
    dst.mkdir()
    shutil.copy(out / "config.json", dst / "config.json")
    data = (out / "model.safetensors").read_bytes()
    (dst / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"corrupt/model\.safetensors: truncated"):
        load_codec_params(dst)
