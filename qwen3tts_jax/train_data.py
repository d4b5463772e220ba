"""Fine-tuning data: (audio, text) pairs → codes → token-level training layouts → padded batches.

Mirrors `finetuning/dataset.py` of the official repository (QwenLM/Qwen3-TTS: `TTSDataset`,
`collate_fn`) in what it lays out, with one deliberate difference: the prompt is the *inference*
prompt of `Qwen3TTSForConditionalGeneration.generate` in the non-streaming layout (b), built by the same
`prompt.prompt_tracks` as generation and embedded by the same `prompt.embed_tracks`, so what is
trained is what is run.
In particular every text-side vector goes through `text_projection` (`T(ids) =
text_projection(text_embedding(ids))`); some published revisions of `sft_12hz.py` add raw
`text_embedding` instead (architecture notes, trap 16), which is not the inference path.

One example, position by position (L = prompt + frames + 1):

    [T(instruct)]                               optional, text only (CustomVoice 1.7B, VoiceDesign)
    T(<|im_start|> assistant \\n)                role, text only
    tts_pad + C(think… / lang… prefix)          codec control prefix
    tts_pad + speaker                           C(spk_id) (preset), the x-vector (Base), or absent
    tts_bos + C(codec_pad)
    T(text_i) + C(codec_pad)        × n         the text, then tts_eos + C(codec_pad)
    tts_pad + C(codec_bos)                      last prompt position: predicts frame 0
    tts_pad + C(c0_f) + Σ_j E_j(c_j,f)  × T     target frames (the generation-time input)
    tts_pad + C(codec_eos)                      labels: c0 of each frame, then EOS

Labels sit on the positions whose *input* they are (c0 at its frame, EOS at the EOS position),
-100 elsewhere (prompt, padding); the loss shifts them by one as `transformers.ForCausalLMLoss`
does. For the official recipe's default voice (language auto, x-vector speaker) this is exactly
`dataset.py`'s layout: same positions, ids and masks.

Only the non-streaming text layout is supported for training (the official recipe's; the
streaming-text layout (a) and ICL prompts are generation-time options).

Batches are right-padded (as `collate_fn`) to length buckets so the jitted step compiles once per
bucket; padded positions have attention mask False and label -100.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from qwen3tts_jax.config import Qwen3TTSConfig
from qwen3tts_jax.prompt import PromptRequest, TrackBatch, bucket, prompt_tracks
from qwen3tts_jax.typing import Bool, Float, HostArray, Int, pytree_dataclass

IGNORE_INDEX = -100  # transformers' ignore_index


@dataclasses.dataclass(frozen=True, eq=False)
class TrainExample:
    """One training item, tokenized: the target text, its audio codes and the voice conditioning."""

    text_ids: tuple[int, ...]  # the whole formatted assistant text (role + text + 5-token tail)
    codes: np.ndarray  # (T, 16) int codes of the target audio (our encoder's output)
    language: str = "auto"
    speaker: str | None = None  # CustomVoice preset speaker (its codec row)
    speaker_embedding: np.ndarray | None = None  # Base: x-vector in the speaker slot (a constant input)
    instruct_ids: tuple[int, ...] | None = None

    def request(self) -> PromptRequest:
        """The generation request whose prompt this example trains (non-streaming layout)."""
        return PromptRequest(
            self.text_ids,
            self.language,
            self.speaker,
            self.speaker_embedding,
            self.instruct_ids,
            non_streaming_mode=True,
        )


@dataclasses.dataclass(frozen=True)
class Layout:
    """Per-position arrays of one example (length L): the prompt's tracks (`prompt.PromptTracks`)
    followed by the target frames and EOS, plus the labels."""

    text_ids: np.ndarray  # L int
    text_on: np.ndarray  # L bool
    codec_ids: np.ndarray  # L int
    codec_on: np.ndarray  # L bool
    spk_on: np.ndarray  # L bool (the x-vector slot)
    res_codes: np.ndarray  # L 15 int (codebooks 1..15 at frame positions)
    res_on: np.ndarray  # L bool (frame positions)
    labels: np.ndarray  # L int, IGNORE_INDEX off target
    speaker_embedding: np.ndarray | None  # d
    frame_start: int  # position of frame 0
    codes: np.ndarray  # T 16

    @property
    def length(self) -> int:
        return len(self.text_ids)


def example_layout(cfg: Qwen3TTSConfig, ex: TrainExample) -> Layout:
    """The training layout of one example (see the module docstring)."""
    t = cfg.talker
    codes = np.asarray(ex.codes)
    n_groups = t.num_code_groups
    if codes.ndim != 2 or codes.shape[1] != n_groups or len(codes) == 0:
        raise ValueError(f"TrainExample.codes: expected a non-empty (T, {n_groups}) array, got shape {codes.shape}")
    if codes.min() < 0 or codes.max() >= t.code_predictor.vocab_size:
        raise ValueError(
            f"TrainExample.codes: values must be in [0, {t.code_predictor.vocab_size}), "
            f"got [{codes.min()}, {codes.max()}]"
        )
    ids = tuple(ex.text_ids)
    if len(ids) < 9:
        raise ValueError(
            f"TrainExample.text_ids: expected a formatted assistant text (role + text + 5-token tail), "
            f"got {len(ids)} ids"
        )
    if ex.speaker is not None and ex.speaker_embedding is not None:
        raise ValueError("TrainExample: give either speaker (preset) or speaker_embedding (x-vector), not both")
    if ex.speaker is not None and ex.speaker.lower() not in t.speakers:
        raise ValueError(f"TrainExample.speaker={ex.speaker!r}: not a speaker of this model ({sorted(t.speakers)})")
    lang = ex.language.lower()
    if lang != "auto" and lang not in t.languages:
        raise ValueError(f"TrainExample.language={ex.language!r}: not a language of this model")

    spk = None if ex.speaker_embedding is None else np.asarray(ex.speaker_embedding, np.float32).reshape(-1)
    if spk is not None and spk.shape[0] != t.transformer.hidden_size:
        raise ValueError(
            f"TrainExample.speaker_embedding: expected {t.transformer.hidden_size} values, got {spk.shape[0]}"
        )
    prompt = prompt_tracks(cfg, ex.request())
    start, nf = prompt.length, len(codes)
    # Target frames (the generation-time input: tts_pad + Σ of the frame's codebooks), then EOS.
    cat = lambda a, *rest: np.concatenate([a, *rest]).astype(a.dtype)
    pad = np.full(nf + 1, cfg.tts_pad_token_id, np.int32)
    on, off = np.ones(nf + 1, bool), np.zeros(nf + 1, bool)
    res_on = np.concatenate([np.ones(nf, bool), [False]])
    res_codes = np.concatenate([codes[:, 1:], np.zeros((1, n_groups - 1), codes.dtype)]).astype(np.int32)
    labels = np.full(start + nf + 1, IGNORE_INDEX, np.int32)
    labels[start : start + nf] = codes[:, 0]
    labels[start + nf] = t.codec_eos_token_id
    return Layout(
        cat(prompt.text_ids, pad),
        cat(prompt.text_on, on),
        cat(prompt.codec_ids, codes[:, 0], [t.codec_eos_token_id]),
        cat(prompt.codec_on, on),
        cat(prompt.spk_on, off),
        cat(prompt.res_codes, res_codes),
        cat(prompt.res_on, res_on),
        labels,
        spk,
        start,
        codes.astype(np.int32),
    )


@pytree_dataclass
class TrainBatch:
    """A right-padded batch of layouts (b rows, t positions, f frame slots). A pytree of arrays."""

    text_ids: Int[HostArray, "b t"]
    text_on: Bool[HostArray, "b t"]
    codec_ids: Int[HostArray, "b t"]
    codec_on: Bool[HostArray, "b t"]
    spk_on: Bool[HostArray, "b t"]
    speaker: Float[HostArray, "b d"]  # zeros where a row has no x-vector
    res_codes: Int[HostArray, "b t r"]
    res_on: Bool[HostArray, "b t"]
    mask: Bool[HostArray, "b t"]  # attention mask, False on padding
    labels: Int[HostArray, "b t"]  # codebook-0 targets at their input positions, IGNORE_INDEX elsewhere
    frame_pos: Int[HostArray, "b f"]  # sequence position of each frame (1 on padding slots)
    frame_codes: Int[HostArray, "b f q"]
    frame_valid: Bool[HostArray, "b f"]

    @property
    def shape(self) -> tuple[int, int, int]:
        b, t = self.mask.shape
        return b, t, self.frame_pos.shape[1]

    @property
    def tracks(self) -> TrackBatch:
        """The input tracks, for `prompt.embed_tracks`."""
        return TrackBatch(
            self.text_ids,
            self.text_on,
            self.codec_ids,
            self.codec_on,
            self.spk_on,
            self.res_codes,
            self.res_on,
            self.speaker,
            self.mask,
        )


def collate(
    layouts: Sequence[Layout],
    hidden_size: int,
    length_bucket: int = 32,
    frame_bucket: int = 16,
    num_code_groups: int = 16,
) -> TrainBatch:
    """Right-pad layouts into a `TrainBatch` (numpy arrays), lengths rounded up to the buckets."""
    if not layouts:
        raise ValueError("collate: no examples")
    b = len(layouts)
    t = bucket(max(x.length for x in layouts), length_bucket)
    f = bucket(max(len(x.codes) for x in layouts), frame_bucket)
    q = num_code_groups
    out = dict(
        text_ids=np.zeros((b, t), np.int32),
        text_on=np.zeros((b, t), bool),
        codec_ids=np.zeros((b, t), np.int32),
        codec_on=np.zeros((b, t), bool),
        spk_on=np.zeros((b, t), bool),
        speaker=np.zeros((b, hidden_size), np.float32),
        res_codes=np.zeros((b, t, q - 1), np.int32),
        res_on=np.zeros((b, t), bool),
        mask=np.zeros((b, t), bool),
        labels=np.full((b, t), IGNORE_INDEX, np.int32),
        frame_pos=np.ones((b, f), np.int32),
        frame_codes=np.zeros((b, f, q), np.int32),
        frame_valid=np.zeros((b, f), bool),
    )
    for i, x in enumerate(layouts):
        n, nf = x.length, len(x.codes)
        for name in ("text_ids", "text_on", "codec_ids", "codec_on", "spk_on", "res_codes", "res_on", "labels"):
            out[name][i, :n] = getattr(x, name)
        out["mask"][i, :n] = True
        if x.speaker_embedding is not None:
            out["speaker"][i] = x.speaker_embedding
        out["frame_pos"][i, :nf] = x.frame_start + np.arange(nf)
        out["frame_codes"][i, :nf] = x.codes
        out["frame_valid"][i, :nf] = True
    return TrainBatch(**out)


def make_batch(
    cfg: Qwen3TTSConfig, examples: Sequence[TrainExample], length_bucket: int = 32, frame_bucket: int = 16
) -> TrainBatch:
    return collate(
        [example_layout(cfg, e) for e in examples],
        cfg.talker.transformer.hidden_size,
        length_bucket,
        frame_bucket,
        cfg.talker.num_code_groups,
    )


def iterate_batches(
    cfg: Qwen3TTSConfig,
    examples: Sequence[TrainExample],
    batch_size: int,
    seed: int = 0,
    length_bucket: int = 32,
    frame_bucket: int = 16,
) -> Iterator[TrainBatch]:
    """Endless, deterministic stream of full batches: a seeded shuffle per epoch, the order
    continuing across epoch boundaries (no short last batch, so one compile per bucket)."""
    if batch_size < 1 or not examples:
        raise ValueError(f"iterate_batches: need batch_size >= 1 and examples (got {batch_size}, {len(examples)})")
    layouts = [example_layout(cfg, e) for e in examples]
    rng = np.random.default_rng(seed)
    order: list[int] = []
    while True:
        while len(order) < batch_size:
            order += list(rng.permutation(len(layouts)))
        take, order = order[:batch_size], order[batch_size:]
        yield collate(
            [layouts[i] for i in take],
            cfg.talker.transformer.hidden_size,
            length_bucket,
            frame_bucket,
            cfg.talker.num_code_groups,
        )


def examples_from_audio(model, items: Sequence[dict]) -> list[TrainExample]:
    """(audio, text) pairs → `TrainExample`s with codes from our own speech-tokenizer encoder.

    `model` is a `Qwen3TTSModel`. Each item: `audio` (path, array with `sr`, or `(array, sr)`),
    `text`, and optionally `language`, `speaker` (CustomVoice), `instruct`, and for Base models
    `ref_audio` (the speaker slot gets its x-vector; the official recipe's `ref_audio`) or a
    precomputed `speaker_embedding`.
    """
    from qwen3tts_jax.audio import normalize_audios
    from qwen3tts_jax.speaker_encoder import extract_speaker_embedding

    if not items:
        raise ValueError("examples_from_audio: no items")
    for i, it in enumerate(items):
        missing = [k for k in ("audio", "text") if k not in it]
        if missing:
            raise ValueError(f"examples_from_audio: item {i} lacks {missing}")
    audios = [(it["audio"], it["sr"]) if "sr" in it else it["audio"] for it in items]
    codes = model.speech_tokenizer.encode(audios).audio_codes
    out = []
    for i, (it, c) in enumerate(zip(items, codes)):
        spk = it.get("speaker_embedding")
        if spk is None and it.get("ref_audio") is not None:
            ref = it["ref_audio"]
            wav = normalize_audios([ref], target_sr=24000, name=f"items[{i}].ref_audio")[0]
            spk = np.asarray(extract_speaker_embedding(model.params, model.config, wav, 24000, model.policy))
        instruct = it.get("instruct")
        out.append(
            TrainExample(
                text_ids=model.text_tokenizer.assistant_text_ids(it["text"]).input_ids,
                codes=np.asarray(c, np.int32),
                language=str(it.get("language", "auto")).lower(),
                speaker=it.get("speaker"),
                speaker_embedding=None if spk is None else np.asarray(spk, np.float32),
                instruct_ids=model.text_tokenizer.instruct_ids(instruct).input_ids if instruct else None,
            )
        )
    return out
