"""The key tables and the safetensors loader: coverage on the full-size reference key sets,
strict errors, dtypes, sharding, conversion round trip, and the inspect CLI."""

from __future__ import annotations

import json
import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from qwen3tts_jax.cli import main
from qwen3tts_jax.config import Qwen3TTSConfig
from qwen3tts_jax.convert import convert, load_converted
from qwen3tts_jax.weights import MODEL_IGNORED, CheckpointError, check_keys, load_model_params, model_entries

RELEASED = [
    ("base", "0b6", 914_643_008),
    ("custom_voice", "0b6", 905_788_672),
    ("base", "1b7", None),
    ("custom_voice", "1b7", None),
    ("voice_design", "1b7", None),
]


@pytest.mark.reference
@pytest.mark.parametrize("kind,size,total", RELEASED)
def test_fullsize_reference_key_sets_map_exactly(kind, size, total):
    """The released architectures, built from the reference classes on the meta device: every
    state_dict key is in our table with its exact shape, and nothing is left over."""
    from reference.models import fullsize_config_dict, meta_state_shapes

    cfg_dict = fullsize_config_dict(kind, size)
    shapes = meta_state_shapes(cfg_dict)
    cfg = Qwen3TTSConfig.from_dict(cfg_dict)
    report = check_keys(model_entries(cfg), shapes, MODEL_IGNORED)
    print(
        f"[keys] {kind} {size}: {len(shapes)} tensors, {len(report.missing)} missing, {len(report.unexpected)} "
        "unexpected"
    )
    assert report.ok, report.error(f"{kind}-{size}")
    if total is not None:
        assert sum(math.prod(s) for s in shapes.values()) == total
        assert sum(math.prod(e.shape) for e in model_entries(cfg)) == total


@pytest.mark.reference
def test_inspect_reports_released_totals(tmp_path, capsys):
    """`qwen3tts-jax inspect` on full-size checkpoints with the reference's key sets (sparse files)."""
    from reference.models import fullsize_config_dict, meta_state_shapes, write_sparse_safetensors

    for kind, total in [("base", "914,643,008"), ("custom_voice", "905,788,672")]:
        folder = tmp_path / kind
        folder.mkdir()
        cfg = fullsize_config_dict(kind, "0b6")
        (folder / "config.json").write_text(json.dumps(cfg))
        write_sparse_safetensors(folder / "model.safetensors", meta_state_shapes(cfg))
        assert main(["inspect", str(folder)]) == 0
        out = capsys.readouterr().out
        assert f"total: {total} elements" in out, out[-500:]
        assert "0 missing, 0 unexpected, 0 wrong shape" in out
    # The speech tokenizer: inside a model folder and on its own (parameters + buffers as stored).
    import torch
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Model
    from reference.codec_models import fullsize_codec_config_dict, reference_tokenizer_config

    codec_cfg = fullsize_codec_config_dict()
    with torch.device("meta"):
        codec = Qwen3TTSTokenizerV2Model(reference_tokenizer_config(codec_cfg))
    tok = tmp_path / "custom_voice" / "speech_tokenizer"
    tok.mkdir()
    (tok / "config.json").write_text(json.dumps(codec_cfg))
    write_sparse_safetensors(
        tok / "model.safetensors", {k: tuple(v.shape) for k, v in codec.state_dict().items()}, "F32"
    )
    for folder in (tmp_path / "custom_voice", tok):
        assert main(["inspect", str(folder)]) == 0
        out = capsys.readouterr().out
        assert "total: 170,557,441 elements" in out, out[-800:]
        assert "0 missing, 0 unexpected, 0 wrong shape, 34 ignored" in out


@pytest.fixture()
def tiny_folder(tiny_model, tmp_path):
    _, folder = tiny_model("base-1b7-mha")
    dst = tmp_path / "model"
    shutil.copytree(folder, dst)
    return dst


def _rewrite(folder, edit):
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


def test_missing_key_is_named(tiny_folder):
    _rewrite(tiny_folder, lambda t: t.pop("talker.model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing key talker\.model\.layers\.1\.mlp\.up_proj\.weight"):
        load_model_params(tiny_folder)


def test_unexpected_key_is_named(tiny_folder):
    _rewrite(tiny_folder, lambda t: t.__setitem__("talker.model.extra.weight", np.zeros(3, np.float32)))
    with pytest.raises(CheckpointError, match=r"unexpected key talker\.model\.extra\.weight"):
        load_model_params(tiny_folder)


def test_wrong_shape_names_key_and_both_shapes(tiny_folder):
    _rewrite(tiny_folder, lambda t: t.__setitem__("talker.codec_head.weight", np.zeros((3072, 63), np.float32)))
    with pytest.raises(CheckpointError, match=r"talker\.codec_head\.weight: expected \(3072, 64\), found \(3072, 63\)"):
        load_model_params(tiny_folder)


def test_inspect_exits_nonzero_on_bad_checkpoint(tiny_folder, capsys):
    _rewrite(tiny_folder, lambda t: t.pop("talker.codec_head.weight"))
    assert main(["inspect", str(tiny_folder)]) == 1
    assert "missing key talker.codec_head.weight" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncate", "header"])
def test_damaged_file_names_the_file(tiny_folder, damage):
    path = tiny_folder / "model.safetensors"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else raw[:8] + b"{not json" + raw[17:])
    with pytest.raises(CheckpointError, match=str(path)):
        load_model_params(tiny_folder)


def test_missing_config_names_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model_params(tmp_path)


@pytest.mark.parametrize("stored", ["bfloat16", "float16"])
def test_half_precision_checkpoints_load_and_cast(tiny_folder, stored):
    ref = load_model_params(tiny_folder)
    tensors = load_file(str(tiny_folder / "model.safetensors"))
    from safetensors.flax import save_file as save_flax

    save_flax({k: jnp.asarray(v).astype(stored) for k, v in tensors.items()}, str(tiny_folder / "model.safetensors"))
    kept = load_model_params(tiny_folder)
    cast = load_model_params(tiny_folder, dtype=jnp.float32)
    assert jax.tree.leaves(kept)[0].dtype == jnp.dtype(stored)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(cast))
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(cast)):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(jnp.asarray(a).astype(stored).astype(jnp.float32)))


def test_sharded_checkpoint_loads_identically(tiny_folder):
    ref = load_model_params(tiny_folder)
    tensors = load_file(str(tiny_folder / "model.safetensors"))
    keys = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    weight_map = {}
    for name, ks in shards.items():
        save_file({k: tensors[k] for k in ks}, str(tiny_folder / name))
        weight_map.update({k: name for k in ks})
    (tiny_folder / "model.safetensors").unlink()
    (tiny_folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    got = load_model_params(tiny_folder)
    assert jax.tree.structure(got) == jax.tree.structure(ref)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_convert_round_trip(tiny_folder, tmp_path):
    out = convert(tiny_folder, tmp_path / "converted")
    params, codec = load_converted(out)
    ref = load_model_params(tiny_folder)
    assert codec is None  # this folder has no speech_tokenizer/
    assert jax.tree.structure(params) == jax.tree.structure(ref)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert (out / "config.json").is_file()
    with pytest.raises(FileExistsError):
        convert(tiny_folder, out)
    assert main(["convert", str(tiny_folder), str(out)]) == 2  # exists: a clear error, not a traceback


def test_scan_layout_stacks_every_layer(tiny_folder):
    cfg = Qwen3TTSConfig.from_model_dir(tiny_folder)
    unrolled = load_model_params(tiny_folder, cfg)
    stacked = load_model_params(tiny_folder, cfg, scan_layers=True)
    w = stacked["talker"]["model"]["layers"]["self_attn"]["q_proj"]["weight"]
    assert w.shape[0] == cfg.talker.transformer.num_hidden_layers
    for i in range(w.shape[0]):
        np.testing.assert_array_equal(
            np.asarray(w[i]), np.asarray(unrolled["talker"]["model"][f"layers_{i}"]["self_attn"]["q_proj"]["weight"])
        )
