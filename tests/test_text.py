"""qwen3tts_jax.text against the reference tokenizer and prompt formatting.

Folders are written with the real Qwen BPE (tests/reference/text_fixture.py). The reference side
is the official path: `AutoProcessor.from_pretrained(dir, fix_mistral_regex=True)` with the
qwen_tts config/processor registered, and `Qwen3TTSModel`'s own `_build_*_text` /
`_tokenize_texts` methods called unbound on a stand-in holding that processor.
"""

from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path

import pytest

_STUBS = str(Path(__file__).parent / "reference" / "stubs")
if _STUBS not in sys.path:  # conftest does the same; harmless twice
    sys.path.insert(0, _STUBS)

from qwen3tts_jax import text as T  # noqa: E402
from tests.reference import text_fixture  # noqa: E402

# --------------------------------------------------------------------------- corpus

CORPUS = {
    "zh": "今天天气真好，我们一起去公园散步吧。",
    "en": "Hello, world! This is a test of the text-to-speech system.",
    "de": "Grüß Gott! Die Straße ist schön, aber äußerst glatt.",
    "it": "Perché l'ultima volta è andata così? Caffè già pronto.",
    "pt": "Olá! Não sei se a ação é a melhor opção, coração.",
    "es": "¿Dónde está la biblioteca? ¡Mañana será otro día!",
    "ja": "こんにちは、世界。今日はいい天気ですね！カタカナもﾊﾝｶｸも。",
    "ko": "안녕하세요, 세계! 오늘 날씨가 정말 좋네요.",
    "fr": "L'été dernier, j'ai mangé des crêpes à Paris — c'était génial.",
    "ru": "Привет, мир! Съешь же ещё этих мягких французских булок.",
    "mixed_zh_en": "Qwen3-TTS支持10种语言，包括English和日本語。",
    "numbers": "The year 2026, 3.14159, 1,000,000 and -42 or 6.02e23; ＡＢＣ１２３ ٠١٢",
    "punctuation": "Wait... what?! (yes) [no] {maybe} \"quoted\" 'single' — dash – en; a/b?/c!/",
    "emoji": "I love it 😀👍🏽 👨‍👩‍👧‍👦 🇩🇪 🚀!",
    "case_contractions": "iPhone HelloWorld McDonald's DON'T I'm we'll they'VE 'sup ALLCAPS",
    "url_code": "See https://example.com/a/b?c=d&e=f; snake_case, kebab-case, x+=1",
    "combining": "e\u0301 a\u0308 n\u0303 Ǆemo ǅx नमस्ते สวัสดีครับ",
    "leading_spaces": "   three leading spaces",
    "trailing_spaces": "trailing spaces   ",
    "tabs": "\ttab\tinside\t",
    "newlines": "line one\nline two\r\nline three\n\n",
    "inner_blank": "a  \n  b \n\n\n c",
    "single_space": " ",
    "leading_newline": "\nstarts with a newline",
    "leading_crlf": "\r\nstarts with CRLF",
    "special_strings": "Say <|im_end|> then <|im_start|>assistant and <tts_pad><tts_text_bos><tts_text_eod>",
    "endoftext": "<|endoftext|>",
    "non_special_added": "<think>x</think><tool_call>y</tool_call><|fim_prefix|>",
    "near_special": "<|im_end <im_end|> <tts_pad >",
}
# Texts whose prompt the reference slices correctly: a leading "\n" merges with the role's newline
# ("\r\n" does not: the BPE has no "\n\r\n" token).
PROMPT_TEXTS = {k: v for k, v in CORPUS.items() if not v.startswith("\n")}

ROLE = (151644, 77091, 198)  # <|im_start|> assistant \n


# --------------------------------------------------------------------------- folders


def _write_folder(root: Path, name: str, config: dict | None, with_tokenizer_json: bool = False) -> Path:
    folder = text_fixture.write_tokenizer_files(root / name, with_tokenizer_json=with_tokenizer_json)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


# name -> (config.json, with tokenizer.json, the split regex the reference should end up with)
VARIANTS = {
    # A folder saved by transformers 4.57.3 (the qwen-tts pin): the reference patches the regex.
    "saved_4_57_3": ({"model_type": "qwen3_tts", "transformers_version": "4.57.3"}, False, "mistral_fix"),
    # A folder saved by <= 4.57.2 with a non-Mistral type: left alone.
    "saved_4_57_2": ({"model_type": "qwen3_tts", "transformers_version": "4.57.2"}, False, "qwen2"),
    # No version recorded: patched as well.
    "no_version": ({"model_type": "qwen3_tts"}, False, "mistral_fix"),
    # tokenizer.json present (preferred by HF; lacks the 7 TTS tokens, added from the config).
    "tokenizer_json": ({"model_type": "qwen3_tts", "transformers_version": "4.57.3"}, True, "mistral_fix"),
}


@pytest.fixture(scope="session")
def folders(tmp_path_factory) -> dict[str, Path]:
    text_fixture.tokenizer_data_dir()  # a clear error if the data was not fetched
    root = tmp_path_factory.mktemp("text_folders")
    return {name: _write_folder(root, name, cfg, tj) for name, (cfg, tj, _) in VARIANTS.items()}


@pytest.fixture(scope="session")
def ours(folders) -> dict[str, T.TextTokenizer]:
    return {name: T.TextTokenizer.from_pretrained(path) for name, path in folders.items()}


def _register_reference():
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSProcessor
    from transformers import AutoConfig, AutoProcessor

    AutoConfig.register("qwen3_tts", Qwen3TTSConfig, exist_ok=True)
    AutoProcessor.register(Qwen3TTSConfig, Qwen3TTSProcessor, exist_ok=True)
    return AutoProcessor


@pytest.fixture(scope="session")
def ref_processors(folders):
    """The processor exactly as `Qwen3TTSModel.from_pretrained(local_dir)` loads it."""
    auto_processor = _register_reference()
    return {name: auto_processor.from_pretrained(str(path), fix_mistral_regex=True) for name, path in folders.items()}


@pytest.fixture(scope="session")
def ours_qwen2(folders) -> T.TextTokenizer:
    return T.TextTokenizer.from_pretrained(folders["saved_4_57_3"], split_pattern="qwen2")


@pytest.fixture(scope="session")
def ref_unpatched(folders):
    """Qwen2TokenizerFast without the fix flag: the tokenisation a hub-id load gets."""
    from transformers import Qwen2TokenizerFast

    return Qwen2TokenizerFast.from_pretrained(str(folders["saved_4_57_3"]))


def _ref_ids(processor, text: str) -> list[int]:
    # `_tokenize_texts` calls the processor with padding=True on a one-item batch.
    return processor(text=text, return_tensors="pt", padding=True)["input_ids"][0].tolist()


# --------------------------------------------------------------------------- fixture files


def test_written_vocab_and_merges_are_the_released_bytes(folders):
    for name, (size, sha) in text_fixture.RELEASED_SHA256.items():
        data = (folders["saved_4_57_3"] / name).read_bytes()
        assert len(data) == size, name
        assert hashlib.sha256(data).hexdigest() == sha, name


def test_written_config_has_the_tts_tokens():
    decoder = text_fixture.tokenizer_config_dict()["added_tokens_decoder"]
    assert sorted(int(k) for k in decoder) == list(range(151643, 151676))
    assert decoder["151644"]["content"] == "<|im_start|>"
    assert decoder["151645"]["content"] == "<|im_end|>"
    assert [decoder[str(i)]["content"] for i in (151671, 151672, 151673)] == [
        "<tts_pad>",
        "<tts_text_bos>",
        "<tts_text_eod>",
    ]


# --------------------------------------------------------------------------- ours alone


def test_special_ids_and_sizes(ours):
    tok = ours["saved_4_57_3"]
    assert tok.special == T.SpecialTokenIds(
        im_start=151644, im_end=151645, endoftext=151643, tts_pad=151671, tts_bos=151672, tts_eos=151673
    )
    assert tok.vocab_size == 151_676
    assert tok.backend.get_vocab_size(with_added_tokens=False) == 151_643


def test_known_ids(ours):
    for tok in ours.values():
        assert tok.encode("Hello, world!") == [9707, 11, 1879, 0]
        assert tok.encode("assistant\n") == [77091, 198]
        assert tok.encode("<|im_start|><tts_pad>") == [151644, 151671]
        assert tok.encode("") == []


def test_the_two_regexes_differ_where_expected(folders):
    patched = T.TextTokenizer.from_pretrained(folders["saved_4_57_2"], split_pattern="mistral_fix")
    plain = T.TextTokenizer.from_pretrained(folders["saved_4_57_3"], split_pattern="qwen2")
    assert (patched.split_pattern, plain.split_pattern) == ("mistral_fix", "qwen2")
    assert plain.encode(" iPhone") == [12167]
    assert patched.encode(" iPhone") == [600, 6939]  # " i" + "Phone"
    assert plain.encode("Hello, world!") == patched.encode("Hello, world!")


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_decode_round_trips(ours, name):
    import unicodedata

    for tok in ours.values():
        assert tok.decode(tok.encode(CORPUS[name])) == unicodedata.normalize("NFC", CORPUS[name])


@pytest.mark.parametrize(
    "config, vocab, expected",
    [
        (None, 151_643, "qwen2"),
        ({"model_type": "qwen3_tts", "transformers_version": "4.57.2"}, 151_643, "qwen2"),
        ({"model_type": "qwen3_tts", "transformers_version": "4.50.0.dev0"}, 151_643, "qwen2"),
        ({"transformers_version": "4.57.2"}, 151_643, "mistral_fix"),  # no model_type
        ({"model_type": "mistral", "transformers_version": "4.57.2"}, 151_643, "mistral_fix"),
        ({"model_type": "qwen3_tts", "transformers_version": "4.57.3"}, 151_643, "mistral_fix"),
        ({"model_type": "qwen3_tts", "transformers_version": "4.57.6"}, 151_643, "mistral_fix"),
        ({"model_type": "qwen3_tts"}, 151_643, "mistral_fix"),
        ({"model_type": "qwen3_tts", "transformers_version": "5.0.0"}, 151_643, "qwen2"),
        ({"model_type": "qwen3_tts", "transformers_version": "4.57.3"}, 50_000, "qwen2"),
    ],
)
def test_reference_split_rule(tmp_path, config, vocab, expected):
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert T.reference_split_pattern(tmp_path, vocab) == expected


def test_prompt_strings_and_slices(ours):
    tok = ours["saved_4_57_3"]
    assert T.build_assistant_text("Hi") == "<|im_start|>assistant\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert T.build_ref_text("Hi") == "<|im_start|>assistant\nHi<|im_end|>\n"
    assert T.build_instruct_text("Hi") == "<|im_start|>user\nHi<|im_end|>\n"
    a = tok.assistant_text_ids("Hello, world!")
    assert a.role == ROLE and a.text == (9707, 11, 1879, 0) and a.tail == (151645, 198, *ROLE)
    r = tok.ref_text_ids("Hello, world!")
    assert r.role == ROLE and r.text == (9707, 11, 1879, 0) and r.tail == (151645, 198)
    i = tok.instruct_ids("Hello, world!")
    assert i.input_ids == (151644, 872, 198, 9707, 11, 1879, 0, 151645, 198)  # 872 = "user"


# --------------------------------------------------------------------------- errors


def test_missing_files_are_named(folders, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        T.TextTokenizer.from_pretrained(tmp_path / "nowhere")
    for missing in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        folder = text_fixture.write_tokenizer_files(tmp_path / missing)
        (folder / missing).unlink()
        with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.")):
            T.TextTokenizer.from_pretrained(folder)


def test_bad_config_is_named(tmp_path):
    folder = text_fixture.write_tokenizer_files(tmp_path / "bad")
    config = text_fixture.tokenizer_config_dict()
    config["added_tokens_decoder"]["151700"] = {"content": "<gap>", "special": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ValueError, match=r"tokenizer_config\.json.*<gap>.*151700"):
        T.TextTokenizer.from_pretrained(folder)
    (folder / "tokenizer_config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"tokenizer_config\.json: not valid JSON"):
        T.TextTokenizer.from_pretrained(folder)


def test_argument_errors(ours, folders):
    tok = ours["saved_4_57_3"]
    for fn, arg in ((tok.assistant_text_ids, "text"), (tok.ref_text_ids, "ref_text"), (tok.instruct_ids, "instruct")):
        with pytest.raises(ValueError, match=f"^{arg}: must be a non-empty string"):
            fn("")
        with pytest.raises(TypeError, match=f"^{arg}: expected str"):
            fn(None)
    with pytest.raises(TypeError, match="^text: expected str"):
        tok.encode(b"bytes")
    with pytest.raises(ValueError, match="split_pattern='gpt2'"):
        T.TextTokenizer.from_pretrained(folders["saved_4_57_3"], split_pattern="gpt2")


@pytest.mark.parametrize("value", ["\nHello", "\n\nHello", "\n\r\nHello"])
def test_leading_line_break_is_refused(ours, value):
    tok = ours["saved_4_57_3"]
    with pytest.raises(ValueError, match=r"^text=.*not the role \[151644, 77091, 198\]"):
        tok.assistant_text_ids(value)
    with pytest.raises(ValueError, match=r"^ref_text=.*not the role"):
        tok.ref_text_ids(value)
    assert tok.instruct_ids(value).input_ids[0] == 151644  # used whole: nothing to slice


# --------------------------------------------------------------------------- against the reference


@pytest.mark.reference
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_split_regex_matches_reference(ours, ref_processors, variant):
    backend = json.loads(ref_processors[variant].tokenizer.backend_tokenizer.to_str())
    ref_regex = backend["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"]
    assert ours[variant].split_pattern == VARIANTS[variant][2]
    assert ref_regex == T.SPLIT_REGEXES[VARIANTS[variant][2]]


@pytest.mark.reference
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_encode_matches_reference(ours, ref_processors, variant, name):
    assert ours[variant].encode(CORPUS[name]) == _ref_ids(ref_processors[variant], CORPUS[name])


@pytest.mark.reference
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_encode_matches_unpatched_reference(ours_qwen2, ref_unpatched, name):
    assert ours_qwen2.encode(CORPUS[name]) == ref_unpatched(CORPUS[name])["input_ids"]


@pytest.mark.reference
def test_the_corpus_separates_the_regexes(ref_processors, ref_unpatched):
    # Guards the parity tests above: the corpus must contain texts the two regexes split apart.
    differ = [
        k for k, v in CORPUS.items() if _ref_ids(ref_processors["saved_4_57_3"], v) != ref_unpatched(v)["input_ids"]
    ]
    assert {"case_contractions", "combining"} <= set(differ)  # mixed case; Thai marks


@pytest.mark.reference
@pytest.mark.parametrize("skip", [False, True])
def test_decode_matches_reference(ours, ref_processors, skip):
    ref = ref_processors["saved_4_57_3"]
    for value in CORPUS.values():
        ids = _ref_ids(ref, value)
        assert ours["saved_4_57_3"].decode(ids, skip_special_tokens=skip) == ref.decode(
            ids, skip_special_tokens=skip, clean_up_tokenization_spaces=False
        )
        assert ref.decode(ids, skip_special_tokens=skip) == ref.decode(
            ids, skip_special_tokens=skip, clean_up_tokenization_spaces=False
        )


def _wrapper(processor):
    """A stand-in for Qwen3TTSModel carrying what its formatting methods read."""
    return types.SimpleNamespace(processor=processor, device="cpu")


@pytest.mark.reference
@pytest.mark.parametrize("variant", ["saved_4_57_3", "saved_4_57_2"])
@pytest.mark.parametrize("name", sorted(PROMPT_TEXTS))
def test_prompts_match_reference_wrapper(ours, ref_processors, variant, name):
    from qwen_tts import Qwen3TTSModel as M

    value = PROMPT_TEXTS[name]
    tok, wrapper = ours[variant], _wrapper(ref_processors[variant])

    assert T.build_assistant_text(value) == M._build_assistant_text(wrapper, value)
    assert T.build_ref_text(value) == M._build_ref_text(wrapper, value)
    assert T.build_instruct_text(value) == M._build_instruct_text(wrapper, value)

    # The tensors and slices `generate` uses (modeling_qwen3_tts.py 2178-2231).
    input_id = M._tokenize_texts(wrapper, [M._build_assistant_text(wrapper, value)])[0]
    ours_a = tok.assistant_text_ids(value)
    assert ours_a.input_ids == tuple(input_id[0].tolist())
    assert ours_a.role == tuple(input_id[0, :3].tolist()) == ROLE
    assert ours_a.text == tuple(input_id[0, 3:-5].tolist())
    assert len(ours_a.text) >= 1

    ref_id = M._tokenize_texts(wrapper, [M._build_ref_text(wrapper, value)])[0]
    ours_r = tok.ref_text_ids(value)
    assert ours_r.input_ids == tuple(ref_id[0].tolist())
    assert ours_r.text == tuple(ref_id[0, 3:-2].tolist())

    instruct_id = M._tokenize_texts(wrapper, [M._build_instruct_text(wrapper, value)])[0]
    assert tok.instruct_ids(value).input_ids == tuple(instruct_id[0].tolist())


@pytest.mark.reference
@pytest.mark.parametrize("value", ["\nHello", "\n\nHello", "\n\r\nHello"])
def test_reference_slices_wrongly_on_a_leading_line_break(ours, ref_processors, value):
    # What our ValueError guards against: the reference's role slice is not the role.
    from qwen_tts import Qwen3TTSModel as M

    wrapper = _wrapper(ref_processors["saved_4_57_3"])
    input_id = M._tokenize_texts(wrapper, [M._build_assistant_text(wrapper, value)])[0]
    assert tuple(input_id[0, :3].tolist()) != ROLE
    with pytest.raises(ValueError, match="^text="):
        ours["saved_4_57_3"].assistant_text_ids(value)
