"""`Qwen3TTSModel`: the qwen_tts-compatible public API over the functional JAX layer.

Mirrors `qwen_tts.inference.qwen3_tts_model.Qwen3TTSModel` (same method names, keyword arguments
and return values: `(list of float32 mono waveforms, 24000)`), plus what the reference lacks:
explicit `seed`, streaming generators that yield audio as frames are produced, and `random:<name>`
models for machines without the weights. Everything is validated before any compute, with errors
that name the argument and the value.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from qwen3tts_jax import checks, long_form
from qwen3tts_jax.audio import normalize_audios
from qwen3tts_jax.config import GenerationConfig, Policy, Qwen3TTSConfig, as_dtype
from qwen3tts_jax.engine import Engine, EngineShape, Request, Result, request_keys
from qwen3tts_jax.hub import check_model_folder, resolve_folder
from qwen3tts_jax.long_form import LongFormOptions
from qwen3tts_jax.prompt import PromptRequest, VoiceClonePromptItem, prompt_tracks
from qwen3tts_jax.sampling import SamplingConfig
from qwen3tts_jax.sharding import Placement, make_mesh, model_units
from qwen3tts_jax.speech_tokenizer import Qwen3TTSTokenizer
from qwen3tts_jax.text import TextTokenizer
from qwen3tts_jax.weights import layout_model_params, load_model_params

SAMPLE_KWARGS = (
    "do_sample",
    "top_k",
    "top_p",
    "temperature",
    "repetition_penalty",
    "subtalker_dosample",
    "subtalker_top_k",
    "subtalker_top_p",
    "subtalker_temperature",
    "max_new_tokens",
)
# Additions to the reference's generation kwargs (see `_gen_config`).
EXTRA_KWARGS = ("min_new_tokens",)
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


_KIND_NAMES = {"base": "Base", "custom_voice": "CustomVoice", "voice_design": "VoiceDesign"}  # as in the hub ids


class Qwen3TTSModel:
    """Qwen3-TTS (12 Hz family) in JAX. Build with `from_pretrained`."""

    def __init__(
        self,
        config: Qwen3TTSConfig,
        params: dict,
        text_tokenizer: TextTokenizer,
        speech_tokenizer: Qwen3TTSTokenizer,
        generation_config: GenerationConfig,
        policy: Policy,
        path: str | None = None,
        placement: Placement = Placement(),
    ):
        self.config, self.params, self.policy = config, params, policy
        self.placement = placement  # one device, or the ("data", "model") mesh the params are placed on
        self.processor = self.text_tokenizer = text_tokenizer
        self.speech_tokenizer = speech_tokenizer
        self.generate_config = self.generation_config = generation_config
        self.path = path
        self.tts_model_type, self.tts_model_size = config.tts_model_type, config.tts_model_size
        self.last_stream_stats = StreamStats()
        self.last_long_form: list[list[long_form.SegmentReport]] | None = None  # per text, after long_form=True

    @property
    def mesh(self):
        """The device mesh the model is placed on, or None (one device)."""
        return self.placement.mesh

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        dtype: Any = None,
        scan_layers: bool | None = None,
        seed: int = 0,
        mesh: Any = None,
        policy: Policy | None = None,
        **kwargs,
    ) -> Qwen3TTSModel:
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
        placement = Placement(None if mesh is None else make_mesh(mesh))
        seed = checks.check_seed(seed)
        name = str(pretrained_model_name_or_path)
        if name.startswith("random:"):
            return cls._random(name, policy, seed, placement)
        folder = resolve_folder(name)
        cfg = Qwen3TTSConfig.from_model_dir(folder)
        check_model_folder(folder, "pretrained_model_name_or_path")
        params = load_model_params(
            folder, cfg, dtype=dt, scan_layers=policy.scan_layers, shardings=placement.loader(model_units(cfg))
        )  # each process reads its slices
        speech = Qwen3TTSTokenizer.from_pretrained(folder / "speech_tokenizer", policy=policy)
        speech.params = placement.codec_params(speech.params, speech.config)
        return cls(
            cfg,
            placement.model_params(params, cfg),
            TextTokenizer.from_pretrained(folder),
            speech,
            GenerationConfig.from_model_dir(folder),
            policy,
            str(folder),
            placement,
        )

    @classmethod
    def _random(cls, spec: str, policy: Policy, seed: int, placement: Placement = Placement()) -> Qwen3TTSModel:
        from qwen3tts_jax import presets
        from qwen3tts_jax.codec.config import Qwen3TTSTokenizerV2Config
        from qwen3tts_jax.random_model import (
            byte_level_text_tokenizer,
            parse_random_spec,
            random_codec_params,
            random_model_params,
        )

        kind, size = parse_random_spec(spec)
        cfg = Qwen3TTSConfig.from_dict(presets.model_config(kind, size), f"{spec} config")
        on_device = jax.default_backend() != "cpu"  # draw on the accelerator: no multi-GB host build and copy
        params = random_model_params(cfg, seed, policy.param_dtype, on_device)
        params = layout_model_params(params, cfg, policy.scan_layers)
        codec_cfg = Qwen3TTSTokenizerV2Config.from_dict(
            presets.tokenizer_config(tiny=size == "tiny"), f"{spec} tokenizer config"
        )
        codec_params = random_codec_params(codec_cfg, seed, policy.param_dtype, on_device)
        speech = Qwen3TTSTokenizer(codec_cfg, codec_params, policy)
        text = byte_level_text_tokenizer()
        gen_cfg = GenerationConfig.from_dict(presets.random_generation_config(), f"{spec} generation config")
        speech.params = placement.codec_params(speech.params, codec_cfg)
        return cls(cfg, placement.model_params(params, cfg), text, speech, gen_cfg, policy, spec, placement)

    # ------------------------------------------------------------------ info

    def get_supported_speakers(self) -> list[str] | None:
        return checks.supported_speakers(self.config.talker)

    def get_supported_languages(self) -> list[str]:
        return checks.supported_languages(self.config.talker)

    def _require(self, kind: str, method: str) -> None:
        if self.tts_model_type != kind:
            raise ValueError(
                f"{method} needs a {kind!r} model (tts_model_type={kind!r}); this model is {self.tts_model_type!r} "
                f"(size {self.tts_model_size}). Use a "
                f"Qwen3-TTS-12Hz-*-{_KIND_NAMES[kind]} model."
            )

    def _languages(self, language, n: int) -> list[str]:
        langs = _broadcast("language", _as_list(language) if language is not None else ["Auto"], n)
        return checks.check_languages(langs, self.get_supported_languages())

    def _texts(self, text) -> list[str]:
        texts = _as_list(text)
        if not texts:
            raise ValueError("text: no text given (empty list)")
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"text[{i}]: must be a non-empty string, got {t!r}")
        return texts

    def _gen_config(self, kwargs: dict) -> tuple[GenerationConfig, SamplingConfig, jax.Array]:
        seed, key = kwargs.pop("seed", None), kwargs.pop("key", None)
        explicit = {k: kwargs.pop(k) for k in SAMPLE_KWARGS if kwargs.get(k) is not None}
        min_new = kwargs.pop("min_new_tokens", None)
        for k in SAMPLE_KWARGS:
            kwargs.pop(k, None)
        if kwargs:
            # The reference forwards unknown kwargs to generate(), which ignores them.
            warnings.warn(f"ignoring generation keyword argument(s) {sorted(kwargs)}", stacklevel=3)
        cfg = dataclasses.replace(self.generation_config, **explicit)
        checks.check_max_new_tokens(cfg.max_new_tokens)
        sampling = SamplingConfig.from_configs(cfg, self.config.talker)
        if min_new is not None:  # an addition: EOS blocked for the first `min_new_tokens` (benchmarks)
            min_new = checks.check_int("min_new_tokens", min_new, 0)
            sampling = dataclasses.replace(
                sampling, talker=dataclasses.replace(sampling.talker, min_new_tokens=min_new)
            )
        return cfg, sampling, checks.prng_key(seed, key)

    # ------------------------------------------------------------------ voice clone prompts

    def create_voice_clone_prompt(
        self, ref_audio, ref_text=None, x_vector_only_mode=False
    ) -> list[VoiceClonePromptItem]:
        """Reference audio (+ transcript for ICL) → reusable prompt items (`voice_clone_prompt=`)."""
        self._require("base", "create_voice_clone_prompt")
        audios = _as_list(ref_audio) if isinstance(ref_audio, list) else [ref_audio]
        texts = _broadcast("ref_text", _as_list(ref_text) if isinstance(ref_text, list) else [ref_text], len(audios))
        xvec = _broadcast("x_vector_only_mode", _as_list(x_vector_only_mode), len(audios))
        xvec = [checks.check_bool(f"x_vector_only_mode[{i}]", x) for i, x in enumerate(xvec)]
        for i, (t, xo) in enumerate(zip(texts, xvec)):
            if not xo and (not isinstance(t, str) or not t.strip()):
                raise ValueError(f"ref_text[{i}] is required when x_vector_only_mode=False (ICL mode), got {t!r}")
        wavs = normalize_audios(audios, target_sr=24000, name="ref_audio")
        from qwen3tts_jax.speaker_encoder import extract_speaker_embedding, min_samples

        shortest = max(min_samples(self.config.speaker_encoder), 1920)
        for i, w in enumerate(wavs):
            if len(w) < shortest:
                raise ValueError(
                    f"ref_audio[{i}]: {len(w)} samples at 24 kHz is too short (need >= {shortest}, "
                    f"{shortest / 24000:.3f} s)"
                )
            if float(np.max(np.abs(w))) < SILENCE_PEAK:
                raise ValueError(
                    f"ref_audio[{i}]: the audio is silent (peak {float(np.max(np.abs(w))):.2e}); nothing to clone"
                )
        codes = self.speech_tokenizer.encode([(w, 24000) for w in wavs]).audio_codes
        items = []
        for w, c, t, xo in zip(wavs, codes, texts, xvec):
            emb = np.asarray(extract_speaker_embedding(self.params, self.config, w, 24000, self.policy))
            items.append(VoiceClonePromptItem(None if xo else np.asarray(c), emb, bool(xo), not bool(xo), t))
        return items

    # ------------------------------------------------------------------ request building
    # `*_prompts` take the arguments of the matching `generate_*` method (validated here, before
    # any work) and return tokenized `PromptRequest`s; `requests` adds sampling, budget and keys;
    # `run`/`engine` generate. `generate_*` is exactly these three steps.

    def voice_clone_prompts(
        self,
        text,
        language=None,
        ref_audio=None,
        ref_text=None,
        x_vector_only_mode=False,
        voice_clone_prompt=None,
        non_streaming_mode=False,
    ) -> list[PromptRequest]:
        self._require("base", "generate_voice_clone")
        texts = self._texts(text)
        langs = self._languages(language, len(texts))
        non_streaming_mode = checks.check_bool("non_streaming_mode", non_streaming_mode)
        if voice_clone_prompt is None:
            if ref_audio is None:
                raise ValueError("Either `voice_clone_prompt` or `ref_audio` must be provided.")
            # the counts agree before any audio is encoded
            _broadcast("ref_audio", ref_audio if isinstance(ref_audio, list) else [ref_audio], len(texts))
            items = self.create_voice_clone_prompt(ref_audio, ref_text, x_vector_only_mode)
        else:
            items = checks.check_voice_clone_prompt(voice_clone_prompt, self.config, ref_text)
        items = _broadcast("voice_clone_prompt", items, len(texts))
        reqs = []
        for i, (t, lang, it) in enumerate(zip(texts, langs, items)):
            icl = it.icl_mode and it.ref_code is not None
            if icl and not it.ref_text:
                raise ValueError(f"voice_clone_prompt[{i}]: ICL mode needs its ref_text")
            reqs.append(
                PromptRequest(
                    self.text_tokenizer.assistant_text_ids(t).input_ids,
                    lang,
                    speaker_embedding=np.asarray(it.ref_spk_embedding, np.float32)
                    if (it.icl_mode or it.x_vector_only_mode)
                    else None,
                    ref_text_ids=self.text_tokenizer.ref_text_ids(it.ref_text).input_ids if icl else None,
                    ref_code=np.asarray(it.ref_code) if icl else None,
                    non_streaming_mode=bool(non_streaming_mode),
                )
            )
        return reqs

    def custom_voice_prompts(
        self, text, speaker, language=None, instruct=None, non_streaming_mode=True
    ) -> list[PromptRequest]:
        self._require("custom_voice", "generate_custom_voice")
        texts = self._texts(text)
        langs = self._languages(language, len(texts))
        speakers = _broadcast("speaker", _as_list(speaker), len(texts))
        checks.check_speakers(speakers, self.get_supported_speakers() or [])
        non_streaming_mode = checks.check_bool("non_streaming_mode", non_streaming_mode)
        if self.tts_model_size == "0b6":  # as the reference: the 0.6B CustomVoice model takes no instruct
            if any(_as_list(instruct)):
                warnings.warn(
                    "instruct is ignored: the 0.6B CustomVoice model takes no instruction (the 1.7B does)", stacklevel=3
                )
            instruct = None
        instructs = _broadcast("instruct", _as_list(instruct) if instruct is not None else [""], len(texts))
        return [
            PromptRequest(
                self.text_tokenizer.assistant_text_ids(t).input_ids,
                lang,
                s,
                instruct_ids=self.text_tokenizer.instruct_ids(ins).input_ids if ins else None,
                non_streaming_mode=bool(non_streaming_mode),
            )
            for t, lang, s, ins in zip(texts, langs, speakers, instructs)
        ]

    def voice_design_prompts(self, text, instruct, language=None, non_streaming_mode=True) -> list[PromptRequest]:
        self._require("voice_design", "generate_voice_design")
        texts = self._texts(text)
        langs = self._languages(language, len(texts))
        non_streaming_mode = checks.check_bool("non_streaming_mode", non_streaming_mode)
        instructs = _broadcast("instruct", _as_list(instruct), len(texts))
        for i, ins in enumerate(instructs):
            if not isinstance(ins, str):  # '' stays allowed: the reference takes it as "no description"
                raise ValueError(f"instruct[{i}]: generate_voice_design needs a voice description string, got {ins!r}")
        return [
            PromptRequest(
                self.text_tokenizer.assistant_text_ids(t).input_ids,
                lang,
                instruct_ids=self.text_tokenizer.instruct_ids(ins).input_ids if ins else None,
                non_streaming_mode=bool(non_streaming_mode),
            )
            for t, lang, ins in zip(texts, langs, instructs)
        ]

    # ------------------------------------------------------------------ requests → the engine

    def requests(
        self, prompts: list[PromptRequest], audio: bool = True, owners: list[int] | None = None, **kwargs
    ) -> list[Request]:
        """Engine requests for already-built prompts, with the generation kwargs of `generate_*`
        (`seed=`/`key=` give request i the key `fold_in(key, i)`: request 0 of a batch draws
        what it draws alone; with `owners`, request i draws with the key of text `owners[i]`,
        as every segment of a long text does)."""
        gen_cfg, sampling, key = self._gen_config(dict(kwargs))
        budget = self.config.talker.transformer.max_position_embeddings
        for i, p in enumerate(prompts):
            n = prompt_tracks(self.config, p).length
            if n + gen_cfg.max_new_tokens > budget:
                raise ValueError(
                    f"text[{i}]: the prompt is {n} positions and max_new_tokens={gen_cfg.max_new_tokens}; together "
                    "they exceed "
                    f"the model's position budget max_position_embeddings={budget}. Shorten the text or lower "
                    "max_new_tokens."
                )
        keys = request_keys(key, len(prompts) if owners is None else max(owners) + 1)
        return [
            Request(p, sampling, gen_cfg.max_new_tokens, keys[i if owners is None else owners[i]], audio=audio)
            for i, p in enumerate(prompts)
        ]

    def engine(self, shape: EngineShape, **kwargs) -> Engine:
        """A generation engine over this model with the given slots and lengths (see
        `qwen3tts_jax.engine`): for batch jobs, servers and research use."""
        return Engine(self, shape, **kwargs)

    def run(self, requests: list[Request], **engine_kwargs) -> list[Result]:
        """Run requests offline in an engine sized to hold them all at once."""
        return self.engine(EngineShape.fit(requests, self.config, self.placement), **engine_kwargs).run(requests)

    def generate_codes(self, requests: list[PromptRequest], **kwargs) -> list[np.ndarray]:
        """The functional layer's codes for already-built prompts: list of (T_i, 16) int arrays."""
        return [r.codes for r in self.run(self.requests(requests, audio=False, **kwargs))]

    def long_form_plan(self, prompts: list[PromptRequest], text, kwargs: dict, options: LongFormOptions):
        """Each text cut into segments, each segment a request with its text's voice and key
        (`generate_*`/`stream_*` with `long_form=`, and the server, run this plan)."""
        texts = self._texts(text)
        count = lambda s: len(self.text_tokenizer.encode(s))
        segments = long_form.split_texts(texts, [p.language for p in prompts], options, count)
        owners = [i for i, segs in enumerate(segments) for _ in segs]
        seg_prompts = [
            dataclasses.replace(prompts[i], text_ids=self.text_tokenizer.assistant_text_ids(seg.text).input_ids)
            for i, segs in enumerate(segments)
            for seg in segs
        ]
        explicit = kwargs.get("max_new_tokens")
        return long_form.plan(segments, self.requests(seg_prompts, owners=owners, **kwargs), explicit, options)

    def _synthesize(self, prompts: list[PromptRequest], kwargs: dict, long_form_opt=False, text=None):
        sr = self.speech_tokenizer.get_output_sample_rate()
        options = LongFormOptions.of(long_form_opt)
        if options is not None:
            wavs, self.last_long_form = long_form.run(
                self, self.long_form_plan(prompts, text, kwargs, options), options
            )
            return wavs, sr
        out = []
        for p, r in zip(prompts, self.run(self.requests(prompts, **kwargs))):
            wav = r.audio
            if p.ref_code is not None and len(r.codes):
                # The reference decodes reference + new codes and cuts proportionally at
                # `int(ref / total · samples)`, which can fall a sample before ref·1920, where
                # the engine's stream starts: prepend what the reference keeps of the reference's
                # own audio (the codec is causal, so that is the reference codes' own decode).
                up = self.speech_tokenizer.config.decoder.total_upsample
                ref, total = len(p.ref_code), len(p.ref_code) + len(r.codes)
                lead = ref * up - int(ref / total * total * up)
                if lead > 0:
                    own = self.speech_tokenizer.decode([{"audio_codes": np.asarray(p.ref_code)}])[0][0]
                    wav = np.concatenate([own[len(own) - lead :], wav])
            out.append(wav)
        return out, sr

    # ------------------------------------------------------------------ public generation

    # `long_form=True` (or a `LongFormOptions`): each text is cut into sentence/clause segments, each
    # segment generated with its own budget and loop guard in the same voice, the audio joined
    # (`qwen3tts_jax.long_form`); `model.last_long_form` says how each segment ended. Off by
    # default: a text is then one run, exactly as the reference.

    def generate_voice_clone(
        self,
        text,
        language=None,
        ref_audio=None,
        ref_text=None,
        x_vector_only_mode=False,
        voice_clone_prompt=None,
        non_streaming_mode=False,
        long_form=False,
        **kwargs,
    ):
        reqs = self.voice_clone_prompts(
            text, language, ref_audio, ref_text, x_vector_only_mode, voice_clone_prompt, non_streaming_mode
        )
        return self._synthesize(reqs, kwargs, long_form, text)

    def generate_custom_voice(
        self, text, speaker, language=None, instruct=None, non_streaming_mode=True, long_form=False, **kwargs
    ):
        return self._synthesize(
            self.custom_voice_prompts(text, speaker, language, instruct, non_streaming_mode), kwargs, long_form, text
        )

    def generate_voice_design(self, text, instruct, language=None, non_streaming_mode=True, long_form=False, **kwargs):
        return self._synthesize(
            self.voice_design_prompts(text, instruct, language, non_streaming_mode), kwargs, long_form, text
        )

    # ------------------------------------------------------------------ streaming

    def stream_voice_clone(
        self,
        text,
        language=None,
        ref_audio=None,
        ref_text=None,
        x_vector_only_mode=False,
        voice_clone_prompt=None,
        non_streaming_mode=False,
        chunk_frames: int = 4,
        first_chunk_frames: int = 1,
        long_form=False,
        **kwargs,
    ):
        reqs = self.voice_clone_prompts(
            text, language, ref_audio, ref_text, x_vector_only_mode, voice_clone_prompt, non_streaming_mode
        )
        return self._stream(reqs, kwargs, chunk_frames, first_chunk_frames, long_form, text)

    def stream_custom_voice(
        self,
        text,
        speaker,
        language=None,
        instruct=None,
        non_streaming_mode=True,
        chunk_frames: int = 4,
        first_chunk_frames: int = 1,
        long_form=False,
        **kwargs,
    ):
        return self._stream(
            self.custom_voice_prompts(text, speaker, language, instruct, non_streaming_mode),
            kwargs,
            chunk_frames,
            first_chunk_frames,
            long_form,
            text,
        )

    def stream_voice_design(
        self,
        text,
        instruct,
        language=None,
        non_streaming_mode=True,
        chunk_frames: int = 4,
        first_chunk_frames: int = 1,
        long_form=False,
        **kwargs,
    ):
        return self._stream(
            self.voice_design_prompts(text, instruct, language, non_streaming_mode),
            kwargs,
            chunk_frames,
            first_chunk_frames,
            long_form,
            text,
        )

    def _stream(
        self,
        prompts: list[PromptRequest],
        kwargs: dict,
        chunk_frames: int,
        first_chunk_frames: int = 1,
        long_form_opt=False,
        text=None,
    ) -> Iterator[tuple[np.ndarray, int]]:
        """Yield `(float32 audio chunk, 24000)` as frames are produced: the first chunk after
        `first_chunk_frames` frames (audio starts as early as possible), then `chunk_frames`
        frames per chunk, decoded by the codec's causal streaming decoder. The same engine and
        compiled programs as offline generation, read as it goes."""
        if len(prompts) != 1:
            raise ValueError(f"streaming takes one text at a time, got {len(prompts)}")
        for name, value in (("chunk_frames", chunk_frames), ("first_chunk_frames", first_chunk_frames)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        options = LongFormOptions.of(long_form_opt)
        if options is not None:
            plan = self.long_form_plan(prompts, text, kwargs, options)
            return self._stream_long(plan, options, chunk_frames, first_chunk_frames)
        reqs = self.requests(prompts, **kwargs)
        engine = self.engine(
            EngineShape.fit(reqs, self.config, self.placement),
            chunk_frames=chunk_frames,
            first_chunk_frames=first_chunk_frames,
        )
        return self._stream_iter(engine, reqs[0])

    def _stream_long(self, plan, options, chunk_frames, first_chunk_frames):
        stats = self.last_stream_stats = StreamStats()
        sr = self.speech_tokenizer.get_output_sample_rate()
        start = time.perf_counter()

        def done(reports):
            self.last_long_form = [reports]

        for audio in long_form.stream(self, plan, options, chunk_frames, first_chunk_frames, done):
            if stats.time_to_first_audio is None:
                stats.time_to_first_audio = time.perf_counter() - start
            stats.audio_seconds += len(audio) / sr
            yield audio, sr
        stats.frames = sum(r.frames for r in self.last_long_form[0])
        stats.total_time = time.perf_counter() - start

    def _stream_iter(self, engine: Engine, request: Request):
        stats = self.last_stream_stats = StreamStats()
        sr = self.speech_tokenizer.get_output_sample_rate()
        handle = engine.submit(request)
        try:
            for chunk in handle:
                if stats.time_to_first_audio is None:
                    stats.time_to_first_audio = time.perf_counter() - handle.submitted
                stats.frames += len(chunk.codes)
                stats.audio_seconds += len(chunk.audio) / sr
                yield chunk.audio, sr
        finally:
            if not handle.done:  # the caller stopped reading: free the slot
                handle.cancel()
                engine.step()
        stats.total_time = time.perf_counter() - handle.submitted
