"""`Qwen3TTSModel`: the qwen_tts-compatible public API over the functional JAX layer.

Mirrors `qwen_tts.inference.qwen3_tts_model.Qwen3TTSModel` (same method names, keyword arguments
and return values: `(list of float32 mono waveforms, 24000)`), plus what the reference lacks:
explicit `seed`, streaming generators that yield audio as frames are produced, and `random:<name>`
models for machines without the weights. Everything is validated before any compute, with errors
that name the argument and the value.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
import warnings
from typing import Any, Iterator

import jax
import numpy as np

from qwen3tts_jax import generate as gen
from qwen3tts_jax.audio import normalize_audios
from qwen3tts_jax.config import GenerationConfig, Policy, Qwen3TTSConfig, as_dtype
from qwen3tts_jax.hub import resolve_folder
from qwen3tts_jax.prompt import PromptEmbedder, PromptRequest, VoiceClonePromptItem, batch_prompts, build_prompt
from qwen3tts_jax.sampling import SamplingConfig
from qwen3tts_jax.speech_tokenizer import Qwen3TTSTokenizer
from qwen3tts_jax.text import TextTokenizer
from qwen3tts_jax.weights import layout_model_params, load_model_params

SAMPLE_KWARGS = ("do_sample", "top_k", "top_p", "temperature", "repetition_penalty", "subtalker_dosample",
                 "subtalker_top_k", "subtalker_top_p", "subtalker_temperature", "max_new_tokens")
# Accepted for signature compatibility with the reference loader and ignored (torch-only).
_TORCH_ONLY = frozenset({"device_map", "attn_implementation", "low_cpu_mem_usage", "trust_remote_code", "torch_dtype"})
SILENCE_PEAK = 1e-4  # reference audio whose peak is below this carries no voice to clone


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _broadcast(name: str, values: list, n: int) -> list:
    if len(values) == 1 and n > 1:
        return values * n
    if len(values) != n:
        raise ValueError(f"Batch size mismatch: {name} has {len(values)} items, text has {n}")
    return values


@dataclasses.dataclass
class StreamStats:
    """Timings of the last streaming call (seconds, wall clock on the host)."""

    time_to_first_audio: float | None = None
    total_time: float | None = None
    frames: int = 0
    audio_seconds: float = 0.0


class Qwen3TTSModel:
    """Qwen3-TTS (12 Hz family) in JAX. Build with `from_pretrained`."""

    def __init__(self, config: Qwen3TTSConfig, params: dict, text_tokenizer: TextTokenizer,
                 speech_tokenizer: Qwen3TTSTokenizer, generation_config: GenerationConfig, policy: Policy,
                 path: str | None = None, mesh: Any = None):
        self.config, self.params, self.policy = config, params, policy
        self.mesh = mesh  # a ("data", "model") jax Mesh the params are placed on, or None (one device)
        self.processor = self.text_tokenizer = text_tokenizer
        self.speech_tokenizer = speech_tokenizer
        self.generate_config = self.generation_config = generation_config
        self.path = path
        self.tts_model_type, self.tts_model_size = config.tts_model_type, config.tts_model_size
        if mesh is None:
            self._embedder = PromptEmbedder(params["talker"], config, policy)
        else:
            from qwen3tts_jax.sharding import MeshPromptEmbedder

            self._embedder = MeshPromptEmbedder(params["talker"], config, policy, mesh)
        self.last_stream_stats = StreamStats()

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, dtype: Any = None,
                        scan_layers: bool | None = None, seed: int = 0, mesh: Any = None, policy: Policy | None = None,
                        **kwargs) -> "Qwen3TTSModel":
        """A model folder, a Hugging Face repo id (downloaded with huggingface_hub), or
        `random:<name>` (seeded random weights of a released architecture, see `presets`).

        Computation is float32 unless `dtype` asks otherwise, whatever the stored dtype (the
        released files are bf16). `scan_layers` defaults to the backend's best (unrolled on CPU).

        `mesh` ("data=4,model=2", a dict, or a ("data", "model") `jax.sharding.Mesh`) runs on a
        device mesh: batches split over `data`, talker / code predictor / codec decoder weights
        over `model` (see `qwen3tts_jax.sharding`); each process reads only its weight slices.

        `policy` (a `config.Policy`) replaces the backend's (`Policy.for_backend`): e.g.
        `Policy.for_backend("gpu")` compiles the GPU/TPU program on any machine; `dtype` and
        `scan_layers`, when given too, replace its fields.
        """
        unknown = sorted(set(kwargs) - _TORCH_ONLY)
        if unknown:
            raise TypeError(f"Qwen3TTSModel.from_pretrained: unexpected keyword argument(s) {unknown}")
        dtype = dtype if dtype is not None else kwargs.get("torch_dtype")
        policy = Policy.resolve(policy, dtype, "Qwen3TTSModel.from_pretrained")
        dt = as_dtype(policy.param_dtype)
        if scan_layers is not None:
            policy = dataclasses.replace(policy, scan_layers=scan_layers)
        if mesh is not None:
            from qwen3tts_jax import sharding

            mesh = sharding.make_mesh(mesh)
        name = str(pretrained_model_name_or_path)
        if name.startswith("random:"):
            return cls._random(name, policy, seed, mesh)
        folder = resolve_folder(name)
        cfg = Qwen3TTSConfig.from_model_dir(folder)
        if mesh is None:
            params = load_model_params(folder, cfg, dtype=dt, scan_layers=policy.scan_layers)
            speech = Qwen3TTSTokenizer.from_pretrained(folder / "speech_tokenizer", policy=policy)
        else:
            params = sharding.load_model_params(folder, cfg, dt, policy.scan_layers, mesh)
            speech = sharding.load_speech_tokenizer(folder / "speech_tokenizer", dt, mesh)
        return cls(cfg, params, TextTokenizer.from_pretrained(folder), speech, GenerationConfig.from_model_dir(folder),
                   policy, str(folder), mesh)

    @classmethod
    def _random(cls, spec: str, policy: Policy, seed: int, mesh: Any = None) -> "Qwen3TTSModel":
        from qwen3tts_jax import presets
        from qwen3tts_jax.codec.config import Qwen3TTSTokenizerV2Config
        from qwen3tts_jax.random_model import byte_level_tokenizer_dir, parse_random_spec, random_codec_params, random_model_params

        kind, size = parse_random_spec(spec)
        cfg = Qwen3TTSConfig.from_dict(presets.model_config(kind, size), f"{spec} config")
        on_device = jax.default_backend() != "cpu"  # draw on the accelerator: no multi-GB host build and copy
        params = random_model_params(cfg, seed, policy.param_dtype, on_device)
        params = layout_model_params(params, cfg, policy.scan_layers)
        codec_cfg = Qwen3TTSTokenizerV2Config.from_dict(presets.tokenizer_config(tiny=size == "tiny"), f"{spec} tokenizer config")
        codec_params = random_codec_params(codec_cfg, seed, policy.param_dtype, on_device)
        speech = Qwen3TTSTokenizer(codec_cfg, codec_params, policy)
        text = TextTokenizer.from_pretrained(byte_level_tokenizer_dir())
        gen_cfg = GenerationConfig.from_dict(presets.GENERATION_CONFIG, f"{spec} generation config")
        if mesh is not None:
            from qwen3tts_jax import sharding

            params = sharding.place_model_params(params, cfg, mesh)
            speech.params = sharding.place_codec_params(speech.params, codec_cfg, mesh)
        return cls(cfg, params, text, speech, gen_cfg, policy, spec, mesh)

    # ------------------------------------------------------------------ info

    def get_supported_speakers(self) -> list[str] | None:
        speakers = self.config.talker.speakers
        return sorted(s.lower() for s in speakers) if speakers else None

    def get_supported_languages(self) -> list[str]:
        return ["auto"] + [k for k in self.config.talker.languages if "dialect" not in k]

    def _require(self, kind: str, method: str) -> None:
        if self.tts_model_type != kind:
            raise ValueError(
                f"{method} needs a {kind!r} model (tts_model_type={kind!r}); this model is {self.tts_model_type!r} "
                f"(size {self.tts_model_size}). Use a Qwen3-TTS-12Hz-*-{ {'base': 'Base', 'custom_voice': 'CustomVoice', 'voice_design': 'VoiceDesign'}[kind]} model."
            )

    def _languages(self, language, n: int) -> list[str]:
        langs = _broadcast("language", _as_list(language) if language is not None else ["Auto"], n)
        supported = self.get_supported_languages()
        bad = [lang for lang in langs if not isinstance(lang, str) or lang.lower() not in supported]
        if bad:
            raise ValueError(f"Unsupported language(s) {bad}. Supported: {supported}")
        return [lang.lower() for lang in langs]

    def _texts(self, text) -> list[str]:
        texts = _as_list(text)
        if not texts:
            raise ValueError("text: no text given (empty list)")
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"text[{i}]: must be a non-empty string, got {t!r}")
        return texts

    def _gen_config(self, kwargs: dict) -> tuple[GenerationConfig, jax.Array]:
        seed, key = kwargs.pop("seed", None), kwargs.pop("key", None)
        explicit = {k: kwargs.pop(k) for k in SAMPLE_KWARGS if kwargs.get(k) is not None}
        for k in SAMPLE_KWARGS:
            kwargs.pop(k, None)
        if kwargs:
            # The reference forwards unknown kwargs to generate(), which ignores them.
            warnings.warn(f"ignoring generation keyword argument(s) {sorted(kwargs)}", stacklevel=3)
        cfg = dataclasses.replace(self.generation_config, **explicit)
        if not isinstance(cfg.max_new_tokens, int) or cfg.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {cfg.max_new_tokens!r}")
        if key is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0]) if seed is None else int(seed)
            key = jax.random.PRNGKey(seed)
        return cfg, key

    # ------------------------------------------------------------------ voice clone prompts

    def create_voice_clone_prompt(self, ref_audio, ref_text=None, x_vector_only_mode=False) -> list[VoiceClonePromptItem]:
        """Reference audio (+ transcript for ICL) → reusable prompt items (`voice_clone_prompt=`)."""
        self._require("base", "create_voice_clone_prompt")
        audios = _as_list(ref_audio) if isinstance(ref_audio, list) else [ref_audio]
        texts = _broadcast("ref_text", _as_list(ref_text) if isinstance(ref_text, list) else [ref_text], len(audios))
        xvec = _broadcast("x_vector_only_mode", _as_list(x_vector_only_mode), len(audios))
        for i, (t, xo) in enumerate(zip(texts, xvec)):
            if not xo and (not isinstance(t, str) or not t.strip()):
                raise ValueError(f"ref_text[{i}] is required when x_vector_only_mode=False (ICL mode), got {t!r}")
        wavs = normalize_audios(audios, target_sr=24000, name="ref_audio")
        from qwen3tts_jax.speaker_encoder import extract_speaker_embedding, min_samples

        shortest = max(min_samples(self.config.speaker_encoder), 1920)
        for i, w in enumerate(wavs):
            if len(w) < shortest:
                raise ValueError(f"ref_audio[{i}]: {len(w)} samples at 24 kHz is too short (need >= {shortest}, {shortest / 24000:.3f} s)")
            if float(np.max(np.abs(w))) < SILENCE_PEAK:
                raise ValueError(f"ref_audio[{i}]: the audio is silent (peak {float(np.max(np.abs(w))):.2e}); nothing to clone")
        codes = self.speech_tokenizer.encode([(w, 24000) for w in wavs]).audio_codes
        items = []
        for w, c, t, xo in zip(wavs, codes, texts, xvec):
            emb = np.asarray(extract_speaker_embedding(self.params, self.config, w, 24000, self.policy))
            items.append(VoiceClonePromptItem(None if xo else np.asarray(c), emb, bool(xo), not bool(xo), t))
        return items

    # ------------------------------------------------------------------ request building

    def _clone_requests(self, text, language, ref_audio, ref_text, x_vector_only_mode, voice_clone_prompt, non_streaming_mode):
        self._require("base", "generate_voice_clone")
        texts = self._texts(text)
        langs = self._languages(language, len(texts))
        if voice_clone_prompt is None:
            if ref_audio is None:
                raise ValueError("Either `voice_clone_prompt` or `ref_audio` must be provided.")
            items = self.create_voice_clone_prompt(ref_audio, ref_text, x_vector_only_mode)
        elif isinstance(voice_clone_prompt, dict):
            n = len(voice_clone_prompt["ref_spk_embedding"])
            items = [VoiceClonePromptItem(
                None if voice_clone_prompt["ref_code"][i] is None else np.asarray(voice_clone_prompt["ref_code"][i]),
                np.asarray(voice_clone_prompt["ref_spk_embedding"][i]), bool(voice_clone_prompt["x_vector_only_mode"][i]),
                bool(voice_clone_prompt["icl_mode"][i]), (_as_list(ref_text) * n)[i] if ref_text is not None else None,
            ) for i in range(n)]
        else:
            items = list(voice_clone_prompt)
        items = _broadcast("voice_clone_prompt", items, len(texts))
        reqs = []
        for i, (t, lang, it) in enumerate(zip(texts, langs, items)):
            icl = it.icl_mode and it.ref_code is not None
            if icl and not it.ref_text:
                raise ValueError(f"voice_clone_prompt[{i}]: ICL mode needs its ref_text")
            reqs.append(PromptRequest(
                self.text_tokenizer.assistant_text_ids(t).input_ids, lang,
                speaker_embedding=np.asarray(it.ref_spk_embedding, np.float32) if (it.icl_mode or it.x_vector_only_mode) else None,
                ref_text_ids=self.text_tokenizer.ref_text_ids(it.ref_text).input_ids if icl else None,
                ref_code=np.asarray(it.ref_code) if icl else None, non_streaming_mode=bool(non_streaming_mode)))
        return reqs

    def _custom_requests(self, text, speaker, language, instruct, non_streaming_mode):
        self._require("custom_voice", "generate_custom_voice")
        texts = self._texts(text)
        langs = self._languages(language, len(texts))
        speakers = _broadcast("speaker", _as_list(speaker), len(texts))
        supported = self.get_supported_speakers() or []
        bad = [s for s in speakers if not isinstance(s, str) or s.lower() not in supported]
        if bad:
            raise ValueError(f"Unsupported speaker(s) {bad}. Supported: {supported}")
        if self.tts_model_size in "0b6":  # as the reference: the 0.6B CustomVoice model takes no instruct
            instruct = None
        instructs = _broadcast("instruct", _as_list(instruct) if instruct is not None else [""], len(texts))
        return [PromptRequest(self.text_tokenizer.assistant_text_ids(t).input_ids, lang, s,
                              instruct_ids=self.text_tokenizer.instruct_ids(ins).input_ids if ins else None,
                              non_streaming_mode=bool(non_streaming_mode))
                for t, lang, s, ins in zip(texts, langs, speakers, instructs)]

    def _design_requests(self, text, instruct, language, non_streaming_mode):
        self._require("voice_design", "generate_voice_design")
        texts = self._texts(text)
        langs = self._languages(language, len(texts))
        instructs = _broadcast("instruct", _as_list(instruct), len(texts))
        return [PromptRequest(self.text_tokenizer.assistant_text_ids(t).input_ids, lang,
                              instruct_ids=self.text_tokenizer.instruct_ids(ins).input_ids if ins else None,
                              non_streaming_mode=bool(non_streaming_mode))
                for t, lang, ins in zip(texts, langs, instructs)]

    # ------------------------------------------------------------------ core

    def _prepare(self, requests: list[PromptRequest], gen_cfg: GenerationConfig):
        batch = batch_prompts([build_prompt(self._embedder, self.config, r) for r in requests],
                              self._embedder.text([self.config.tts_pad_token_id])[0])
        budget = self.config.talker.transformer.max_position_embeddings
        for i, n in enumerate(batch.lengths):
            if n + gen_cfg.max_new_tokens > budget:
                raise ValueError(
                    f"text[{i}]: the prompt is {n} positions and max_new_tokens={gen_cfg.max_new_tokens}; together they exceed "
                    f"the model's position budget max_position_embeddings={budget}. Shorten the text or lower max_new_tokens.")
        decoder = gen.Decoder(self.config, self.policy, SamplingConfig.from_configs(gen_cfg, self.config.talker))
        if self.mesh is not None:
            from qwen3tts_jax.sharding import mesh_decoder

            decoder = mesh_decoder(decoder, self.mesh)
        return batch, decoder

    def generate_codes(self, requests: list[PromptRequest], **kwargs) -> list[np.ndarray]:
        """The functional layer's codes for already-built requests: list of (T_i, 16) int arrays."""
        gen_cfg, key = self._gen_config(dict(kwargs))
        batch, decoder = self._prepare(requests, gen_cfg)
        if self.mesh is not None:
            from qwen3tts_jax import sharding

            return sharding.generate_codes(decoder, self.params["talker"], batch.embeds, batch.mask, batch.trailing,
                                           gen_cfg.max_new_tokens, key, self.mesh)
        return gen.generate_codes(decoder, self.params["talker"], batch.embeds, batch.mask, batch.trailing,
                                  gen_cfg.max_new_tokens, key)

    def _synthesize(self, requests: list[PromptRequest], kwargs: dict):
        codes = self.generate_codes(requests, **kwargs)
        full = [c if r.ref_code is None else np.concatenate([r.ref_code, c]) for r, c in zip(requests, codes)]
        wavs, sr = self._decode(full)
        out = []
        for r, c, wav in zip(requests, full, wavs):
            if r.ref_code is not None:
                # The reference trims ICL output proportionally, not at ref_len·1920.
                wav = wav[int(len(r.ref_code) / max(len(c), 1) * wav.shape[0]):]
            out.append(wav)
        return out, sr

    def _decode(self, codes: list[np.ndarray]):
        sr = self.speech_tokenizer.get_output_sample_rate()
        nonempty = [i for i, c in enumerate(codes) if len(c)]
        wavs = [np.zeros(0, np.float32) for _ in codes]
        if nonempty:
            if self.mesh is not None:
                from qwen3tts_jax.sharding import decode_audio

                decoded, sr = decode_audio(self.speech_tokenizer, [codes[i] for i in nonempty], self.mesh)
            else:
                decoded, sr = self.speech_tokenizer.decode([{"audio_codes": codes[i]} for i in nonempty])
            for i, w in zip(nonempty, decoded):
                wavs[i] = w
        return wavs, sr

    # ------------------------------------------------------------------ public generation

    def generate_voice_clone(self, text, language=None, ref_audio=None, ref_text=None, x_vector_only_mode=False,
                             voice_clone_prompt=None, non_streaming_mode=False, **kwargs):
        reqs = self._clone_requests(text, language, ref_audio, ref_text, x_vector_only_mode, voice_clone_prompt, non_streaming_mode)
        return self._synthesize(reqs, kwargs)

    def generate_custom_voice(self, text, speaker, language=None, instruct=None, non_streaming_mode=True, **kwargs):
        return self._synthesize(self._custom_requests(text, speaker, language, instruct, non_streaming_mode), kwargs)

    def generate_voice_design(self, text, instruct, language=None, non_streaming_mode=True, **kwargs):
        return self._synthesize(self._design_requests(text, instruct, language, non_streaming_mode), kwargs)

    # ------------------------------------------------------------------ streaming

    def stream_voice_clone(self, text, language=None, ref_audio=None, ref_text=None, x_vector_only_mode=False,
                           voice_clone_prompt=None, non_streaming_mode=False, chunk_frames: int = 4,
                           first_chunk_frames: int = 1, **kwargs):
        reqs = self._clone_requests(text, language, ref_audio, ref_text, x_vector_only_mode, voice_clone_prompt, non_streaming_mode)
        return self._stream(reqs, kwargs, chunk_frames, first_chunk_frames)

    def stream_custom_voice(self, text, speaker, language=None, instruct=None, non_streaming_mode=True,
                            chunk_frames: int = 4, first_chunk_frames: int = 1, **kwargs):
        return self._stream(self._custom_requests(text, speaker, language, instruct, non_streaming_mode), kwargs,
                            chunk_frames, first_chunk_frames)

    def stream_voice_design(self, text, instruct, language=None, non_streaming_mode=True, chunk_frames: int = 4,
                            first_chunk_frames: int = 1, **kwargs):
        return self._stream(self._design_requests(text, instruct, language, non_streaming_mode), kwargs,
                            chunk_frames, first_chunk_frames)

    def _stream(self, requests: list[PromptRequest], kwargs: dict, chunk_frames: int,
                first_chunk_frames: int = 1) -> Iterator[tuple[np.ndarray, int]]:
        """Yield `(float32 audio chunk, 24000)` as frames are produced: the first chunk after
        `first_chunk_frames` frames (audio starts as early as possible), then `chunk_frames`
        frames per chunk, decoded by the codec's causal streaming decoder.

        The frames come from the same compiled while-loop decode as offline generation, run up
        to a frame count given at run time: any chunk sizes, no extra compilation."""
        if len(requests) != 1:
            raise ValueError(f"streaming takes one text at a time, got {len(requests)}")
        for name, value in (("chunk_frames", chunk_frames), ("first_chunk_frames", first_chunk_frames)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        gen_cfg, key = self._gen_config(dict(kwargs))
        batch, decoder = self._prepare(requests, gen_cfg)
        return self._stream_iter(requests[0], batch, decoder, gen_cfg, key, chunk_frames, first_chunk_frames)

    def _stream_codec(self):
        """A fresh streaming codec decoder. One template per model holds the prepared
        (re-laid-out) codec params; each stream gets a shallow copy with its own state."""
        from qwen3tts_jax.codec.streaming import StreamingDecoder

        template = self.__dict__.get("_stream_codec_template")
        if template is None:
            tok = self.speech_tokenizer
            template = self._stream_codec_template = StreamingDecoder(tok.params["decoder"], tok.config.decoder, tok.policy)
        codec = copy.copy(template)
        codec.reset()
        return codec

    def _stream_iter(self, req, batch, decoder, gen_cfg, key, chunk_frames, first_chunk_frames):
        stats = self.last_stream_stats = StreamStats()
        start = time.perf_counter()
        prefill, decode, _ = gen.compiled(decoder)
        frames = gen.frame_budget(gen_cfg.max_new_tokens)
        params = self.params["talker"]
        slots = gen.cache_slots(batch.embeds.shape[1], frames)
        state = prefill(params, jax.device_put(batch.embeds), jax.device_put(batch.mask), slots, frames, key)
        trailing = jax.device_put(batch.trailing)
        sr = self.speech_tokenizer.get_output_sample_rate()
        eos = self.config.talker.codec_eos_token_id
        emitted, codec, tokens, want = 0, None, 1, first_chunk_frames  # after prefill: 1 token, 0 frames
        while True:
            state = decode(params, trailing, state, min(tokens + want, gen_cfg.max_new_tokens))
            want = chunk_frames
            if codec is None:  # set up while the first chunk computes (dispatch is asynchronous)
                codec = self._stream_codec()
                if req.ref_code is not None:
                    # codec context; its audio is the prompt's
                    _push_fixed(codec, np.asarray(req.ref_code, np.int32), chunk_frames, final=False)
            tokens = int(state.num_tokens)
            n = tokens - 1
            new = np.asarray(state.codes)[0, emitted:n]  # sliced on the host: no per-offset device op
            stop = np.nonzero(new[:, 0] == eos)[0]
            finished = len(stop) > 0 or gen.done(state, gen_cfg.max_new_tokens)
            new = new[: stop[0]] if len(stop) else new
            if len(new):
                wav = _push_fixed(codec, new, chunk_frames, final=finished)
                emitted += len(new)
                if stats.time_to_first_audio is None:
                    stats.time_to_first_audio = time.perf_counter() - start
                stats.frames, stats.audio_seconds = emitted, stats.audio_seconds + len(wav) / sr
                yield wav.astype(np.float32), sr
            if finished:
                break
        stats.total_time = time.perf_counter() - start


def _push_fixed(codec, frames: np.ndarray, chunk: int, final: bool) -> np.ndarray:
    """Push `(k, q)` code frames into a `StreamingDecoder` using only pushes of `chunk` or 1
    frames, so the jitted codec step compiles for at most those two lengths (plus the codec's own
    25-frame context re-feed every 300 frames) instead of once per distinct length.

    A short tail of a finished stream is padded with code 0 up to `chunk` and its audio cut to
    the real frames: the decoder is causal, so the padded frames change no earlier sample (the
    state they leave behind is never used). A short tail that the stream continues from (the ICL
    reference codes) goes in frame by frame instead. A full chunk that would straddle the codec's
    300-frame reference-chunk boundary also goes frame by frame up to it (`push` would split it
    there into two other lengths)."""
    if codec.reference_chunking and chunk > codec.chunk_size:
        return codec.push(frames.T[None])[0]  # every chunk straddles a boundary: push as it comes
    per_frame = codec.cfg.total_upsample
    out, i, k = [], 0, len(frames)

    def straddles() -> bool:
        return codec.reference_chunking and codec.frames % codec.chunk_size + chunk > codec.chunk_size

    while i < k:
        left = k - i
        if left >= chunk and not straddles():
            out.append(codec.push(frames[i : i + chunk].T[None])[0])
            i += chunk
        elif left < chunk and final and not straddles():
            padded = np.concatenate([frames[i:], np.zeros((chunk - left, frames.shape[1]), frames.dtype)])
            out.append(codec.push(padded.T[None])[0][: left * per_frame])
            i = k
        else:
            out.append(codec.push(frames[i : i + 1].T[None])[0])
            i += 1
    return np.concatenate(out)
