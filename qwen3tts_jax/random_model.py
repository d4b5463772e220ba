"""Seeded random-weight models of the real architecture (`random:<name>`), for smoke tests and
benchmarks on machines without the weights.

Weights are drawn for every entry of the key tables (so the shapes are exactly the checkpoint's):
matrices ~ N(0, 1/fan_in), embeddings ~ N(0, 1), norm and scale vectors ~ 1 + 0.1·N, biases and
SnakeBeta log-parameters ~ 0.1·N, codebooks with positive usage. The text side uses a byte-level
vocabulary (256 byte tokens plus the Qwen special tokens at their real ids) since the real BPE
vocabulary ships only with real model folders.

`save_random_model` writes such a model as a folder in the released layout (config.json,
generation_config.json, model.safetensors under the checkpoint's key names, the tokenizer files,
speech_tokenizer/ with its own config and safetensors), so `inspect`, `convert` and
`--model DIR` can be tried without a checkpoint; loading it gives the `random:` model exactly.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from qwen3tts_jax import presets
from qwen3tts_jax.config import Qwen3TTSConfig
from qwen3tts_jax.weights import Entry, _set, model_entries

SPECIAL_TOKENS = {
    151643: "<|endoftext|>",
    151644: "<|im_start|>",
    151645: "<|im_end|>",
    151669: "<|audio_start|>",
    151670: "<|audio_end|>",
    151671: "<tts_pad>",
    151672: "<tts_text_bos>",
    151673: "<tts_text_eod>",
    151674: "<tts_text_bos_single>",
    151675: "<|audio_pad|>",
}


def init_rule(e: Entry) -> tuple[str, float, float]:
    """How entry `e` is drawn: ("uniform", low, high), ("const", value, 0), ("normal", loc, scale)
    (float64 draws, cast) or ("matrix", 0, std) (float32 normal draws times std)."""
    leaf = e.key.rsplit(".", 1)[-1]
    if leaf == "cluster_usage":
        return "uniform", 0.5, 2.0
    if leaf in ("embedding_sum", "embed_sum"):
        return "normal", 0.0, 1.0
    if leaf == "initialized":
        return "const", 1.0, 0.0
    if len(e.shape) >= 2:
        std = 1.0 if "embedding" in e.key else 1.0 / math.sqrt(math.prod(e.shape[1:]))
        # Keep the codec's waveform decoder from blowing up before its final clamp: damp
        # the residual units' output convs and the last conv (unit-gain init compounds
        # over 4 upsampling blocks).
        if re.fullmatch(r"decoder\.decoder\.\d+\.block\.\d+\.conv2\.conv\.weight", e.key):
            std *= 0.3
        elif re.fullmatch(r"decoder\.decoder\.\d+\.conv\.weight", e.key) and e.shape[0] == 1:
            std *= 0.2
        return "matrix", 0.0, std
    if leaf == "bias" or leaf in ("alpha", "beta"):
        return "normal", 0.0, 0.1
    return "normal", 1.0, 0.1


def _numpy_value(rng: np.random.Generator, e: Entry) -> np.ndarray:
    kind, a, b = init_rule(e)
    if kind == "uniform":
        return rng.uniform(a, b, e.shape)
    if kind == "const":
        return np.full(e.shape, a)
    if kind == "matrix":
        return rng.standard_normal(e.shape, dtype=np.float32) * b
    return a + b * rng.standard_normal(e.shape)


@functools.partial(jax.jit, static_argnames=("kind", "shape", "dtype"))
def _device_value(key, a, b, kind: str, shape: tuple[int, ...], dtype):
    if kind == "uniform":
        return jax.random.uniform(key, shape, jnp.float32, a, b).astype(dtype)
    if kind == "const":
        return jnp.full(shape, a, dtype)
    return (a + b * jax.random.normal(key, shape, jnp.float32)).astype(dtype)


def random_tree(entries: list[Entry], seed: int, dtype: Any = jnp.float32, on_device: bool = False) -> dict:
    """Seeded random values for every entry (rules in `init_rule`). `on_device`: drawn by
    `jax.random` on the default device (same distributions, other values), so a full-size model
    needs no host build and no host-to-device copy of its gigabytes (a numpy build of the 0.6B
    model took 79 s on the loaded 2-core CPU machine); otherwise numpy, the same on every machine."""
    rng = np.random.default_rng(seed)
    key = jax.random.PRNGKey(seed)
    tree: dict = {}
    for i, e in enumerate(entries):
        want = jnp.float32 if e.keep_fp32 else dtype
        if on_device:
            kind, a, b = init_rule(e)
            value = _device_value(jax.random.fold_in(key, i), a, b, kind, tuple(e.shape), jnp.dtype(want))
        else:
            value = jnp.asarray(_numpy_value(rng, e), want)
        _set(tree, e.target, value)
    return tree


def random_model_params(cfg: Qwen3TTSConfig, seed: int = 0, dtype: Any = jnp.float32, on_device: bool = False) -> dict:
    return random_tree(model_entries(cfg), seed, dtype, on_device)


def random_codec_params(codec_cfg, seed: int = 0, dtype: Any = jnp.float32, on_device: bool = False) -> dict:
    from qwen3tts_jax.codec.weights import codec_entries

    tree = random_tree(codec_entries(codec_cfg), seed + 1, dtype, on_device)
    return {"encoder": tree["encoder"], "decoder": tree["decoder"]}


def byte_level_tokenizer_dir(folder: Path | None = None) -> Path:
    """A tokenizer folder (vocab.json, merges.txt, tokenizer_config.json) with the 256 byte
    tokens of GPT-2's byte-to-unicode map and the Qwen special tokens at their real ids."""
    folder = Path(folder or tempfile.mkdtemp(prefix="qwen3tts-bytes-"))
    folder.mkdir(parents=True, exist_ok=True)
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, n = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    vocab = {chr(c): i for i, c in enumerate(chars)}
    # The prompt format assumes "assistant" and "user" are single tokens (as in the real
    # vocabulary, ids 77091 and 872): merge them from their bytes.
    merges, next_id = [], 256
    for word, word_id in (("assistant", 77091), ("user", 872)):
        for n in range(2, len(word) + 1):
            merges.append(f"{word[: n - 1]} {word[n - 1]}")
            if word[:n] not in vocab:
                if n == len(word):
                    vocab[word] = word_id
                else:
                    vocab[word[:n]], next_id = next_id, next_id + 1
    # Unreachable fillers (no merges produce them) so the special tokens keep their real ids.
    taken = set(vocab.values())
    vocab.update({f"<|unused_{i}|>": i for i in range(256, min(SPECIAL_TOKENS)) if i not in taken})
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("\n".join(merges) + "\n")
    added = {i: SPECIAL_TOKENS.get(i, f"<|reserved_{i}|>") for i in range(min(SPECIAL_TOKENS), max(SPECIAL_TOKENS) + 1)}
    decoder = {
        str(i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, t in added.items()
    }
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "added_tokens_decoder": decoder,
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "model_max_length": 131072,
                "clean_up_tokenization_spaces": False,
                "split_special_tokens": False,
            }
        )
    )
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen3_tts", "transformers_version": "4.57.3"}))
    return folder


def byte_level_text_tokenizer():
    """The byte-level `TextTokenizer`, built from files in a temporary folder that is removed
    again (the tokenizer keeps nothing on disk)."""
    from qwen3tts_jax.text import TextTokenizer

    with tempfile.TemporaryDirectory(prefix="qwen3tts-bytes-") as folder:
        return TextTokenizer.from_pretrained(byte_level_tokenizer_dir(Path(folder)))


# The released config.json files record the transformers version they were saved with; the text
# tokenizer's split-pattern choice reads it (`text.reference_split_pattern`).
_TRANSFORMERS_VERSION = "4.57.3"


def _tensors(entries: list[Entry], tree: dict) -> dict[str, np.ndarray]:
    out = {}
    for e in entries:
        node = tree
        for name in e.target:
            node = node[name]
        out[e.key] = np.asarray(node)
    return out


def save_random_model(spec: str, out: str | os.PathLike, seed: int = 0) -> Path:
    """Write the `random:` model `spec` (weights drawn from `seed`, float32) to the new folder
    `out` in the released layout; the folder appears complete or not at all."""
    from safetensors.numpy import save_file

    from qwen3tts_jax.atomic import atomic_path
    from qwen3tts_jax.checks import check_new_folder, check_seed
    from qwen3tts_jax.codec.config import Qwen3TTSTokenizerV2Config
    from qwen3tts_jax.codec.weights import codec_entries

    kind, size = parse_random_spec(spec)
    seed = check_seed(seed)
    out = check_new_folder(out, "OUT")
    cfg_dict = {**presets.model_config(kind, size), "transformers_version": _TRANSFORMERS_VERSION}
    cfg = Qwen3TTSConfig.from_dict(cfg_dict, f"{spec} config")
    codec_dict = presets.tokenizer_config(tiny=size == "tiny")
    codec_cfg = Qwen3TTSTokenizerV2Config.from_dict(codec_dict, f"{spec} tokenizer config")
    with atomic_path(out, folder=True, replace=False) as tmp:
        byte_level_tokenizer_dir(tmp)  # vocab.json, merges.txt, tokenizer_config.json (+ a config.json replaced below)
        (tmp / "config.json").write_text(json.dumps(cfg_dict, indent=2))
        (tmp / "generation_config.json").write_text(json.dumps(presets.random_generation_config(), indent=2))
        entries = model_entries(cfg)
        save_file(_tensors(entries, random_model_params(cfg, seed)), str(tmp / "model.safetensors"))
        st = tmp / "speech_tokenizer"
        st.mkdir()
        (st / "config.json").write_text(json.dumps(codec_dict, indent=2))
        codec = _tensors(codec_entries(codec_cfg), random_codec_params(codec_cfg, seed))
        save_file(codec, str(st / "model.safetensors"))
    return out


def parse_random_spec(spec: str) -> tuple[str, str]:
    """`random:0.6b-base` → ("base", "0b6")."""
    name = spec.split(":", 1)[1] if spec.startswith("random:") else spec
    if name not in presets.RANDOM_MODELS:
        raise ValueError(f"model {spec!r}: unknown random model; choose one of {presets.random_model_names()}")
    return presets.RANDOM_MODELS[name]
