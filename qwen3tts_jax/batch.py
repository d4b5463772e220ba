"""Batch synthesis: many texts in, one audio file per item and a JSONL manifest out, resumable.

    qwen3tts-jax batch --model DIR|random:NAME --input texts.txt|items.jsonl --out-dir OUT [--mesh data=4,model=2]

Input: a `.txt` file (one text per non-blank line; ids `000001`, `000002`, … by line order among
non-blank lines) or a `.jsonl` file, one object per line:
`{"id": "a1", "text": "...", "speaker": "ryan", "language": "english", "instruct": "...",
"ref_audio": "ref.wav", "ref_text": "...", "x_vector_only": false}` — only `text` is required;
missing fields take the command-line defaults. Ids name the output files (`OUT/<id>.wav`).

The whole input is checked before anything is synthesised or written (`read_items` for the file's
syntax and field types, `check_items` against the loaded model: speakers, languages, which voice
fields the model type takes, reference files present and transcribed); an error names the
file, the line and the item id.

Output, and why an interrupted run can simply be started again:
* every audio file is written atomically (a hidden temporary file in OUT, then `os.replace`), so
  an `<id>.wav` is either complete or absent; temporaries a killed run left behind are removed
  at the next start;
* `OUT/manifest.jsonl` gets one line per finished item, appended (and fsync'ed) only after its
  audio file is in place. On start the manifest is read back: an item whose line is there, with
  the same text, and whose file exists is skipped. A torn last line (killed mid-write) is dropped
  and the manifest rewritten atomically;
* `OUT/batch.json` records the settings the directory was started with (model, seed, sampling,
  dtype, format, batch size); resuming with different ones is refused rather than mixing outputs.

Items are cut into fixed batches of `batch_size` in input order (batch k draws with key
`fold_in(PRNGKey(seed), k)`); a batch is skipped when all its items are done and otherwise run
whole, writing only the missing items. So a resumed run produces exactly the files an
uninterrupted one would, sampled or greedy. On a mesh each batch is split over the `data` axis
(`batch_size` defaults to its size); only process 0 reads the manifest and writes files, and
it tells the other processes which batches to run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from qwen3tts_jax import checks
from qwen3tts_jax.atomic import PART_SUFFIX, write_text_atomic

MANIFEST = "manifest.jsonl"
SETTINGS = "batch.json"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_FIELDS = {"id", "text", "speaker", "language", "instruct", "ref_audio", "ref_text", "x_vector_only"}


@dataclasses.dataclass(frozen=True)
class Item:
    """One text to synthesize, with its per-item voice settings (None: the command's default)."""

    id: str
    text: str
    speaker: str | None = None
    language: str | None = None
    instruct: str | None = None
    ref_audio: str | None = None
    ref_text: str | None = None
    x_vector_only: bool | None = None
    where: str | None = dataclasses.field(default=None, compare=False)  # "items.jsonl:3", for messages

    def __str__(self) -> str:
        return f"{self.where} (id {self.id!r})" if self.where else f"item {self.id!r}"


def read_items(path: str | os.PathLike) -> list[Item]:
    """Items of a `.txt` (a text per non-blank line) or `.jsonl` file; errors name file:line."""
    path = checks.check_input_file(path, "--input")
    lines = checks.read_text_file(path, "--input").splitlines()
    items: list[Item] = []
    if path.suffix.lower() == ".jsonl":
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = json.loads(line)
            except ValueError as err:
                raise ValueError(f"{where}: not valid JSON ({err})") from err
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            unknown = sorted(set(obj) - _FIELDS)
            if unknown:
                raise ValueError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(_FIELDS)}")
            text = obj.get("text")
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{where}: 'text' must be a non-empty string, got {text!r}")
            for k in ("id", "speaker", "language", "instruct", "ref_audio", "ref_text"):
                if obj.get(k) is not None and not isinstance(obj[k], str):
                    raise ValueError(f"{where}: {k!r} must be a string, got {obj[k]!r}")
            if obj.get("x_vector_only") is not None and not isinstance(obj["x_vector_only"], bool):
                raise ValueError(f"{where}: 'x_vector_only' must be true or false, got {obj['x_vector_only']!r}")
            item_id = obj.get("id") or f"{len(items) + 1:06d}"
            items.append(Item(item_id, text.strip(), **{k: obj.get(k) for k in _FIELDS - {"id", "text"}}, where=where))
            _check_id(item_id, where)
    elif path.suffix.lower() == ".txt":
        for n, line in enumerate(lines, 1):
            if line.strip():
                items.append(Item(f"{len(items) + 1:06d}", line.strip(), where=f"{path}:{n}"))
    else:
        raise ValueError(f"--input {path}: expected a .txt (one text per line) or .jsonl file")
    if not items:
        raise ValueError(f"--input {path}: no items (the file holds no non-blank lines)")
    seen: dict[str, int] = {}
    for i, it in enumerate(items):
        if it.id in seen:
            raise ValueError(f"--input {path}: id {it.id!r} is used by items {seen[it.id] + 1} and {i + 1}")
        seen[it.id] = i
    return items


def _check_id(item_id: str, where: str) -> None:
    if not _ID.fullmatch(item_id):
        raise ValueError(
            f"{where}: id {item_id!r} must be 1-128 characters of [A-Za-z0-9._-], not starting with '.', '_' or '-'"
        )


# --------------------------------------------------------------------------------------------
# The output directory: manifest, settings, atomic writes
# --------------------------------------------------------------------------------------------


def clean_partials(out_dir: Path) -> list[Path]:
    """Remove the hidden `.<name>.*.part` temporaries a killed run left in `out_dir`."""
    removed = []
    for p in out_dir.glob(f".*{PART_SUFFIX}"):
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def load_manifest(out_dir: Path) -> dict[str, dict]:
    """Finished items recorded in `out_dir/manifest.jsonl` by id (the last line of an id wins);
    lines that do not parse (a torn write) and superseded lines are dropped and the manifest is
    rewritten without them."""
    path = out_dir / MANIFEST
    if not path.is_file():
        return {}
    records: dict[str, dict] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("id"), str) and isinstance(rec.get("audio"), str):
            records.pop(rec["id"], None)  # re-insert: file order follows the latest write
            records[rec["id"]] = rec
    if len(records) != len(lines):
        write_manifest(out_dir, records)
    return records


def write_manifest(out_dir: Path, records: dict[str, dict]) -> None:
    """Replace the manifest atomically with one line per record."""
    write_text_atomic(out_dir / MANIFEST, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records.values()))


def append_manifest(out_dir: Path, record: dict) -> None:
    with open(out_dir / MANIFEST, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def check_settings(out_dir: Path, settings: dict) -> None:
    """Record the run's settings, or refuse to resume a directory started with other ones."""
    path = out_dir / SETTINGS
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ValueError(f"{path}: unreadable ({err}); remove it to start this directory afresh") from err
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if diff:
            detail = ", ".join(f"{k}: {old.get(k)!r} then, {settings.get(k)!r} now" for k in diff)
            raise ValueError(f"--out-dir {out_dir} was started with other settings ({detail}); use another --out-dir")
        return
    write_text_atomic(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")


def is_done(item: Item, records: dict[str, dict], out_dir: Path) -> bool:
    rec = records.get(item.id)
    return rec is not None and rec.get("text") == item.text and (out_dir / rec["audio"]).is_file()


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Defaults:
    """Command-line defaults for the per-item voice fields."""

    speaker: str | None = None
    language: str = "auto"
    instruct: str | None = None
    ref_audio: str | None = None
    ref_text: str | None = None
    x_vector_only: bool = False


def _pick(items: Sequence[Item], defaults: Defaults, name: str) -> list:
    return [getattr(it, name) if getattr(it, name) is not None else getattr(defaults, name) for it in items]


# Which voice fields each model type takes (the others are refused rather than ignored).
_VOICE_FIELDS = {
    "custom_voice": {"speaker", "instruct"},
    "voice_design": {"instruct"},
    "base": {"ref_audio", "ref_text", "x_vector_only"},
}
_KIND_NAMES = {"custom_voice": "CustomVoice", "voice_design": "VoiceDesign", "base": "Base"}


def _missing(items: Sequence[Item], ids: list[str]) -> str:
    wheres = [it.where for it in items if it.id in ids and it.where]
    return f"items {ids}" + (f" (at {', '.join(wheres)})" if wheres else "")


def check_items(model, items: Sequence[Item], defaults: Defaults) -> None:
    """Check every item against `model` before any synthesis: language, speaker, the voice fields
    its type takes, reference files present and, for ICL cloning, transcribed."""
    from qwen3tts_jax.audio import is_local_source

    kind = model.tts_model_type
    allowed = _VOICE_FIELDS[kind]
    others = sorted(set().union(*_VOICE_FIELDS.values()) - allowed)
    languages = model.get_supported_languages()
    speakers = model.get_supported_speakers() or []
    for it in items:
        for field in others:
            if getattr(it, field) not in (None, False):
                raise ValueError(
                    f"{it}: field {field!r} is not used by a {_KIND_NAMES[kind]} model "
                    f"(this model takes {sorted(allowed)}); remove it"
                )
        checks.check_languages([_pick([it], defaults, "language")[0]], languages, name=f"{it}: language")
        if kind == "custom_voice" and _pick([it], defaults, "speaker")[0] is not None:
            checks.check_speakers([_pick([it], defaults, "speaker")[0]], speakers, name=f"{it}: speaker")
    if kind == "voice_design":
        missing = [it.id for it, ins in zip(items, _pick(items, defaults, "instruct")) if not ins]
        if missing:
            raise ValueError(
                f"{_missing(items, missing)}: a VoiceDesign model needs an instruct (item field or --instruct)"
            )
    if kind == "base":
        refs = _pick(items, defaults, "ref_audio")
        missing = [it.id for it, r in zip(items, refs) if not r]
        if missing:
            raise ValueError(f"{_missing(items, missing)}: a Base model needs ref_audio (item field or --ref-audio)")
        texts, xvecs = _pick(items, defaults, "ref_text"), _pick(items, defaults, "x_vector_only")
        for it, ref, text, xvec in zip(items, refs, texts, xvecs):
            if is_local_source(ref):
                checks.check_input_file(ref, f"{it}: ref_audio")
            if not xvec and not (text or "").strip():
                raise ValueError(
                    f"{it}: ref_audio {ref!r} has no ref_text; give its transcript (ICL cloning) or "
                    f"set x_vector_only (item field or --x-vector-only) to clone from the speaker "
                    f"embedding only"
                )


def synthesize_batch(model, items: Sequence[Item], defaults: Defaults, key, gen_kwargs: dict):
    """One batch through the model's public generate_* method for its type → (wavs, sr)."""
    check_items(model, items, defaults)
    texts, langs = [it.text for it in items], _pick(items, defaults, "language")
    kind = model.tts_model_type
    if kind == "custom_voice":
        first = (model.get_supported_speakers() or [None])[0]
        speakers = [s or first for s in _pick(items, defaults, "speaker")]
        return model.generate_custom_voice(
            texts, speakers, language=langs, instruct=_pick(items, defaults, "instruct"), key=key, **gen_kwargs
        )
    if kind == "voice_design":
        instructs = _pick(items, defaults, "instruct")
        return model.generate_voice_design(texts, instructs, language=langs, key=key, **gen_kwargs)
    return model.generate_voice_clone(
        texts,
        language=langs,
        ref_audio=_pick(items, defaults, "ref_audio"),
        ref_text=_pick(items, defaults, "ref_text"),
        x_vector_only_mode=[bool(x) for x in _pick(items, defaults, "x_vector_only")],
        key=key,
        **gen_kwargs,
    )


@dataclasses.dataclass
class Summary:
    items: int = 0
    skipped: int = 0
    written: int = 0
    batches_run: int = 0
    seconds: float = 0.0
    audio_seconds: float = 0.0


def run_batch(
    model,
    items: Sequence[Item],
    out_dir: str | os.PathLike,
    *,
    batch_size: int,
    seed: int = 0,
    defaults: Defaults = Defaults(),
    gen_kwargs: dict | None = None,
    audio_format: str = "wav",
    writer: bool = True,
    log: Callable[[str], None] | None = None,
    make_key: Callable[[int, int], Any] | None = None,
) -> Summary:
    """Synthesize every item not already done in `out_dir` (see the module docstring).

    `writer=False` computes without writing (the non-zero processes of a multi-host run, which
    must still take part in every batch). `make_key(seed, k)` gives batch k's PRNG key."""
    from qwen3tts_jax.audio_io import write_audio_atomic

    batch_size = checks.check_int("--batch-size", batch_size, 1)
    checks.check_choice("--format", audio_format, ["wav", "flac"])
    check_items(model, items, defaults)  # all of them, before the first batch runs
    out_dir = Path(out_dir)
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if make_key is None:
        import jax

        make_key = lambda s, k: jax.random.fold_in(jax.random.PRNGKey(s), k)
    records = load_manifest(out_dir) if writer else {}
    starts = range(0, len(items), batch_size)
    pending = [any(not is_done(it, records, out_dir) for it in items[k : k + batch_size]) for k in starts]
    pending = _agree(pending)
    summary = Summary(items=len(items))
    redone = False
    start = time.perf_counter()
    for k, run in zip(starts, pending):
        batch = list(items[k : k + batch_size])
        todo = [it for it in batch if not is_done(it, records, out_dir)] if writer else batch
        summary.skipped += len(batch) - len(todo) if run else len(batch)
        if not run:
            continue
        t = time.perf_counter()
        wavs, sr = synthesize_batch(model, batch, defaults, make_key(seed, k // batch_size), dict(gen_kwargs or {}))
        summary.batches_run += 1
        for it, wav in zip(batch, wavs):
            if it not in todo:
                continue
            name = f"{it.id}.{audio_format}"
            if writer:
                redone = redone or it.id in records
                write_audio_atomic(out_dir / name, wav, sr, name="--out-dir")
                rec = {
                    "id": it.id,
                    "text": it.text,
                    "audio": name,
                    "sample_rate": int(sr),
                    "samples": int(len(wav)),
                    "seconds": round(len(wav) / sr, 4),
                    "batch": k // batch_size,
                }
                if (gen_kwargs or {}).get("long_form"):  # how each segment ended
                    segs = model.last_long_form[batch.index(it)]
                    rec["segments"] = [
                        {"text": g.text, "frames": g.frames, "finish_reason": g.finish_reason} for g in segs
                    ]
                append_manifest(out_dir, rec)
                records[it.id] = rec
            summary.written += 1
            summary.audio_seconds += len(wav) / sr
        log(
            f"batch {k // batch_size + 1}/{-(-len(items) // batch_size)}: {len(todo)} item(s) in "
            f"{time.perf_counter() - t:.1f} s"
        )
    if redone:
        load_manifest(out_dir)  # drops the superseded lines of items written again
    summary.seconds = time.perf_counter() - start
    return summary


def _agree(pending: list[bool]) -> list[bool]:
    """Process 0's view of which batches to run, on every process: all processes must run the
    same batches (each is one SPMD program), and only process 0 reads the manifest."""
    import jax

    if jax.process_count() == 1:
        return pending
    import numpy as np
    from jax.experimental import multihost_utils

    return [bool(x) for x in multihost_utils.broadcast_one_to_all(np.asarray(pending, np.int32))]


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """`out_dir` is a writable folder, or can be created in one (checked before loading)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out-dir {out_dir}: exists and is not a directory")
    existing = out_dir if out_dir.is_dir() else next(p for p in out_dir.absolute().parents if p.exists())
    checks.check_writable_folder(existing, "--out-dir", out_dir)
    return out_dir


def prepare_out_dir(out_dir: str | os.PathLike, settings: dict, writer: bool = True) -> Path:
    """Create `out_dir`, clear a killed run's temporaries, check/record the settings."""
    out_dir = check_out_dir(out_dir) if writer else Path(out_dir)
    if writer:
        out_dir.mkdir(parents=True, exist_ok=True)
        clean_partials(out_dir)
        check_settings(out_dir, settings)
    return out_dir


def main(args) -> int:
    """`qwen3tts-jax batch` (arguments from `cli.build_parser`)."""
    import jax

    from qwen3tts_jax.api import Qwen3TTSModel
    from qwen3tts_jax.sharding import parse_mesh_spec

    items = read_items(args.input)
    writer = jax.process_index() == 0
    if writer:  # only process 0 writes; on other hosts the folder need not exist
        check_out_dir(args.out_dir)
    gen_kwargs: dict[str, Any] = {}
    if args.max_new_tokens is not None:
        gen_kwargs["max_new_tokens"] = args.max_new_tokens
    if args.greedy:
        gen_kwargs.update(do_sample=False, subtalker_dosample=False)
    if getattr(args, "long_form", False):
        gen_kwargs["long_form"] = True
    # Batches are cut before loading (and recorded: with sampling, an item's draws depend on its batch).
    batch_size = args.batch_size or (parse_mesh_spec(args.mesh)["data"] if args.mesh else 1)
    settings = {
        "model": args.model,
        "seed": args.seed,
        "greedy": bool(args.greedy),
        "max_new_tokens": args.max_new_tokens,
        "dtype": args.dtype,
        "format": args.format,
        "batch_size": batch_size,
        "long_form": bool(gen_kwargs.get("long_form")),
    }
    t0 = time.perf_counter()
    model = Qwen3TTSModel.from_pretrained(args.model, dtype=args.dtype, seed=args.seed, mesh=args.mesh)
    defaults = Defaults(args.speaker, args.language, args.instruct, args.ref_audio, args.ref_text, args.x_vector_only)
    check_items(model, items, defaults)  # before the output folder is created or anything synthesised
    out_dir = prepare_out_dir(args.out_dir, settings, writer)
    print(
        f"loaded {args.model} ({model.tts_model_type}) in {time.perf_counter() - t0:.1f} s; {len(items)} items, "
        f"batches of {batch_size}" + (f", mesh {dict(model.mesh.shape)}" if model.mesh is not None else ""),
        file=sys.stderr,
    )
    s = run_batch(
        model,
        items,
        out_dir,
        batch_size=batch_size,
        seed=args.seed,
        defaults=defaults,
        gen_kwargs=gen_kwargs,
        audio_format=args.format,
        writer=writer,
    )
    where = (
        f"manifest {out_dir / MANIFEST}" if writer else f"written by process 0 (this is process {jax.process_index()})"
    )
    print(
        f"{s.items} items: {s.skipped} already done, {s.written} synthesized ({s.audio_seconds:.1f} s of audio) in "
        f"{s.seconds:.1f} s; {where}",
        file=sys.stderr,
    )
    return 0


def items_from_texts(texts: Iterable[str]) -> list[Item]:
    """Items with sequential ids from plain texts (for library use)."""
    return [Item(f"{i + 1:06d}", t) for i, t in enumerate(texts)]
