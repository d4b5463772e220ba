"""Frozen configs parsed from a Qwen3-TTS model folder.

Mirrors `qwen_tts.core.models.configuration_qwen3_tts` (`Qwen3TTSConfig`, `Qwen3TTSTalkerConfig`,
`Qwen3TTSTalkerCodePredictorConfig`, `Qwen3TTSSpeakerEncoderConfig`) and the plain-dict
`generation_config.json`. The reference's class defaults are NOT the released values (20 talker
layers, theta 1e4, special ids 4196..): every field that decides the architecture or a token id is
read from the JSON and a missing one is an error naming the file and field. Optional fields get the
reference's own fallback (e.g. `head_dim = hidden_size // num_attention_heads`).

Everything here is hashable (tuples, not lists or dicts) so configs can be static jit arguments;
change one with `dataclasses.replace`, never by mutation.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp

MODEL_TYPE = "qwen3_tts"
TTS_MODEL_TYPES = ("base", "custom_voice", "voice_design")
TOKENIZER_TYPES = ("qwen3_tts_tokenizer_12hz",)

_MISSING = object()


class ConfigError(ValueError):
    """A config file is missing, unreadable, or lacks/invalidates a field; the message names both."""


def read_json(path: Path) -> dict:
    """Read a JSON object, naming the file in every failure."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


class _Fields:
    """Typed reads from one JSON object, naming `file: prefix.field` in errors."""

    def __init__(self, data: Mapping[str, Any], source: str, prefix: str = ""):
        self.data, self.source, self.prefix = data, source, prefix

    def where(self, name: str) -> str:
        return f"{self.source}: {self.prefix}{name}"

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = _MISSING) -> Any:
        value = self.data.get(name, _MISSING)
        if value is _MISSING or (value is None and default is not _MISSING and default is None):
            if default is _MISSING:
                raise ConfigError(f"{self.where(name)} is missing (required)")
            return default
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and kind in (int, float):
            raise ConfigError(f"{self.where(name)} must be {kind.__name__}, got {value!r}")
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise ConfigError(f"{self.where(name)} must be {names}, got {value!r}")
        return value

    def positive(self, name: str, default: Any = _MISSING) -> int:
        value = self.get(name, int, default)
        if value <= 0:
            raise ConfigError(f"{self.where(name)} must be a positive integer, got {value!r}")
        return value

    def token_id(self, name: str, default: Any = _MISSING) -> int:
        """Token ids may be stored as an int or a one-element list ([3066])."""
        return _as_token_id(self.get(name, (int, list), default), self.where(name))

    def id_map(self, name: str, default: Any = _MISSING) -> tuple[tuple[str, int], ...]:
        value = self.get(name, dict, default)
        return tuple(sorted((str(k), _as_token_id(v, self.where(f"{name}.{k}"))) for k, v in value.items()))

    def sub(self, name: str, default: Any = _MISSING) -> _Fields:
        value = self.get(name, dict, default)
        return _Fields(value, self.source, f"{self.prefix}{name}.")


def _as_token_id(value: Any, where: str) -> int:
    if isinstance(value, list):
        if len(value) != 1:
            raise ConfigError(f"{where} must be an int or a one-element list, got {value!r}")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where} must be an integer token id, got {value!r}")
    return value


def as_dtype(dtype: Any):
    """A compute dtype from what users pass: None → float32; jnp/numpy dtypes, names
    ("bfloat16", "bf16", "fp32", ...) and torch dtypes (as the reference's `dtype=torch.bfloat16`)."""
    if dtype is None:
        return jnp.dtype(jnp.float32)
    if not isinstance(dtype, str) and type(dtype).__module__.startswith("torch"):
        dtype = str(dtype)
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
        dtype = {"bf16": "bfloat16", "fp32": "float32", "fp16": "float16", "float": "float32", "half": "float16"}.get(
            name, name
        )
    try:
        dt = jnp.dtype(dtype)
    except TypeError as err:
        raise ValueError(f"dtype: not a floating dtype: {dtype!r}") from err
    if not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"dtype: not a floating dtype: {dtype!r}")
    return dt


# --------------------------------------------------------------------------------------------
# Runtime policy (not from the checkpoint): dtypes and layer-stack layout.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Policy:
    """How to run, independent of what was trained: every backend choice that decides what gets
    compiled, as a named field (read this class to know the program).

    `dtype` is the compute/activation dtype (fp32 by default, as the reference; bf16 is the
    GPU/TPU option — XLA's CPU bf16 dot is several times slower than fp32). Norm statistics,
    softmax, RoPE angles and logits are always fp32. `param_dtype` is the dtype weights are kept
    in. The defaults are XLA:CPU's choices; `for_backend` fills those of a backend.
    """

    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    # One `lax.scan` over stacked layer weights (one compile; GPU/TPU) instead of a Python loop
    # over per-layer weights (≈2.5× faster on XLA:CPU, which copies each weight slice in a scan).
    scan_layers: bool = False
    # Self-attention over a KV cache longer than this many slots visits only the written prefix,
    # this many slots at a time (`nn.attention.attend_live`): a decode step then costs what the
    # tokens so far cost, not the whole budget. 0 attends over every slot. 64 measured fastest on
    # the 2-core CPU (benchmarks/RESULTS.md, "attention").
    attention_block: int = 64
    # Small-batch `x @ Wᵀ` form (`nn.linear.linear`): "weight_stationary" streams the (out, in)
    # weight once with the few rows held (XLA:CPU, up to WEIGHT_STATIONARY_ROWS rows); "xla"
    # leaves the dot to the compiler (GPU/TPU).
    matmul: str = "weight_stationary"
    # Decode-time attention (≤ FEW_QUERIES queries) as fused multiply-reduce loops in the cache's
    # own layout (XLA:CPU) instead of per-head dots (GPU/TPU).
    few_query_attention: bool = True
    # Donate the codec streaming state to its jitted step (GPU/TPU); on XLA:CPU donation made the
    # step slower (benchmarks/RESULTS.md).
    donate_codec_state: bool = False
    # The code predictor's 14 single steps: "switch" picks each step's embedding table and head
    # with `lax.switch`, read in place (XLA:CPU copies stacked slices); "scan" runs a `lax.scan`
    # over stacked tables and heads (no data-dependent branches on the device).
    predictor_loop: str = "switch"
    # Rows per codec push when the engine hands out running requests' chunks (0: all due rows
    # in one push). Between pushes a request waiting for a free slot is admitted first, so a
    # newcomer waits for one push, not for every companion's audio. On XLA:CPU 4-frame pushes
    # cost the same per row-frame from 4 rows up, 10 % more at 2 rows, 25 % more at 1
    # (benchmarks/RESULTS.md), so 4; a GPU wants every row in one call.
    codec_push_rows: int = 4
    # The codec's SnakeBeta `sin(·)²`: "polynomial" (vectorised Cody–Waite reduction and Cephes
    # polynomials, `nn.activations`; XLA:CPU runs its own `sin` one element at a time, which made
    # the snakes cost as much as the decoder's convolutions) or "xla" (`jnp.sin`; GPU/TPU).
    snake_sine: str = "polynomial"

    def __post_init__(self):
        if self.matmul not in ("weight_stationary", "xla"):
            raise ValueError(f"Policy.matmul must be 'weight_stationary' or 'xla', got {self.matmul!r}")
        if self.predictor_loop not in ("switch", "scan"):
            raise ValueError(f"Policy.predictor_loop must be 'switch' or 'scan', got {self.predictor_loop!r}")
        if self.snake_sine not in ("polynomial", "xla"):
            raise ValueError(f"Policy.snake_sine must be 'polynomial' or 'xla', got {self.snake_sine!r}")
        n = self.codec_push_rows
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"Policy.codec_push_rows must be an integer >= 0 (0: all rows), got {n!r}")

    @staticmethod
    def for_backend(backend: str | None = None, dtype: Any = None) -> Policy:
        """The default policy of a backend: the fields above on CPU; scanned stacks, XLA's own dot
        and attention forms, a donated codec state, a scanned predictor, every due row in one codec
        push and XLA's own `sin` on GPU/TPU."""
        import jax

        backend = backend or jax.default_backend()
        dtype = jnp.dtype(dtype or jnp.float32)
        if backend == "cpu":
            return Policy(dtype=dtype, param_dtype=dtype)
        return Policy(
            dtype=dtype,
            param_dtype=dtype,
            scan_layers=True,
            matmul="xla",
            few_query_attention=False,
            donate_codec_state=True,
            predictor_loop="scan",
            codec_push_rows=0,
            snake_sine="xla",
        )

    @staticmethod
    def resolve(policy: Policy | None, dtype: Any, where: str) -> Policy:
        """A loader's policy: `policy` as given (an explicit `dtype` replaces both of its dtypes)
        or, without one, the backend's for `dtype`. `where` names the caller in errors."""
        if policy is None:
            return Policy.for_backend(dtype=as_dtype(dtype))
        if not isinstance(policy, Policy):
            raise TypeError(f"{where}: policy must be a qwen3tts_jax.config.Policy, got {policy!r}")
        if dtype is None:
            return policy
        dt = as_dtype(dtype)
        return dataclasses.replace(policy, dtype=dt, param_dtype=dt)


# --------------------------------------------------------------------------------------------
# Model configs
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """The decoder-stack shape shared by the talker and the code predictor
    (`Qwen3TTSTalkerModel` / `Qwen3TTSTalkerCodePredictorModel`)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1e6
    attention_bias: bool = False
    max_position_embeddings: int = 32768

    @property
    def num_groups(self) -> int:
        return self.num_attention_heads // self.num_key_value_heads

    @staticmethod
    def parse(f: _Fields) -> TransformerConfig:
        heads = f.positive("num_attention_heads")
        kv_heads = f.positive("num_key_value_heads", heads)
        hidden = f.positive("hidden_size")
        if heads % kv_heads:
            raise ConfigError(
                f"{f.where('num_attention_heads')}={heads} is not a multiple of num_key_value_heads={kv_heads}"
            )
        act = f.get("hidden_act", str, "silu")
        if act != "silu":
            raise ConfigError(f"{f.where('hidden_act')}={act!r} is not supported (only 'silu')")
        if f.get("use_sliding_window", bool, False):
            raise ConfigError(
                f"{f.where('use_sliding_window')}=true is not supported (released models use full attention)"
            )
        layers = f.positive("num_hidden_layers")
        layer_types = f.get("layer_types", list, None)
        if layer_types is not None and any(t != "full_attention" for t in layer_types):
            raise ConfigError(f"{f.where('layer_types')}={layer_types!r}: only 'full_attention' layers are supported")
        return TransformerConfig(
            hidden_size=hidden,
            intermediate_size=f.positive("intermediate_size"),
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=f.positive("head_dim", hidden // heads),
            rms_norm_eps=f.get("rms_norm_eps", float, 1e-6),
            rope_theta=f.get("rope_theta", float),
            attention_bias=f.get("attention_bias", bool, False),
            max_position_embeddings=f.positive("max_position_embeddings", 32768),
        )


@dataclasses.dataclass(frozen=True)
class CodePredictorConfig:
    """`Qwen3TTSTalkerCodePredictorConfig`: the 15-codebook sub-talker."""

    transformer: TransformerConfig
    vocab_size: int  # entries per residual codebook (2048)
    num_code_groups: int  # 16: codebook 0 from the talker + 15 predicted here

    @staticmethod
    def parse(f: _Fields) -> CodePredictorConfig:
        rope_scaling = f.get("rope_scaling", dict, None)
        if rope_scaling is not None and rope_scaling.get("rope_type", rope_scaling.get("type", "default")) != "default":
            raise ConfigError(f"{f.where('rope_scaling')}={rope_scaling!r}: only default RoPE is supported")
        return CodePredictorConfig(
            transformer=TransformerConfig.parse(f),
            vocab_size=f.positive("vocab_size"),
            num_code_groups=f.positive("num_code_groups"),
        )


@dataclasses.dataclass(frozen=True)
class TalkerConfig:
    """`Qwen3TTSTalkerConfig`: the 28-layer codec LM, its text side and special codec ids."""

    transformer: TransformerConfig
    code_predictor: CodePredictorConfig
    vocab_size: int  # codec vocabulary: 2048 codebook-0 entries + control/language/speaker rows
    text_hidden_size: int
    text_vocab_size: int
    num_code_groups: int
    codec_pad_id: int
    codec_bos_id: int
    codec_eos_token_id: int
    codec_think_id: int
    codec_nothink_id: int
    codec_think_bos_id: int
    codec_think_eos_id: int
    codec_language_id: tuple[tuple[str, int], ...]
    spk_id: tuple[tuple[str, int], ...] = ()
    spk_is_dialect: tuple[tuple[str, str], ...] = ()  # speaker -> dialect name (only truthy entries)
    # The released "interleaved M-RoPE" with three identical position rows is plain RoPE;
    # kept for the record (and rejected if it is anything we do not reduce exactly).
    mrope_section: tuple[int, ...] | None = None

    @staticmethod
    def parse(f: _Fields) -> TalkerConfig:
        rope_scaling = f.get("rope_scaling", dict, None)
        mrope = None
        if rope_scaling is not None:
            kind = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
            if kind != "default":
                raise ConfigError(f"{f.where('rope_scaling')}: rope_type {kind!r} is not supported (only 'default')")
            if "mrope_section" in rope_scaling:
                mrope = tuple(int(s) for s in rope_scaling["mrope_section"])
        transformer = TransformerConfig.parse(f)
        if mrope is not None and sum(mrope) != transformer.head_dim // 2:
            raise ConfigError(
                f"{f.where('rope_scaling.mrope_section')}={list(mrope)} must sum to "
                f"head_dim/2={transformer.head_dim // 2}"
            )
        dialect = f.get("spk_is_dialect", dict, {}) or {}
        return TalkerConfig(
            transformer=transformer,
            code_predictor=CodePredictorConfig.parse(f.sub("code_predictor_config")),
            vocab_size=f.positive("vocab_size"),
            text_hidden_size=f.positive("text_hidden_size"),
            text_vocab_size=f.positive("text_vocab_size"),
            num_code_groups=f.positive("num_code_groups"),
            codec_pad_id=f.token_id("codec_pad_id"),
            codec_bos_id=f.token_id("codec_bos_id"),
            codec_eos_token_id=f.token_id("codec_eos_token_id"),
            codec_think_id=f.token_id("codec_think_id"),
            codec_nothink_id=f.token_id("codec_nothink_id"),
            codec_think_bos_id=f.token_id("codec_think_bos_id"),
            codec_think_eos_id=f.token_id("codec_think_eos_id"),
            codec_language_id=f.id_map("codec_language_id"),
            spk_id=f.id_map("spk_id", {}),
            spk_is_dialect=tuple(sorted((str(k), str(v)) for k, v in dialect.items() if v)),
            mrope_section=mrope,
        )

    @property
    def languages(self) -> dict[str, int]:
        return dict(self.codec_language_id)

    @property
    def speakers(self) -> dict[str, int]:
        return dict(self.spk_id)

    @property
    def speaker_dialects(self) -> dict[str, str]:
        return dict(self.spk_is_dialect)


@dataclasses.dataclass(frozen=True)
class SpeakerEncoderConfig:
    """`Qwen3TTSSpeakerEncoderConfig`: ECAPA-TDNN x-vector extractor (Base models)."""

    mel_dim: int = 128
    enc_dim: int = 1024
    enc_channels: tuple[int, ...] = (512, 512, 512, 512, 1536)
    enc_kernel_sizes: tuple[int, ...] = (5, 3, 3, 3, 1)
    enc_dilations: tuple[int, ...] = (1, 2, 3, 4, 1)
    enc_attention_channels: int = 128
    enc_res2net_scale: int = 8
    enc_se_channels: int = 128
    sample_rate: int = 24000

    @staticmethod
    def parse(f: _Fields) -> SpeakerEncoderConfig:
        # The released JSON holds only enc_dim and sample_rate; the class defaults are the rest.
        d = SpeakerEncoderConfig()
        tup = lambda name: tuple(int(x) for x in f.get(name, list, list(getattr(d, name))))
        cfg = SpeakerEncoderConfig(
            mel_dim=f.positive("mel_dim", d.mel_dim),
            enc_dim=f.positive("enc_dim", d.enc_dim),
            enc_channels=tup("enc_channels"),
            enc_kernel_sizes=tup("enc_kernel_sizes"),
            enc_dilations=tup("enc_dilations"),
            enc_attention_channels=f.positive("enc_attention_channels", d.enc_attention_channels),
            enc_res2net_scale=f.positive("enc_res2net_scale", d.enc_res2net_scale),
            enc_se_channels=f.positive("enc_se_channels", d.enc_se_channels),
            sample_rate=f.positive("sample_rate", d.sample_rate),
        )
        if not (len(cfg.enc_channels) == len(cfg.enc_kernel_sizes) == len(cfg.enc_dilations)):
            raise ConfigError(
                f"{f.where('enc_channels')}: enc_channels, enc_kernel_sizes, enc_dilations differ in length"
            )
        if sum(cfg.enc_channels[1:-1]) != cfg.enc_channels[-1]:
            # The reference declares the MFA conv's input as enc_channels[-1] but feeds it the
            # concatenated SE-Res2Net outputs: such a config would load and then fail mid-forward.
            raise ConfigError(
                f"{f.where('enc_channels')}={list(cfg.enc_channels)}: the last entry must equal the sum of the "
                f"SE-Res2Net widths {sum(cfg.enc_channels[1:-1])}"
            )
        return cfg


@dataclasses.dataclass(frozen=True)
class Qwen3TTSConfig:
    """`Qwen3TTSConfig`: the top-level config.json of a Qwen3-TTS model folder."""

    talker: TalkerConfig
    speaker_encoder: SpeakerEncoderConfig | None  # present (and used) only for tts_model_type "base"
    tts_model_type: str
    tts_model_size: str
    tokenizer_type: str
    im_start_token_id: int = 151644
    im_end_token_id: int = 151645
    tts_pad_token_id: int = 151671
    tts_bos_token_id: int = 151672
    tts_eos_token_id: int = 151673

    @staticmethod
    def from_dict(data: Mapping[str, Any], source: str = "config.json") -> Qwen3TTSConfig:
        f = _Fields(data, source)
        model_type = f.get("model_type", str)
        if model_type != MODEL_TYPE:
            raise ConfigError(f"{f.where('model_type')}={model_type!r} is not {MODEL_TYPE!r}")
        tts_type = f.get("tts_model_type", str)
        if tts_type not in TTS_MODEL_TYPES:
            raise ConfigError(f"{f.where('tts_model_type')}={tts_type!r} is not one of {TTS_MODEL_TYPES}")
        tok_type = f.get("tokenizer_type", str)
        if tok_type not in TOKENIZER_TYPES:
            raise ConfigError(f"{f.where('tokenizer_type')}={tok_type!r} is not supported (only {TOKENIZER_TYPES})")
        talker = TalkerConfig.parse(f.sub("talker_config"))
        speaker = None
        if tts_type == "base":
            speaker = SpeakerEncoderConfig.parse(f.sub("speaker_encoder_config", {}))
            if speaker.enc_dim != talker.transformer.hidden_size:
                raise ConfigError(
                    f"{f.where('speaker_encoder_config.enc_dim')}={speaker.enc_dim} must equal "
                    f"talker_config.hidden_size={talker.transformer.hidden_size} (the x-vector fills a talker slot)"
                )
        return Qwen3TTSConfig(
            talker=talker,
            speaker_encoder=speaker,
            tts_model_type=tts_type,
            tts_model_size=f.get("tts_model_size", str),
            tokenizer_type=tok_type,
            im_start_token_id=f.token_id("im_start_token_id", 151644),
            im_end_token_id=f.token_id("im_end_token_id", 151645),
            tts_pad_token_id=f.token_id("tts_pad_token_id", 151671),
            tts_bos_token_id=f.token_id("tts_bos_token_id", 151672),
            tts_eos_token_id=f.token_id("tts_eos_token_id", 151673),
        )

    @staticmethod
    def from_model_dir(model_dir: str | Path) -> Qwen3TTSConfig:
        path = Path(model_dir) / "config.json"
        return Qwen3TTSConfig.from_dict(read_json(path), str(path))


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """`generation_config.json` (a plain dict in the reference, merged by
    `Qwen3TTSModel._merge_generate_kwargs`). Defaults are the wrapper's hard defaults, used only
    for keys the file does not hold."""

    do_sample: bool = True
    top_k: int = 50
    top_p: float = 1.0
    temperature: float = 0.9
    repetition_penalty: float = 1.05
    subtalker_dosample: bool = True
    subtalker_top_k: int = 50
    subtalker_top_p: float = 1.0
    subtalker_temperature: float = 0.9
    max_new_tokens: int = 2048

    @staticmethod
    def from_dict(data: Mapping[str, Any], source: str = "generation_config.json") -> GenerationConfig:
        f = _Fields(data, source)
        d = GenerationConfig()
        kinds = {
            "do_sample": bool,
            "subtalker_dosample": bool,
            "top_k": int,
            "subtalker_top_k": int,
            "max_new_tokens": int,
        }
        values = {
            field.name: f.get(field.name, kinds.get(field.name, float), getattr(d, field.name))
            for field in dataclasses.fields(GenerationConfig)
        }
        return GenerationConfig(**values)

    @staticmethod
    def from_model_dir(model_dir: str | Path) -> GenerationConfig:
        path = Path(model_dir) / "generation_config.json"
        return GenerationConfig.from_dict(read_json(path), str(path))
