"""Config parsing: released JSON decides, errors name the file and field."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
from reference.models import GENERATION_CONFIG, config_dict, fullsize_config_dict

from qwen3tts_jax.config import ConfigError, GenerationConfig, Qwen3TTSConfig


def test_released_values_parse():
    cfg = Qwen3TTSConfig.from_dict(fullsize_config_dict("custom_voice", "0b6"))
    t = cfg.talker
    assert (t.transformer.num_hidden_layers, t.transformer.num_key_value_heads, t.transformer.head_dim) == (28, 8, 128)
    assert t.transformer.rope_theta == 1e6 and t.codec_eos_token_id == 2150 and t.codec_pad_id == 2148
    assert t.speakers["serena"] == 3066  # stored as a one-element list
    assert t.speaker_dialects == {"eric": "sichuan_dialect", "dylan": "beijing_dialect"}
    assert t.languages["beijing_dialect"] == 2074
    assert t.mrope_section == (24, 20, 20)
    assert cfg.speaker_encoder is None and cfg.tts_model_size == "0b6"
    base = Qwen3TTSConfig.from_dict(fullsize_config_dict("base", "1b7"))
    assert base.speaker_encoder.enc_dim == 2048 and base.talker.code_predictor.transformer.hidden_size == 1024
    hash(cfg), hash(base)  # usable as static jit arguments


def test_int_and_list_token_ids_are_equivalent():
    d = config_dict("custom_voice")
    d["talker_config"]["spk_id"] = {"a": 3000, "b": [3001]}
    d["talker_config"]["codec_bos_id"] = [2149]
    t = Qwen3TTSConfig.from_dict(d).talker
    assert t.speakers == {"a": 3000, "b": 3001} and t.codec_bos_id == 2149
    d["talker_config"]["spk_id"] = {"a": [1, 2]}
    with pytest.raises(ConfigError, match=r"talker_config\.spk_id\.a"):
        Qwen3TTSConfig.from_dict(d)


@pytest.mark.parametrize(
    "path",
    [
        ("talker_config", "num_hidden_layers"),
        ("talker_config", "codec_eos_token_id"),
        ("talker_config", "code_predictor_config", "vocab_size"),
        ("tts_model_type",),
    ],
)
def test_missing_required_field_is_named(path):
    d = copy.deepcopy(config_dict("base"))
    node = d
    for name in path[:-1]:
        node = node[name]
    del node[path[-1]]
    with pytest.raises(ConfigError, match=r"config\.json: " + r"\.".join(path) + " is missing"):
        Qwen3TTSConfig.from_dict(d)


def test_unknown_model_type_is_refused(tmp_path):
    d = config_dict("base")
    d["model_type"] = "qwen3_tts_v9"
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=r"config\.json: model_type='qwen3_tts_v9'"):
        Qwen3TTSConfig.from_model_dir(tmp_path)
    d["model_type"], d["tts_model_type"] = "qwen3_tts", "singing"
    with pytest.raises(ConfigError, match="tts_model_type='singing'"):
        Qwen3TTSConfig.from_dict(d)


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        Qwen3TTSConfig.from_model_dir(tmp_path)
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(ConfigError, match="config.json: not valid JSON"):
        Qwen3TTSConfig.from_model_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="generation_config.json"):
        GenerationConfig.from_model_dir(tmp_path)


def test_generation_config_reads_json_not_defaults(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG))
    g = GenerationConfig.from_model_dir(tmp_path)
    assert g.max_new_tokens == 8192 and g.repetition_penalty == 1.05 and g.subtalker_top_k == 50
    (tmp_path / "generation_config.json").write_text(json.dumps({"top_k": "many"}))
    with pytest.raises(ConfigError, match="generation_config.json: top_k must be int"):
        GenerationConfig.from_model_dir(tmp_path)


def test_configs_are_frozen():
    cfg = Qwen3TTSConfig.from_dict(config_dict("base"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.tts_model_type = "custom_voice"  # type: ignore[misc]
    assert dataclasses.replace(cfg, tts_model_size="1b7").tts_model_size == "1b7"
