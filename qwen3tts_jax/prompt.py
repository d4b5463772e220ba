"""Talker prompt embedding for every voice mode, and batching with left padding.

Mirrors the prompt-building half of `Qwen3TTSForConditionalGeneration.generate` and
`generate_icl_prompt` (qwen_tts/core/models/modeling_qwen3_tts.py). Notation of the reference:
`T(ids) = text_projection(text_embedding(ids))`, `C(ids) = talker codec_embedding(ids)`.

    [T(instruct)]                                   optional, prepended (CustomVoice 1.7B, VoiceDesign)
    T(<|im_start|> assistant \\n)                    role, no codec addend
    tts_pad + C(think…/lang…), tts_pad + speaker    codec control prefix (+ speaker slot)
    tts_bos + C(codec_pad)
    tail: (a) streaming text   T(text[0]) + C(codec_bos);            trailing = T(text[1:]) ++ tts_eos
          (b) non-streaming    T(text) ++ tts_eos, each + C(codec_pad); tts_pad + C(codec_bos); trailing = tts_pad
          (c) ICL              text/codec interleaving of `generate_icl_prompt`

Every vector is computed in the policy's compute dtype. Prompts of a batch are left-padded with
zero vectors and a mask; the per-frame text track (`trailing`) is right-padded with tts_pad —
which is exactly what the reference adds after the real text runs out, so padding it further
(to a length bucket) changes nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qwen3tts_jax.config import Policy, Qwen3TTSConfig
from qwen3tts_jax.talker import Talker
from qwen3tts_jax.typing import Array, Float, Int


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


def _bucket(n: int, step: int) -> int:
    return max(step, -(-n // step) * step)


def _padded(ids, step: int) -> np.ndarray:
    """int32 ids (rows along the first axis) zero-padded to a length bucket of `step`."""
    ids = np.asarray(ids, np.int32)
    out = np.zeros((_bucket(ids.shape[0], step), *ids.shape[1:]), np.int32)
    out[: ids.shape[0]] = ids
    return out


def codebook_tables(talker_params: dict, num_code_groups: int) -> list[Array]:
    """The 16 codebook embedding tables: codebook 0 the talker's, codebook j predictor table j-1."""
    cp = talker_params["code_predictor"]["model"]
    return [talker_params["model"]["codec_embedding"]["weight"]] + [cp[f"codec_embedding_{j}"]["weight"] for j in range(num_code_groups - 1)]


def sum_codebook_embeddings(tables: Sequence[Array], codes: Int[Array, "n q"], dtype) -> Float[Array, "n d"]:
    """Σ over codebooks q of `tables[q][codes[:, q]]`: a frame's input embedding."""
    parts = [jnp.take(t, codes[:, q], axis=0) for q, t in enumerate(tables)]
    return jnp.sum(jnp.stack(parts, 1).astype(dtype), axis=1)


class PromptEmbedder:
    """The embedding lookups a prompt needs, jitted once per length bucket."""

    def __init__(self, talker_params: dict, cfg: Qwen3TTSConfig, policy: Policy):
        self.params, self.cfg, self.policy = talker_params, cfg, policy
        talker = Talker(cfg.talker, policy)
        self._text = jax.jit(lambda p, ids: talker.apply({"params": p}, ids, method=Talker.embed_text))
        self._tables = codebook_tables(talker_params, cfg.talker.code_predictor.num_code_groups)
        dt = policy.dtype
        # Lookups are jitted on padded (bucketed) ids: an eager `jnp.take` would compile (or load
        # from the persistent cache) one program per prompt length.
        self._codec = jax.jit(lambda table, ids: jnp.take(table, ids, axis=0).astype(dt))
        self._codes = jax.jit(lambda tables, codes: sum_codebook_embeddings(tables, codes, dt))

    def text(self, ids: Sequence[int]) -> np.ndarray:
        """`T(ids)` → (n, d). Ids are padded to a bucket so lengths share compilations."""
        return np.asarray(self._text(self.params, jax.device_put(_padded(ids, 32)[None])))[0, : len(ids)]

    def codec(self, ids: Sequence[int]) -> np.ndarray:
        """`C(ids)` → (n, d)."""
        return np.asarray(self._codec(self._tables[0], jax.device_put(_padded(ids, 32))))[: len(ids)]

    def codes(self, codes: np.ndarray) -> np.ndarray:
        """Σ over the 16 codebook embeddings of each frame (T, 16) → (T, d); codebook 0 through
        the talker's table, codebook j through predictor embedding j-1."""
        return np.asarray(self._codes(self._tables, jax.device_put(_padded(codes, 32))))[: len(codes)]


def language_id(cfg: Qwen3TTSConfig, language: str, speaker: str | None) -> int | None:
    """The codec language id (None for "auto"), with the dialect override of the reference: a
    dialect speaker turns "chinese"/"auto" into its dialect's id."""
    t = cfg.talker
    lang = language.lower()
    lid = None if lang == "auto" else t.languages[lang]
    if speaker and lang in ("chinese", "auto") and speaker.lower() in t.speaker_dialects:
        lid = t.languages[t.speaker_dialects[speaker.lower()]]
    return lid


def build_prompt(emb: PromptEmbedder, cfg: Qwen3TTSConfig, req: PromptRequest) -> tuple[np.ndarray, np.ndarray]:
    """One item's talker input embeddings (L, d) and its text track (Lt, d)."""
    t, ids = cfg.talker, req.text_ids
    tts_bos, tts_eos, tts_pad = emb.text([cfg.tts_bos_token_id, cfg.tts_eos_token_id, cfg.tts_pad_token_id])
    lid = language_id(cfg, req.language, req.speaker)
    prefix = [t.codec_nothink_id, t.codec_think_bos_id, t.codec_think_eos_id] if lid is None else [
        t.codec_think_id, t.codec_think_bos_id, lid, t.codec_think_eos_id]
    codec_in = [emb.codec(prefix)]
    if req.speaker_embedding is not None:
        codec_in.append(np.asarray(req.speaker_embedding, emb.codec([0]).dtype).reshape(1, -1))
    elif req.speaker:
        codec_in.append(emb.codec([t.speakers[req.speaker.lower()]]))
    codec_in.append(emb.codec([t.codec_pad_id, t.codec_bos_id]))
    codec_in = np.concatenate(codec_in)  # N d
    n = codec_in.shape[0]
    text_side = np.concatenate([np.repeat(tts_pad[None], n - 2, 0), tts_bos[None]])
    parts = [] if req.instruct_ids is None else [emb.text(req.instruct_ids)]
    parts += [emb.text(ids[:3]), text_side + codec_in[:-1]]
    if req.ref_code is not None:
        tail, trailing = _icl_tail(emb, cfg, req, tts_eos, tts_pad)
        parts.append(tail)
    elif req.non_streaming_mode:
        text = np.concatenate([emb.text(ids[3:-5]), tts_eos[None]])
        parts += [text + emb.codec([t.codec_pad_id] * len(text)), (tts_pad + codec_in[-1])[None]]
        trailing = tts_pad[None]
    else:
        parts.append(emb.text(ids[3:4]) + codec_in[-1:])
        trailing = np.concatenate([emb.text(ids[4:-5]).reshape(-1, tts_pad.shape[0]), tts_eos[None]])
    return np.concatenate(parts), trailing


def _icl_tail(emb: PromptEmbedder, cfg: Qwen3TTSConfig, req: PromptRequest, tts_eos, tts_pad):
    """`generate_icl_prompt`: reference text + target text against BOS + reference codes."""
    t = cfg.talker
    text = np.concatenate([emb.text(list(req.ref_text_ids[3:-2]) + list(req.text_ids[3:-5])), tts_eos[None]])
    codec = np.concatenate([emb.codec([t.codec_bos_id]), emb.codes(req.ref_code)])
    if req.non_streaming_mode:
        tail = np.concatenate([text + emb.codec([t.codec_pad_id] * len(text)), codec + tts_pad])
        return tail, tts_pad[None]
    if len(text) > len(codec):
        return text[: len(codec)] + codec, text[len(codec):]
    padded = np.concatenate([text, np.repeat(tts_pad[None], len(codec) - len(text), 0)])
    return padded + codec, tts_pad[None]


@dataclasses.dataclass(frozen=True)
class PromptBatch:
    embeds: Float[Array, "b t d"]  # left-padded with zero vectors
    mask: Any  # (b, t) bool, False on padding
    trailing: Float[Array, "b u d"]  # right-padded with tts_pad (at least one tts_pad column)
    lengths: tuple[int, ...]  # real prompt lengths
    trailing_lengths: tuple[int, ...]


def batch_prompts(items: list[tuple[np.ndarray, np.ndarray]], tts_pad: np.ndarray, bucket: int = 16,
                  text_bucket: int = 128) -> PromptBatch:
    """Left-pad prompts to a common length bucket; right-pad text tracks with tts_pad.

    Padding to a bucket (not just the batch maximum) is exact — pads are masked out and positions
    count real tokens only; the text track is read one row per frame and continues with tts_pad
    anyway — and keeps the number of compiled shapes small. The text track's bucket is coarse:
    only the frame-step loop sees its shape, and that is the expensive program to compile.
    """
    b = len(items)
    d = items[0][0].shape[1]
    t = _bucket(max(p.shape[0] for p, _ in items), bucket)
    u = _bucket(max(tr.shape[0] for _, tr in items) + 1, text_bucket)
    embeds = np.zeros((b, t, d), items[0][0].dtype)
    mask = np.zeros((b, t), bool)
    trailing = np.broadcast_to(tts_pad, (b, u, d)).copy()
    for i, (p, tr) in enumerate(items):
        embeds[i, t - len(p):] = p
        mask[i, t - len(p):] = True
        trailing[i, : len(tr)] = tr
    return PromptBatch(embeds, mask, trailing, tuple(len(p) for p, _ in items), tuple(len(tr) for _, tr in items))
