"""Convert a Hugging Face model folder to our parameter pytrees on disk, and read them back.

What it is for: other JAX code that wants this model's weights as our Flax trees without our
key table. The converted form is a safetensors file of the flattened pytree
(`talker/model/layers_0/...`), readable without the key table, in any framework, lazily; configs
and tokenizer files are copied beside it, and `load_converted` reads it back. It is not a model
folder: `from_pretrained`, `synthesize --model` and `inspect` take the original Hugging Face
layout, and say so when given a converted folder (`inspect` lists its trees).

The output is written through `atomic.atomic_path`: an interrupted conversion leaves nothing,
and the folder gets ordinary permissions (0755 under the usual umask).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from flax import traverse_util

from qwen3tts_jax.atomic import atomic_path
from qwen3tts_jax.checks import check_new_folder
from qwen3tts_jax.config import Qwen3TTSConfig
from qwen3tts_jax.hub import CONVERTED_MARK
from qwen3tts_jax.weights import load_model_params

PARAMS_FILE = CONVERTED_MARK
_SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "tokenizer.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
)


def save_tree(tree: dict, path: Path) -> None:
    from safetensors.flax import save_file

    flat = {"/".join(k): v for k, v in traverse_util.flatten_dict(tree).items()}
    save_file(flat, str(path))


def load_tree(path: Path) -> dict:
    from safetensors.flax import load_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: converted params not found")
    flat = load_file(str(path))
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def convert(folder: str | Path, out: str | Path, dtype: Any = None) -> Path:
    """HF folder (model, with optional `speech_tokenizer/`) → `out/` with params.safetensors files."""
    folder = Path(folder)
    out = check_new_folder(out, "OUT")  # before reading gigabytes of weights
    if not folder.is_dir():
        raise FileNotFoundError(f"DIR {folder}: not a directory{random_hint(str(folder))}")
    cfg = Qwen3TTSConfig.from_model_dir(folder)
    model_params = load_model_params(folder, cfg, dtype=dtype)
    with atomic_path(out, folder=True, replace=False) as tmp:
        save_tree(model_params, tmp / PARAMS_FILE)
        _copy_side_files(folder, tmp)
        tok = folder / "speech_tokenizer"
        if (tok / "config.json").is_file():
            from qwen3tts_jax.codec.weights import load_codec_params

            (tmp / "speech_tokenizer").mkdir()
            save_tree(load_codec_params(tok, dtype=dtype), tmp / "speech_tokenizer" / PARAMS_FILE)
            _copy_side_files(tok, tmp / "speech_tokenizer")
    return out


def random_hint(name: str) -> str:
    """For a `random:` name given where a folder is needed: how to make one."""
    if not name.startswith("random:"):
        return ""
    return f" (a random: model is built in memory; write it as a folder with `qwen3tts-jax save-random {name} DIR`)"


def _copy_side_files(src: Path, dst: Path) -> None:
    for name in _SIDE_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def load_converted(out: str | Path) -> tuple[dict, dict | None]:
    """(model params, speech tokenizer params or None) of a converted folder."""
    out = Path(out)
    tok = out / "speech_tokenizer" / PARAMS_FILE
    return load_tree(out / PARAMS_FILE), (load_tree(tok) if tok.is_file() else None)
