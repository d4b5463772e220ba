"""Text side: the Qwen2 byte-level BPE tokenizer and the prompt formatting of the qwen_tts wrapper.

Mirrors, without importing transformers:

* `transformers.Qwen2TokenizerFast` (4.57.3) as the reference builds it from a model folder's
  `vocab.json` + `merges.txt` + `tokenizer_config.json` (`convert_slow_tokenizer.Qwen2Converter`:
  NFC normaliser, a regex `Split` then `ByteLevel` pre-tokeniser, BPE without unk/dropout,
  ByteLevel decoder and post-processor that add no BOS/EOS), with the added tokens of
  `added_tokens_decoder` at their ids and split out of the text before anything else.
* `AutoProcessor.from_pretrained(path, fix_mistral_regex=True)` in `Qwen3TTSModel.from_pretrained`.
  The flag is *not* a no-op for a Qwen tokenizer: `PreTrainedTokenizerBase._patch_mistral_regex`
  replaces the Split regex by a Mistral one when the folder is local, the vocabulary has more than
  100,000 entries and `config.json` has a `transformers_version` above 4.57.2 and below 5.0.0 (or
  none). Users report that warning for released folders loaded from disk without the flag, so
  with it the patched regex is what the reference runs on a local folder; loaded from a hub id
  (`_is_local` false) the Qwen2 regex stays. `reference_split_pattern` replicates the local-folder
  rule and `split_pattern=` overrides it. Measured on the real vocabulary, the two give different
  ids for mixed-case words (" iPhone": one token vs " i" + "Phone") and for letters with combining
  marks (Thai), and the same ids on the other test texts of the ten supported languages.
* `Qwen3TTSModel._build_assistant_text`, `_build_ref_text`, `_build_instruct_text` and
  `_tokenize_texts`, and the slices `Qwen3TTSForConditionalGeneration.generate` takes:
  role `input_id[:, :3]`, text `input_id[:, 3:-5]`, ICL reference text `ref_id[:, 3:-2]`; the
  instruct ids are used whole.

One deliberate difference: the reference slices blindly. A text starting with a line break merges
with the role's "\\n" (the BPE sees "assistant\\n\\nHello"), so `[:3]` is no longer the role and the
reference silently builds a wrong prompt; here that raises a ValueError naming the argument.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import tokenizers
from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

# `transformers.models.qwen2.tokenization_qwen2.PRETOKENIZE_REGEX`, as in Qwen2Converter.
QWEN2_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# The regex `_patch_mistral_regex` (transformers 4.57.3) puts in place of the first pre-tokeniser.
MISTRAL_FIX_SPLIT_REGEX = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPLIT_REGEXES = {"qwen2": QWEN2_SPLIT_REGEX, "mistral_fix": MISTRAL_FIX_SPLIT_REGEX}
SplitPattern = Literal["auto", "qwen2", "mistral_fix"]

# `_patch_mistral_regex`'s constants: the model types it treats as Mistral, the vocabulary size
# above which it looks at all, and the transformers versions whose saved configs it trusts.
_MISTRAL_MODEL_TYPES = ("mistral", "mistral3", "voxtral", "ministral", "pixtral")
_PATCH_MIN_VOCAB = 100_000
_LAST_UNPATCHED_VERSION = "4.57.2"
_FIRST_FIXED_VERSION = "5.0.0"

# Token strings of the released Qwen3-TTS tokenizer_config.json (ids 151644, 151645, 151671-3).
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
TTS_PAD = "<tts_pad>"
TTS_BOS = "<tts_text_bos>"
TTS_EOS = "<tts_text_eod>"

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
TOKENIZER_FILE = "tokenizer.json"
MODEL_CONFIG_FILE = "config.json"

_ADDED_TOKEN_FLAGS = ("single_word", "lstrip", "rstrip", "normalized", "special")
# tokenizer_config.json keys naming special-token strings: HF marks these special and adds any
# that `added_tokens_decoder` lacks; we require them present instead of inventing ids.
_SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")


# --------------------------------------------------------------------------- file reading


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def _token_string(value: Any, path: Path, key: str) -> str | None:
    """A special-token entry: a string, an AddedToken dict (`content`), or null."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"{path}: {key} must be a string, an AddedToken object or null, got {value!r}")


@dataclasses.dataclass(frozen=True)
class AddedTokenSpec:
    """One `added_tokens_decoder` entry of tokenizer_config.json."""

    id: int
    content: str
    single_word: bool = False
    lstrip: bool = False
    rstrip: bool = False
    normalized: bool = False
    special: bool = True


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    """The parts of tokenizer_config.json that change encoding (the rest only matter to HF)."""

    added_tokens: tuple[AddedTokenSpec, ...]
    special_strings: tuple[str, ...]  # bos/eos/unk/pad + additional_special_tokens
    split_special_tokens: bool = False

    @classmethod
    def from_file(cls, path: Path) -> TokenizerConfig:
        data = _read_json(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
        decoder = data.get("added_tokens_decoder", {})
        if not isinstance(decoder, dict):
            raise ValueError(f"{path}: added_tokens_decoder must be an object of id -> token")
        added = tuple(sorted((_added_token(k, v, path) for k, v in decoder.items()), key=lambda t: t.id))
        if data.get("add_prefix_space", False):
            # Qwen2TokenizerFast ignores it for the Split+ByteLevel sequence; refuse rather than guess.
            raise ValueError(f"{path}: add_prefix_space=true is not supported for the Qwen2 BPE")
        strings = [_token_string(data.get(k), path, k) for k in _SPECIAL_TOKEN_KEYS]
        extra = data.get("additional_special_tokens") or []
        if not isinstance(extra, list):
            raise ValueError(f"{path}: additional_special_tokens must be a list")
        strings += [_token_string(v, path, "additional_special_tokens") for v in extra]
        return cls(
            added_tokens=added,
            special_strings=tuple(s for s in strings if s is not None),
            split_special_tokens=bool(data.get("split_special_tokens", False)),
        )


def _added_token(key: str, entry: Any, path: Path) -> AddedTokenSpec:
    where = f"{path}: added_tokens_decoder[{key!r}]"
    try:
        token_id = int(key)
    except ValueError:
        raise ValueError(f"{where}: the key must be an integer token id") from None
    if not isinstance(entry, dict) or not isinstance(entry.get("content"), str) or not entry["content"]:
        raise ValueError(f"{where}: needs a non-empty string 'content', got {entry!r}")
    flags = {k: bool(entry[k]) for k in _ADDED_TOKEN_FLAGS if k in entry}
    return AddedTokenSpec(id=token_id, content=entry["content"], **flags)


# --------------------------------------------------------------------------- the split regex


def _version(text: Any, path: Path):
    from packaging.version import InvalidVersion, Version  # a huggingface_hub dependency

    try:
        return Version(str(text))
    except InvalidVersion:
        raise ValueError(f"{path}: transformers_version {text!r} is not a version") from None


def reference_split_pattern(model_dir: str | Path, vocab_size: int) -> Literal["qwen2", "mistral_fix"]:
    """Which Split regex the reference tokenizer runs for this local folder.

    Replicates `PreTrainedTokenizerBase._patch_mistral_regex` (transformers 4.57.3) called with
    `_is_local=True, fix_mistral_regex=True`, as `Qwen3TTSModel.from_pretrained(local_dir)` does.
    `vocab_size` is the BPE vocabulary without added tokens (151,643 for Qwen).
    """
    config_path = Path(model_dir) / MODEL_CONFIG_FILE
    if vocab_size <= _PATCH_MIN_VOCAB or not config_path.is_file():
        return "qwen2"
    config = _read_json(config_path)
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: expected a JSON object, got {type(config).__name__}")
    version = config.get("transformers_version")
    model_type = config.get("model_type")
    # Same truthiness tests as the reference: an absent or empty version falls through to the patch.
    if version and _version(version, config_path) <= _version(_LAST_UNPATCHED_VERSION, config_path):
        if model_type is not None and model_type not in _MISTRAL_MODEL_TYPES:
            return "qwen2"
    elif version and _version(version, config_path) >= _version(_FIRST_FIXED_VERSION, config_path):
        return "qwen2"
    return "mistral_fix"


def _split(pattern: str) -> pre_tokenizers.Split:
    return pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False)


# --------------------------------------------------------------------------- backend building


def _qwen2_backend(vocab_path: Path, merges_path: Path, split_regex: str) -> tokenizers.Tokenizer:
    """`Qwen2Converter.converted()`: the fast tokenizer HF builds from vocab.json + merges.txt."""
    for path in (vocab_path, merges_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: file not found (needed to build the text tokenizer)")
    try:
        model = BPE.from_file(
            str(vocab_path),
            str(merges_path),
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    except Exception as err:  # the Rust reader reports which line it choked on, not which file
        raise ValueError(f"{vocab_path} / {merges_path}: cannot build the BPE ({err})") from err
    backend = tokenizers.Tokenizer(model)
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [_split(split_regex), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    return backend


def _file_backend(path: Path) -> tokenizers.Tokenizer:
    """A folder's tokenizer.json, which Qwen2TokenizerFast prefers over vocab.json + merges.txt."""
    try:
        return tokenizers.Tokenizer.from_file(str(path))
    except Exception as err:
        raise ValueError(f"{path}: cannot load the tokenizer ({err})") from err


def _patch_split(backend: tokenizers.Tokenizer, pattern: str, path: Path) -> None:
    """Overwrite the first pre-tokeniser of the sequence, exactly where the reference patches."""
    if not isinstance(backend.pre_tokenizer, pre_tokenizers.Sequence):
        raise ValueError(
            f"{path}: the pre_tokenizer is not a Sequence; cannot apply the split regex the reference would patch in"
        )
    backend.pre_tokenizer[0] = _split(pattern)


def _add_tokens(backend: tokenizers.Tokenizer, config: TokenizerConfig, path: Path) -> None:
    """Add `added_tokens_decoder` in id order and check each landed on its id."""
    specials = set(config.special_strings)
    backend.add_tokens(
        [
            AddedToken(
                t.content,
                single_word=t.single_word,
                lstrip=t.lstrip,
                rstrip=t.rstrip,
                normalized=t.normalized,
                special=t.special or t.content in specials,
            )
            for t in config.added_tokens
        ]
    )
    for t in config.added_tokens:
        got = backend.token_to_id(t.content)
        if got != t.id:
            raise ValueError(
                f"{path}: added token {t.content!r} should have id {t.id} but gets {got} "
                "(the added ids must follow the vocabulary without gaps)"
            )
    for s in config.special_strings:
        if backend.token_to_id(s) is None:
            raise ValueError(f"{path}: special token {s!r} is neither in added_tokens_decoder nor in the vocabulary")
    backend.encode_special_tokens = config.split_special_tokens


# --------------------------------------------------------------------------- the tokenizer


@dataclasses.dataclass(frozen=True)
class SpecialTokenIds:
    """Ids of the control tokens the prompt uses (None where the tokenizer lacks the token)."""

    im_start: int
    im_end: int
    endoftext: int | None = None
    tts_pad: int | None = None
    tts_bos: int | None = None
    tts_eos: int | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class TextTokenizer:
    """The reference's `Qwen2TokenizerFast` on the `tokenizers` library.

    `backend` is a Rust object; do not mutate it (`frozen` only freezes the fields).
    """

    backend: tokenizers.Tokenizer
    special: SpecialTokenIds
    split_pattern: Literal["qwen2", "mistral_fix"]
    source: str  # the folder, for error messages

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, *, split_pattern: SplitPattern = "auto") -> TextTokenizer:
        """Load from a model folder: vocab.json + merges.txt (or tokenizer.json) + tokenizer_config.json.

        `split_pattern="auto"` picks the regex the reference picks for this local folder
        (`reference_split_pattern`); "qwen2" matches a reference loaded from a hub id.
        """
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise FileNotFoundError(f"{model_dir}: model folder not found")
        if split_pattern not in ("auto", *SPLIT_REGEXES):
            raise ValueError(f"split_pattern={split_pattern!r}: expected 'auto', 'qwen2' or 'mistral_fix'")
        config_path = model_dir / TOKENIZER_CONFIG_FILE
        config = TokenizerConfig.from_file(config_path)
        file_path = model_dir / TOKENIZER_FILE
        if file_path.is_file():
            backend, source = _file_backend(file_path), file_path
        else:
            backend = _qwen2_backend(model_dir / VOCAB_FILE, model_dir / MERGES_FILE, QWEN2_SPLIT_REGEX)
            source = model_dir / VOCAB_FILE
        chosen = split_pattern
        if chosen == "auto":
            chosen = reference_split_pattern(model_dir, backend.get_vocab_size(with_added_tokens=False))
        if chosen == "mistral_fix":
            _patch_split(backend, MISTRAL_FIX_SPLIT_REGEX, source)
        _add_tokens(backend, config, config_path)
        return cls(
            backend=backend, special=_special_ids(backend, config_path), split_pattern=chosen, source=str(model_dir)
        )

    def encode(self, text: str) -> list[int]:
        """`tokenizer(text)["input_ids"]`: no BOS/EOS; special-token strings in `text` become their ids."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected str, got {type(text).__name__}")
        # add_special_tokens=True as HF calls it; the ByteLevel post-processor adds nothing.
        return self.backend.encode(text, add_special_tokens=True).ids

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        """`tokenizer.decode(ids)` (clean_up_tokenization_spaces is false in the released config)."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        """Entries including the added tokens (151,676 for the released folders)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    # Thin conveniences over the module functions below.
    def assistant_text_ids(self, text: str) -> AssistantTextIds:
        return tokenize_assistant_text(self, text)

    def ref_text_ids(self, ref_text: str) -> RefTextIds:
        return tokenize_ref_text(self, ref_text)

    def instruct_ids(self, instruct: str) -> InstructIds:
        return tokenize_instruct_text(self, instruct)


def _special_ids(backend: tokenizers.Tokenizer, path: Path) -> SpecialTokenIds:
    def required(token: str) -> int:
        token_id = backend.token_to_id(token)
        if token_id is None:
            raise ValueError(f"{path}: the prompt needs the token {token!r}; add it to added_tokens_decoder")
        return token_id

    return SpecialTokenIds(
        im_start=required(IM_START),
        im_end=required(IM_END),
        endoftext=backend.token_to_id(ENDOFTEXT),
        tts_pad=backend.token_to_id(TTS_PAD),
        tts_bos=backend.token_to_id(TTS_BOS),
        tts_eos=backend.token_to_id(TTS_EOS),
    )


# --------------------------------------------------------------------------- prompt formatting


def build_assistant_text(text: str) -> str:
    """`Qwen3TTSModel._build_assistant_text`: the target text's chat turn plus the next header."""
    return f"{IM_START}assistant\n{text}{IM_END}\n{IM_START}assistant\n"


def build_ref_text(ref_text: str) -> str:
    """`Qwen3TTSModel._build_ref_text`: the ICL reference transcript's chat turn."""
    return f"{IM_START}assistant\n{ref_text}{IM_END}\n"


def build_instruct_text(instruct: str) -> str:
    """`Qwen3TTSModel._build_instruct_text`: the voice instruction as a user turn."""
    return f"{IM_START}user\n{instruct}{IM_END}\n"


@dataclasses.dataclass(frozen=True)
class AssistantTextIds:
    """`_tokenize_texts([_build_assistant_text(text)])[0]` and the slices `generate` takes."""

    input_ids: tuple[int, ...]

    @property
    def role(self) -> tuple[int, ...]:
        """`input_id[:, :3]`: <|im_start|> assistant \\n."""
        return self.input_ids[:3]

    @property
    def text(self) -> tuple[int, ...]:
        """`input_id[:, 3:-5]`: the text tokens."""
        return self.input_ids[3:-5]

    @property
    def tail(self) -> tuple[int, ...]:
        """`input_id[:, -5:]`: <|im_end|> \\n <|im_start|> assistant \\n (not fed to the talker)."""
        return self.input_ids[-5:]


@dataclasses.dataclass(frozen=True)
class RefTextIds:
    """`_tokenize_texts([_build_ref_text(ref_text)])[0]`; `generate_icl_prompt` uses `[:, 3:-2]`."""

    input_ids: tuple[int, ...]

    @property
    def role(self) -> tuple[int, ...]:
        return self.input_ids[:3]

    @property
    def text(self) -> tuple[int, ...]:
        """`ref_id[:, 3:-2]`: the reference transcript tokens."""
        return self.input_ids[3:-2]

    @property
    def tail(self) -> tuple[int, ...]:
        return self.input_ids[-2:]


@dataclasses.dataclass(frozen=True)
class InstructIds:
    """`_tokenize_texts([_build_instruct_text(instruct)])[0]`; all of it is prepended to the prompt."""

    input_ids: tuple[int, ...]


def _require_text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected str, got {type(value).__name__}")
    if value == "":
        # The reference would slice an empty text span and fail deep inside generate.
        raise ValueError(f"{name}: must be a non-empty string")
    return value


def _role_ids(tok: TextTokenizer, role: str) -> tuple[int, ...]:
    return (tok.special.im_start, *tok.encode(role), *tok.encode("\n"))


def _check_slices(tok: TextTokenizer, ids: tuple[int, ...], value: str, name: str, tail: tuple[int, ...]) -> None:
    """Check the reference's fixed-width slices cut where it assumes."""
    head = _role_ids(tok, "assistant")
    shown = value if len(value) <= 40 else value[:40] + "..."
    if ids[: len(head)] != head:
        raise ValueError(
            f"{name}={shown!r}: the formatted prompt starts with ids {list(ids[: len(head)])}, not the "
            f"role {list(head)} (<|im_start|>assistant\\n); a leading line break merges with the role's "
            f"newline and the reference's [:3] slice would cut the wrong tokens. Strip it."
        )
    if ids[-len(tail) :] != tail or len(ids) <= len(head) + len(tail):
        raise ValueError(
            f"{name}={shown!r}: the formatted prompt does not end with {list(tail)} after at least one "
            f"text token (got {list(ids)})"
        )


def tokenize_assistant_text(tok: TextTokenizer, text: str) -> AssistantTextIds:
    """Tokenise `build_assistant_text(text)` whole, as the reference, and check its slices."""
    text = _require_text(text, "text")
    ids = tuple(tok.encode(build_assistant_text(text)))
    tail = (tok.special.im_end, *tok.encode("\n"), *_role_ids(tok, "assistant"))
    _check_slices(tok, ids, text, "text", tail)
    return AssistantTextIds(ids)


def tokenize_ref_text(tok: TextTokenizer, ref_text: str) -> RefTextIds:
    """Tokenise `build_ref_text(ref_text)` whole and check the `[3:-2]` slice.

    The reference maps a None or "" ref_text to "no ICL" before calling this; do that in the caller.
    """
    ref_text = _require_text(ref_text, "ref_text")
    ids = tuple(tok.encode(build_ref_text(ref_text)))
    _check_slices(tok, ids, ref_text, "ref_text", (tok.special.im_end, *tok.encode("\n")))
    return RefTextIds(ids)


def tokenize_instruct_text(tok: TextTokenizer, instruct: str) -> InstructIds:
    """Tokenise `build_instruct_text(instruct)`; nothing is sliced, so no boundary check.

    The reference maps a None or "" instruct to "no instruct" before calling this; do that in the
    caller.
    """
    instruct = _require_text(instruct, "instruct")
    return InstructIds(tuple(tok.encode(build_instruct_text(instruct))))
