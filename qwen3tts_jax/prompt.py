"""Talker prompts for every voice mode as id tracks, embedded on the device by one function.

Mirrors the prompt-building half of `Qwen3TTSForConditionalGeneration.generate` and
`generate_icl_prompt` (qwen_tts/core/models/modeling_qwen3_tts.py). Notation of the reference:
`T(ids) = text_projection(text_embedding(ids))`, `C(ids) = talker codec_embedding(ids)`,
`Σ(frame)` = the sum of a frame's 16 codebook embeddings.

    [T(instruct)]                                   optional, prepended (CustomVoice 1.7B, VoiceDesign)
    T(<|im_start|> assistant \\n)                    role, no codec addend
    tts_pad + C(think…/lang…), tts_pad + speaker    codec control prefix (+ speaker slot)
    tts_bos + C(codec_pad)
    tail: (a) streaming text   T(text[0]) + C(codec_bos);            trailing = text[1:] ++ tts_eos
          (b) non-streaming    T(text) ++ tts_eos, each + C(codec_pad); tts_pad + C(codec_bos); trailing = tts_pad
          (c) ICL              text/codec interleaving of `generate_icl_prompt` (reference frames as Σ)

A prompt is not built as vectors on the host: `prompt_tracks` writes it as per-position ids and
switches (`PromptTracks`: text ids, codec ids, the speaker slot, reference frames), and
`embed_tracks` turns a padded batch of them into talker inputs in one jitted call on the device:
`T(text)·text_on + (Σ(frame) if frame_on else C(codec))·codec_on + speaker·spk_on`, in the
reference's order of additions. Training uses the same builder and embedding (`train_data`
appends the target frames to the non-streaming layout), so what is trained is what is run.
`trailing` is the per-frame text track (ids), fed one row per generated frame and continued with
tts_pad — which is exactly what the reference adds after the real text runs out.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qwen3tts_jax.config import Policy, Qwen3TTSConfig, TalkerConfig
from qwen3tts_jax.talker import Talker
from qwen3tts_jax.text import AssistantTextIds, RefTextIds
from qwen3tts_jax.typing import Array, Bool, Float, HostArray, Int, pytree_dataclass


@typing.no_type_check  # users build these (as in the reference): the API's own checks name a bad field
@dataclasses.dataclass(frozen=True, eq=False)
class VoiceClonePromptItem:
    """Reusable voice-clone prompt (the reference's `VoiceClonePromptItem`)."""

    ref_code: np.ndarray | None  # (T, 16) int codes of the reference audio (ICL mode), else None
    ref_spk_embedding: np.ndarray  # (enc_dim,) x-vector
    x_vector_only_mode: bool
    icl_mode: bool
    ref_text: str | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class PromptRequest:
    """One item of a generation batch, already tokenized."""

    text_ids: tuple[int, ...]  # the whole formatted assistant text (role + text + 5-token tail)
    language: str = "auto"
    speaker: str | None = None  # CustomVoice preset speaker
    speaker_embedding: np.ndarray | None = None  # Base: x-vector in the speaker slot
    instruct_ids: tuple[int, ...] | None = None
    ref_text_ids: tuple[int, ...] | None = None  # ICL: the whole formatted reference text
    ref_code: np.ndarray | None = None  # ICL: (T, 16)
    non_streaming_mode: bool = False


def bucket(n: int, step: int) -> int:
    """`n` rounded up to a multiple of `step` (at least one step): the shape buckets that let
    different lengths share one compiled program."""
    return max(step, -(-n // step) * step)


def codebook_tables(talker_params: dict, num_code_groups: int) -> list[Array]:
    """The 16 codebook embedding tables: codebook 0 the talker's, codebook j predictor table j-1."""
    cp = talker_params["code_predictor"]["model"]
    return [talker_params["model"]["codec_embedding"]["weight"]] + [
        cp[f"codec_embedding_{j}"]["weight"] for j in range(num_code_groups - 1)
    ]


def sum_codebook_embeddings(tables: Sequence[Array], codes: Int[Array, "*n q"], dtype) -> Float[Array, "*n d"]:
    """Σ over codebooks q of `tables[q][codes[..., q]]`: a frame's input embedding."""
    parts = [jnp.take(t, codes[..., q], axis=0) for q, t in enumerate(tables)]
    return jnp.sum(jnp.stack(parts, -2).astype(dtype), axis=-2)


def language_id(cfg: Qwen3TTSConfig, language: str, speaker: str | None) -> int | None:
    """The codec language id (None for "auto"), with the dialect override of the reference: a
    dialect speaker turns "chinese"/"auto" into its dialect's id."""
    t = cfg.talker
    lang = language.lower()
    lid = None if lang == "auto" else t.languages[lang]
    if speaker and lang in ("chinese", "auto") and speaker.lower() in t.speaker_dialects:
        lid = t.languages[t.speaker_dialects[speaker.lower()]]
    return lid


@dataclasses.dataclass(frozen=True, eq=False)
class PromptTracks:
    """One prompt, position by position (length L), plus its per-frame text track.

    Position i's talker input is `T(text_ids[i])·text_on + codec·codec_on + speaker·spk_on`, where
    codec is `Σ(codec_ids[i], res_codes[i])` on frame positions (`res_on`) and `C(codec_ids[i])`
    elsewhere."""

    text_ids: np.ndarray  # L int
    text_on: np.ndarray  # L bool
    codec_ids: np.ndarray  # L int (codebook 0 on frame positions)
    codec_on: np.ndarray  # L bool
    spk_on: np.ndarray  # L bool: the x-vector slot
    res_codes: np.ndarray  # L 15 int: codebooks 1..15 on frame positions
    res_on: np.ndarray  # L bool: frame positions (ICL reference frames, training targets)
    speaker: np.ndarray | None  # d: the x-vector (Base), or None
    trailing: np.ndarray  # u int: text ids fed with frames 0, 1, ... (then tts_pad)

    @property
    def length(self) -> int:
        return len(self.text_ids)


class _Rows:
    """Accumulates prompt positions (text id/on, codec id/on, spk on, frame codes/on)."""

    def __init__(self, groups: int):
        self.rows: list[tuple[int, bool, int, bool, bool]] = []
        self.frames: dict[int, np.ndarray] = {}  # position → codes 1..15
        self.groups = groups

    def add(self, text: int | None = None, codec: int | None = None, spk: bool = False, frame=None) -> None:
        if frame is not None:
            self.frames[len(self.rows)] = np.asarray(frame[1:], np.int32)
            codec = int(frame[0])
        self.rows.append(
            (
                0 if text is None else int(text),
                text is not None,
                0 if codec is None else int(codec),
                codec is not None,
                spk,
            )
        )

    def tracks(self, speaker, trailing) -> PromptTracks:
        text_ids, text_on, codec_ids, codec_on, spk_on = (np.array(c) for c in zip(*self.rows))
        n = len(self.rows)
        res = np.zeros((n, self.groups - 1), np.int32)
        res_on = np.zeros(n, bool)
        for i, codes in self.frames.items():
            res[i], res_on[i] = codes, True
        spk = None if speaker is None else np.asarray(speaker, np.float32).reshape(-1)
        return PromptTracks(
            text_ids.astype(np.int32),
            text_on.astype(bool),
            codec_ids.astype(np.int32),
            codec_on.astype(bool),
            spk_on.astype(bool),
            res,
            res_on,
            spk,
            np.asarray(trailing, np.int32),
        )


def prompt_tracks(cfg: Qwen3TTSConfig, req: PromptRequest) -> PromptTracks:
    """One request's prompt as id tracks (the module docstring's layout) and its text track."""
    t = cfg.talker
    ids = AssistantTextIds(tuple(req.text_ids))
    pad, bos, eos = cfg.tts_pad_token_id, cfg.tts_bos_token_id, cfg.tts_eos_token_id
    rows = _Rows(t.num_code_groups)
    for i in req.instruct_ids or ():
        rows.add(text=i)
    for i in ids.role:
        rows.add(text=i)
    lid = language_id(cfg, req.language, req.speaker)
    prefix = (
        [t.codec_nothink_id, t.codec_think_bos_id, t.codec_think_eos_id]
        if lid is None
        else [t.codec_think_id, t.codec_think_bos_id, lid, t.codec_think_eos_id]
    )
    for c in prefix:
        rows.add(text=pad, codec=c)
    if req.speaker_embedding is not None:
        rows.add(text=pad, spk=True)
    elif req.speaker:
        rows.add(text=pad, codec=t.speakers[req.speaker.lower()])
    rows.add(text=bos, codec=t.codec_pad_id)
    if req.ref_code is not None:  # (c) `generate_icl_prompt`
        text = list(RefTextIds(tuple(req.ref_text_ids)).text) + list(ids.text) + [eos]
        codec = [{"codec": t.codec_bos_id}] + [{"frame": f} for f in np.asarray(req.ref_code)]
        if req.non_streaming_mode:
            for i in text:
                rows.add(text=i, codec=t.codec_pad_id)
            for c in codec:
                rows.add(text=pad, **c)
            trailing = [pad]
        else:
            for j, c in enumerate(codec):
                rows.add(text=text[j] if j < len(text) else pad, **c)
            trailing = text[len(codec) :] or [pad]
    elif req.non_streaming_mode:  # (b)
        for i in list(ids.text) + [eos]:
            rows.add(text=i, codec=t.codec_pad_id)
        rows.add(text=pad, codec=t.codec_bos_id)
        trailing = [pad]
    else:  # (a)
        rows.add(text=ids.text[0], codec=t.codec_bos_id)
        trailing = list(ids.text[1:]) + [eos]
    return rows.tracks(req.speaker_embedding, trailing)


@pytree_dataclass
class TrackBatch:
    """Prompt tracks of b rows padded to t positions (`mask` False on padding), as arrays."""

    text_ids: Int[HostArray, "b t"]
    text_on: Bool[HostArray, "b t"]
    codec_ids: Int[HostArray, "b t"]
    codec_on: Bool[HostArray, "b t"]
    spk_on: Bool[HostArray, "b t"]
    res_codes: Int[HostArray, "b t r"]
    res_on: Bool[HostArray, "b t"]
    speaker: Float[HostArray, "b d"]  # zeros where a row has no x-vector
    mask: Bool[HostArray, "b t"]


_TRACK_FIELDS = ("text_ids", "text_on", "codec_ids", "codec_on", "spk_on", "res_codes", "res_on")


def collate_tracks(items: Sequence[PromptTracks], hidden_size: int, length: int, left: bool) -> TrackBatch:
    """Pad prompts to `length` positions: on the right for training (as the official
    `collate_fn`) and for an admission (`pack_tracks` embeds them so, then packs them end to end),
    on the left for `embed_prompts` (the reference's batch layout: positions count real tokens
    only, so left padding is exact)."""
    b = len(items)
    groups = items[0].res_codes.shape[1] + 1
    out = {
        f: np.zeros(
            (b, length) + ((groups - 1,) if f == "res_codes" else ()),
            np.int32 if "ids" in f or f == "res_codes" else bool,
        )
        for f in _TRACK_FIELDS
    }
    mask = np.zeros((b, length), bool)
    speaker = np.zeros((b, hidden_size), np.float32)
    for i, x in enumerate(items):
        n = x.length
        if n > length:
            raise ValueError(f"collate_tracks: a prompt of {n} positions does not fit {length}")
        at = slice(length - n, length) if left else slice(0, n)
        for f in _TRACK_FIELDS:
            out[f][i, at] = getattr(x, f)
        mask[i, at] = True
        if x.speaker is not None:
            speaker[i] = x.speaker
    return TrackBatch(**out, speaker=speaker, mask=mask)


@pytree_dataclass
class PackedPrompts:
    """n prompts for one prefill, packed end to end into g rows of p positions.

    `tracks` holds them right-padded to l positions (embedded there, `embed_tracks`); `source`
    says which of those positions each packed position is (flat, row·l + position) and `segment`
    which prompt (-1: padding), so attention stays within a prompt (`nn.transformer`'s packed
    geometry); `index` sends each prompt's positions back from the packs (flat, pack·p +
    position), e.g. its KV rows and last hidden state. Packing spends the prefill's matmuls on
    real positions (up to one bucket's padding per pack), where a padded (n, l) batch pays for
    every prompt at the longest's length."""

    tracks: TrackBatch
    segment: Int[HostArray, "g p"]
    source: Int[HostArray, "g p"]
    index: Int[HostArray, "n l"]
    lengths: Int[HostArray, " n"]


def _fill(lengths: np.ndarray, g: int) -> tuple[list[list[int]], int]:
    """Longest first into the emptiest of g packs → members, the fullest pack's length."""
    members: list[list[int]] = [[] for _ in range(g)]
    totals = np.zeros(g, np.int64)
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        k = int(np.argmin(totals))
        members[k].append(i)
        totals[k] += lengths[i]
    return members, int(totals.max())


def pack_tracks(
    items: Sequence[PromptTracks], hidden_size: int, packs: int, attention_span: int, step: int
) -> PackedPrompts:
    """Pack prompts into g rows (a multiple of `packs`, the mesh's data axis, where there are
    that many prompts), longest first into the emptiest, every length padded to a multiple of
    `step` (the compiled shapes). g is the cheapest by an estimate in matmul rows: a pack of p
    positions costs p·(1 + p / `attention_span`) — its matmuls, and its attention, quadratic in
    p (within a pack every query meets every key; the segment mask only zeroes them). More
    packs mean shorter ones but more padding."""
    lengths = np.array([x.length for x in items], np.int32)
    n = len(items)
    width = bucket(int(lengths.max()), step)
    counts = range(packs, n + 1, packs) if n >= packs else range(1, n + 1)
    best = None
    for g in counts:
        members, fullest = _fill(lengths, g)
        p = bucket(fullest, step)
        cost = g * p * (1 + p / attention_span)
        if best is None or cost < best[0]:
            best = (cost, g, p, members)
    _, g, p, members = best
    segment = np.full((g, p), -1, np.int32)
    source = np.zeros((g, p), np.int32)
    index = np.zeros((n, width), np.int32)
    for k, rows in enumerate(members):
        at = 0
        for i in rows:
            m = int(lengths[i])
            segment[k, at : at + m] = i
            source[k, at : at + m] = i * width + np.arange(m)
            index[i, :m] = k * p + at + np.arange(m)
            index[i, m:] = k * p + at + m - 1  # past the prompt: its last position (never valid)
            at += m
    tracks = collate_tracks(items, hidden_size, width, left=False)
    return PackedPrompts(tracks, segment, source, index, lengths)


def embed_packed(
    talker_params: dict, packed: PackedPrompts, cfg: TalkerConfig, policy: Policy
) -> Float[Array, "g p d"]:
    """The talker input of every packed position (zero on padding); trace it inside a jitted
    function."""
    x = embed_tracks(talker_params, packed.tracks, cfg, policy)
    x = jnp.take(x.reshape(-1, x.shape[-1]), packed.source, axis=0)  # g p d
    return jnp.where((packed.segment >= 0)[..., None], x, 0)


def embed_tracks(talker_params: dict, batch: TrackBatch, cfg: TalkerConfig, policy: Policy) -> Float[Array, "b t d"]:
    """The talker input of every position of a padded track batch (trace it inside a jitted
    function: prefill, a training step). Padding positions come out zero."""
    dt = policy.dtype
    text = Talker(cfg, policy).apply({"params": talker_params}, batch.text_ids, method=Talker.embed_text)  # b t d
    tables = codebook_tables(talker_params, cfg.num_code_groups)
    frames = sum_codebook_embeddings(tables, jnp.concatenate([batch.codec_ids[..., None], batch.res_codes], -1), dt)
    single = jnp.take(tables[0], batch.codec_ids, axis=0).astype(dt)
    codec = jnp.where(batch.res_on[..., None], frames, single)
    x = jnp.where(batch.text_on[..., None], text.astype(dt), 0) + jnp.where(batch.codec_on[..., None], codec, 0)
    return x + jnp.where(batch.spk_on[..., None], batch.speaker[:, None, :].astype(dt), 0)


@functools.partial(jax.jit, static_argnames=("cfg", "policy"))
def embed_text_ids(
    talker_params: dict, ids: Int[Array, "b u"], cfg: TalkerConfig, policy: Policy
) -> Float[Array, "b u d"]:
    """`T(ids)`: the per-frame text track of a batch, in the compute dtype."""
    return Talker(cfg, policy).apply({"params": talker_params}, ids, method=Talker.embed_text).astype(policy.dtype)


_embed_tracks = jax.jit(embed_tracks, static_argnames=("cfg", "policy"))


def embed_prompts(
    talker_params: dict, cfg: Qwen3TTSConfig, policy: Policy, requests: Sequence[PromptRequest], step: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Talker inputs `(b, t, d)` and mask `(b, t)` of requests, left-padded to a bucket of `step`
    (the inputs generation prefills, position by position — the engine packs them end to end
    instead, `pack_tracks`; for parity notebooks and research use)."""
    tracks = [prompt_tracks(cfg, r) for r in requests]
    batch = collate_tracks(
        tracks, cfg.talker.transformer.hidden_size, bucket(max(t.length for t in tracks), step), left=True
    )
    return np.asarray(_embed_tracks(talker_params, batch, cfg.talker, policy)), np.asarray(batch.mask)
