"""Where a `from_pretrained` name points: a local folder, or a Hugging Face repo id downloaded with
huggingface_hub (the reference's `from_pretrained` accepts both); and what a name is before
anything is loaded (`peek_config`), so the command line can check its flags against the model
in milliseconds instead of after loading the weights."""

from __future__ import annotations

import os
from pathlib import Path

CONVERTED_MARK = "params.safetensors"  # the file `qwen3tts-jax convert` writes (convert.PARAMS_FILE)


def _looks_like_repo_id(text: str) -> bool:
    # "tiny/speech_tokenizer" next to a local folder "tiny" is a path, not a repo to download.
    return text.count("/") == 1 and not text.startswith((".", "/", "~")) and not Path(text).parent.is_dir()


def check_model_folder(folder: Path, name: str = "--model") -> None:
    """A local model folder holds every part the loader reads (listed at once, before loading)."""
    parts = {
        "config.json": (folder / "config.json").is_file(),
        "generation_config.json": (folder / "generation_config.json").is_file(),
        "model.safetensors": (folder / "model.safetensors").is_file()
        or (folder / "model.safetensors.index.json").is_file(),
        "vocab.json + merges.txt (or tokenizer.json)": (folder / "tokenizer.json").is_file()
        or ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()),
        "tokenizer_config.json": (folder / "tokenizer_config.json").is_file(),
        "speech_tokenizer/config.json": (folder / "speech_tokenizer" / "config.json").is_file(),
        "speech_tokenizer/model.safetensors": (folder / "speech_tokenizer" / "model.safetensors").is_file()
        or (folder / "speech_tokenizer" / "model.safetensors.index.json").is_file(),
    }
    missing = [k for k, ok in parts.items() if not ok]
    if missing:
        raise FileNotFoundError(
            f"{name} {folder}: not a complete model folder; missing {', '.join(missing)} "
            f"(a released Qwen3-TTS-12Hz folder holds all of {', '.join(parts)})"
        )


def _refuse_converted(p: Path, name: str) -> None:
    if (
        (p / CONVERTED_MARK).is_file()
        and not (p / "model.safetensors").exists()
        and not (p / "model.safetensors.index.json").exists()
    ):
        raise ValueError(
            f"{name}: {str(p)!r} is a converted folder (params.safetensors, written by `qwen3tts-jax convert`): "
            f"flattened Flax parameter trees for other JAX code, read with qwen3tts_jax.convert.load_converted. Models "
            f"load from the original Hugging Face layout (config.json + model.safetensors + speech_tokenizer/); pass "
            f"that folder"
        )


def resolve_folder(path: str | os.PathLike, name: str = "pretrained_model_name_or_path") -> Path:
    """A local folder as is; an `owner/repo` id downloaded (needs a network); errors name `name`."""
    p = Path(path).expanduser()
    if p.is_dir():
        _refuse_converted(p, name)
        return p
    if p.exists():
        raise ValueError(f"{name}: {str(path)!r} is a file, expected a folder")
    text = str(path)
    if _looks_like_repo_id(text):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(text))
        except Exception as err:  # offline, unknown repo, ...: say what was tried
            raise FileNotFoundError(
                f"{name}: {text!r} is not a local folder and could not be fetched from the Hugging Face Hub: {err}"
            ) from err
    raise FileNotFoundError(f"{name}: folder not found: {text!r}")


def peek_config(path: str | os.PathLike, name: str = "--model"):
    """The `Qwen3TTSConfig` a model name will load, without loading weights: a `random:` preset,
    or a local folder's config.json. None for a hub id (known only once downloaded). Errors (an
    unknown `random:` name, a missing folder, a bad config.json) name `name`."""
    from qwen3tts_jax.config import Qwen3TTSConfig

    text = str(path)
    if text.startswith("random:"):
        from qwen3tts_jax import presets
        from qwen3tts_jax.random_model import parse_random_spec

        kind, size = parse_random_spec(text)
        return Qwen3TTSConfig.from_dict(presets.model_config(kind, size), f"{text} config")
    p = Path(text).expanduser()
    if not p.exists() and _looks_like_repo_id(text):
        return None
    try:
        folder = resolve_folder(p, name)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{name} {text}: folder not found (a model folder, a Hugging Face repo id owner/name, or random:NAME)"
        ) from None
    cfg = Qwen3TTSConfig.from_model_dir(folder)  # its own errors name the file and field
    check_model_folder(folder, name)
    return cfg
