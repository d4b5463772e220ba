"""Inspect a checkpoint folder against our key tables: groups, shapes, counts, exact totals.

Backs `qwen3tts-jax inspect DIR` (and `conversion/inspect_checkpoint.py`). Only safetensors
headers are read, so a full-size folder is inspected in well under a second. A folder is either a
model (`config.json` with model_type `qwen3_tts`; its `speech_tokenizer/` is inspected too when
present), a speech tokenizer (model_type `qwen3_tts_tokenizer_12hz`), or a folder written by
`qwen3tts-jax convert` (`params.safetensors`: its flattened trees are checked against the param
paths the key tables fill).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import OrderedDict
from pathlib import Path

from qwen3tts_jax.config import Qwen3TTSConfig, read_json
from qwen3tts_jax.hub import CONVERTED_MARK
from qwen3tts_jax.weights import MODEL_IGNORED, Checkpoint, Entry, KeyReport, check_keys, model_entries

TOKENIZER_MODEL_TYPE = "qwen3_tts_tokenizer_12hz"


@dataclasses.dataclass(frozen=True)
class Group:
    pattern: str  # key with layer/list indices replaced by '*'
    shape: tuple[int, ...]
    dtype: str
    count: int  # tensors matching the pattern with this shape

    @property
    def params(self) -> int:
        return self.count * math.prod(self.shape)


@dataclasses.dataclass(frozen=True)
class PartReport:
    """One checkpoint file (model or speech tokenizer)."""

    name: str
    folder: Path
    groups: tuple[Group, ...]
    keys: KeyReport
    total: int  # elements of every tensor stored in the file (parameters + buffers)
    tensors: int


def _groups(ckpt: Checkpoint) -> tuple[Group, ...]:
    rows: OrderedDict[tuple, int] = OrderedDict()
    for key in ckpt.keys():
        pattern = re.sub(r"\.\d+(?=\.|$)", ".*", key)
        row = (pattern, ckpt.shape(key), ckpt.dtype(key))
        rows[row] = rows.get(row, 0) + 1
    return tuple(Group(p, s, d, n) for (p, s, d), n in rows.items())


def _as_converted(entries: list[Entry]) -> list[Entry]:
    """The table of a converted file: each entry under its flattened param path."""
    return [Entry("/".join(e.target), e.shape) for e in entries]


def inspect_part(name: str, folder: Path, entries, ignore, converted: bool = False) -> PartReport:
    ckpt = Checkpoint.open(folder / CONVERTED_MARK if converted else folder)
    if converted:
        entries, name = _as_converted(entries), f"{name}, converted ({CONVERTED_MARK})"
    shapes = {k: ckpt.shape(k) for k in ckpt.keys()}
    return PartReport(
        name=name,
        folder=folder,
        groups=_groups(ckpt),
        keys=check_keys(entries, shapes, ignore),
        total=sum(math.prod(s) for s in shapes.values()),
        tensors=len(shapes),
    )


def _converted(folder: Path) -> bool:
    return (
        (folder / CONVERTED_MARK).is_file()
        and not (folder / "model.safetensors").exists()
        and not (folder / "model.safetensors.index.json").exists()
    )


def inspect_tokenizer(folder: Path) -> PartReport:
    from qwen3tts_jax.codec.config import Qwen3TTSTokenizerV2Config
    from qwen3tts_jax.codec.weights import CODEC_IGNORED, codec_entries

    cfg = Qwen3TTSTokenizerV2Config.from_model_dir(folder)
    return inspect_part("speech tokenizer", folder, codec_entries(cfg), CODEC_IGNORED, _converted(folder))


def inspect_folder(folder: str | Path) -> list[PartReport]:
    """Reports for the model in `folder` and its speech tokenizer (or for a tokenizer folder)."""
    from qwen3tts_jax.convert import random_hint

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a directory{random_hint(str(folder))}")
    data = read_json(folder / "config.json")
    if data.get("model_type") == TOKENIZER_MODEL_TYPE:
        return [inspect_tokenizer(folder)]
    cfg = Qwen3TTSConfig.from_dict(data, str(folder / "config.json"))
    name = f"model ({cfg.tts_model_type}, {cfg.tts_model_size})"
    parts = [inspect_part(name, folder, model_entries(cfg), MODEL_IGNORED, _converted(folder))]
    if (folder / "speech_tokenizer" / "config.json").is_file():
        parts.append(inspect_tokenizer(folder / "speech_tokenizer"))
    return parts


def format_report(part: PartReport) -> str:
    width = max([len(g.pattern) for g in part.groups] + [20])
    lines = [
        f"== {part.name}: {part.folder}",
        f"{'tensor (indices as *)':<{width}}  {'shape':<20} {'dtype':<5} {'×':>4} {'params':>14}",
    ]
    for g in part.groups:
        lines.append(f"{g.pattern:<{width}}  {str(list(g.shape)):<20} {g.dtype:<5} {g.count:>4} {g.params:>14,}")
    lines.append(f"total: {part.total:,} elements in {part.tensors} tensors (parameters + buffers as stored)")
    k = part.keys
    lines.append(
        f"key table: {len(k.missing)} missing, {len(k.unexpected)} unexpected, {len(k.wrong_shape)} wrong shape, "
        f"{len(k.ignored)} ignored"
    )
    return "\n".join(lines)
