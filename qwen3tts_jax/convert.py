"""Convert a Hugging Face model folder to our parameter pytrees on disk, and read them back.

The converted form is a safetensors file of the flattened pytree (`talker/model/layers_0/...`),
so it loads without the key table, in any framework, lazily. Configs and tokenizer files are
copied beside it, so the output is itself a loadable model folder for `load_converted`.
Outputs are written to a temporary folder and renamed into place: an interrupted conversion never
leaves a half-written result.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from flax import traverse_util

from qwen3tts_jax.config import Qwen3TTSConfig
from qwen3tts_jax.weights import load_model_params

PARAMS_FILE = "params.safetensors"
_SIDE_FILES = (
    "config.json", "generation_config.json", "vocab.json", "merges.txt", "tokenizer_config.json", "tokenizer.json",
    "special_tokens_map.json", "preprocessor_config.json",
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
    folder, out = Path(folder), Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: output already exists; remove it or choose another path")
    cfg = Qwen3TTSConfig.from_model_dir(folder)
    model_params = load_model_params(folder, cfg, dtype=dtype)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_tree(model_params, tmp / PARAMS_FILE)
        _copy_side_files(folder, tmp)
        tok = folder / "speech_tokenizer"
        if (tok / "config.json").is_file():
            from qwen3tts_jax.codec.weights import load_codec_params

            (tmp / "speech_tokenizer").mkdir()
            save_tree(load_codec_params(tok, dtype=dtype), tmp / "speech_tokenizer" / PARAMS_FILE)
            _copy_side_files(tok, tmp / "speech_tokenizer")
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _copy_side_files(src: Path, dst: Path) -> None:
    for name in _SIDE_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)


def load_converted(out: str | Path) -> tuple[dict, dict | None]:
    """(model params, speech tokenizer params or None) of a converted folder."""
    out = Path(out)
    tok = out / "speech_tokenizer" / PARAMS_FILE
    return load_tree(out / PARAMS_FILE), (load_tree(tok) if tok.is_file() else None)
