"""The public speech tokenizer wrapper: audio ⇄ 12.5 Hz codes (16 per frame).

Mirrors `qwen_tts.inference.qwen3_tts_tokenizer.Qwen3TTSTokenizer` (12 Hz model only: no public
model uses the 25 Hz one) with the same method names and return shapes:

* `Qwen3TTSTokenizer.from_pretrained(dir, dtype=None)`: reads `config.json`,
  `preprocessor_config.json` (the `EncodecFeatureExtractor` settings) and `model.safetensors`.
* `encode(audios, sr=None)` → an object with `.audio_codes`: one int64 array `(T_i, 16)` per
  item, `T_i = ceil(samples_i / 1920)` after resampling to 24 kHz. Inputs as `qwen3tts_jax.audio`
  takes them (paths, base64, arrays with `sr`, `(array, sr)` tuples, lists of these).
* `decode(encoded)` → `(list of float32 waveforms, 24000)`; `encoded` is an `encode` output, a
  dict `{"audio_codes": ...}`, a list of such dicts, a list of code arrays, or one array
  `(T, 16)` / a `-1`-padded batch `(B, T, 16)`. Each item is decoded to its own length with the
  reference's 300-frame chunking (`codec.decoder.decode`: rows of a `CodecSlots`, batched where
  they share a piece size), equal to the reference's padded batch decode.

Batch semantics are the reference's: `encode` pads a batch to its longest item and encodes it as
one padded batch (see `codec/encoder.py` for the consequence on a shorter item's last frame).
Inputs are checked before anything is traced: empty / NaN / rate-less audio, codes outside
`[0, codebook_size)` (except trailing all-`-1` padding frames), wrong number of codebooks, each
raise a `ValueError` naming the argument and item.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from qwen3tts_jax.audio import normalize_audios
from qwen3tts_jax.codec import decoder as codec_decoder
from qwen3tts_jax.codec import encoder as codec_encoder
from qwen3tts_jax.codec.config import CONFIG_FILE, MODEL_TYPE, ConfigError, Qwen3TTSTokenizerV2Config
from qwen3tts_jax.codec.weights import load_codec_params
from qwen3tts_jax.config import Policy, as_dtype, read_json
from qwen3tts_jax.hub import resolve_folder

__all__ = ["Qwen3TTSTokenizer", "Qwen3TTSTokenizerV2EncoderOutput"]

PREPROCESSOR_FILE = "preprocessor_config.json"
# `from_pretrained` kwargs that only mean something to the torch loader; accepted and ignored.
_TORCH_ONLY_KWARGS = frozenset(
    {"device_map", "attn_implementation", "low_cpu_mem_usage", "trust_remote_code", "torch_dtype"}
)


@dataclasses.dataclass
class Qwen3TTSTokenizerV2EncoderOutput:
    """`Qwen3TTSTokenizerV2EncoderOutput`: `audio_codes`, a list of int64 `(T_i, 16)` arrays.
    Like a transformers `ModelOutput`, also indexable by `0` or `"audio_codes"`."""

    audio_codes: list[np.ndarray]

    def __getitem__(self, key):
        if key in (0, "audio_codes"):
            return self.audio_codes
        raise KeyError(key)

    def to_tuple(self) -> tuple[list[np.ndarray]]:
        return (self.audio_codes,)


def _resolve_dir(path: str | os.PathLike) -> Path:
    """A local speech_tokenizer folder, a model folder holding `speech_tokenizer/`, or a HF repo id."""
    p = resolve_folder(path)
    if not (p / CONFIG_FILE).is_file() and (p / "speech_tokenizer" / CONFIG_FILE).is_file():
        return p / "speech_tokenizer"
    return p


def _read_preprocessor(folder: Path, cfg: Qwen3TTSTokenizerV2Config) -> int:
    """The feature extractor's sampling rate (what `encode` resamples to); checks that it is a
    mono, zero-padded `EncodecFeatureExtractor` as released. Absent file → the config's rate."""
    path = folder / PREPROCESSOR_FILE
    if not path.is_file():
        return cfg.input_sample_rate
    data = read_json(path)
    sr = data.get("sampling_rate", cfg.input_sample_rate)
    if isinstance(sr, bool) or not isinstance(sr, int) or sr <= 0:
        raise ConfigError(f"{path}: sampling_rate must be a positive integer, got {sr!r}")
    if data.get("feature_size", 1) != 1:
        raise ConfigError(f"{path}: feature_size={data.get('feature_size')!r} is not supported (mono only: 1)")
    if float(data.get("padding_value", 0.0)) != 0.0 or data.get("padding_side", "right") != "right":
        raise ConfigError(
            f"{path}: only right padding with 0.0 is supported, got "
            f"padding_side={data.get('padding_side')!r}, padding_value={data.get('padding_value')!r}"
        )
    if data.get("chunk_length_s") is not None:
        raise ConfigError(f"{path}: chunk_length_s={data['chunk_length_s']!r} is not supported (released: null)")
    return sr


def _code_items(encoded: Any) -> tuple[list[Any], list[str]]:
    """The per-item code arrays of any accepted `decode` input, and their names for errors."""
    if hasattr(encoded, "audio_codes"):
        items, name = encoded.audio_codes, "encoded.audio_codes"
    elif isinstance(encoded, dict):
        if "audio_codes" not in encoded:
            raise ValueError(f"encoded: dict has no 'audio_codes' key (keys: {sorted(map(str, encoded))})")
        items, name = encoded["audio_codes"], "encoded['audio_codes']"
    elif isinstance(encoded, (list, tuple)):
        if not encoded:
            raise ValueError("encoded: empty list, nothing to decode")
        if all(isinstance(e, dict) for e in encoded):
            for i, e in enumerate(encoded):
                if "audio_codes" not in e:
                    raise ValueError(f"encoded[{i}]: dict has no 'audio_codes' key")
            return [e["audio_codes"] for e in encoded], [f"encoded[{i}]['audio_codes']" for i in range(len(encoded))]
        if any(isinstance(e, dict) for e in encoded):
            raise TypeError("encoded: mixes dicts and arrays; pass a list of dicts or a list of code arrays")
        items, name = encoded, "encoded"
    elif hasattr(encoded, "shape") or hasattr(encoded, "__array__"):
        items, name = encoded, "encoded"
    else:
        raise TypeError(
            f"encoded: expected an encode() output, a dict or list of dicts with 'audio_codes', or code arrays; "
            f"got {type(encoded).__name__}"
        )
    if isinstance(items, (list, tuple)):
        if not items:
            raise ValueError(f"{name}: empty list, nothing to decode")
        return list(items), [f"{name}[{i}]" for i in range(len(items))]
    arr = _to_numpy(items, name)
    if arr.ndim == 2:  # one item (T, Q)
        return [arr], [name]
    if arr.ndim == 3:  # a -1-padded batch (B, T, Q)
        return list(arr), [f"{name}[{i}]" for i in range(arr.shape[0])]
    raise ValueError(
        f"{name}: expected codes of shape (frames, codebooks) or (batch, frames, codebooks), got {arr.shape}"
    )


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor (possibly on a device)
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as err:
        raise TypeError(f"{name}: cannot convert {type(x).__name__} to an array: {err}") from err


def _check_codes(x: Any, name: str, num_codebooks: int, codebook_size: int) -> np.ndarray:
    """One item's codes → int64 `(T, Q)` with trailing all-(-1) padding frames removed."""
    a = _to_numpy(x, name)
    if a.ndim != 2 or a.shape[1] != num_codebooks:
        raise ValueError(f"{name}: expected codes of shape (frames, {num_codebooks}), got shape {a.shape}")
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{name}: codes must be integers, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise ValueError(f"{name}: codes must be integers, got non-integral float values")
    a = a.astype(np.int64)
    pad = np.all(a == -1, axis=1)
    n = a.shape[0]
    while n > 0 and pad[n - 1]:
        n -= 1
    a = a[:n]
    bad = (a < 0) | (a >= codebook_size)
    if bad.any():
        t, q = map(int, np.argwhere(bad)[0])
        what = "a -1 padding frame before real frames" if pad[t] else f"code {int(a[t, q])}"
        raise ValueError(
            f"{name}: {what} at frame {t}, codebook {q}; codes must be in [0, {codebook_size - 1}] "
            f"(-1 only as whole trailing padding frames)"
        )
    return a


class Qwen3TTSTokenizer:
    """`Qwen3TTSTokenizer` for the 12 Hz tokenizer: `from_pretrained`, `encode`, `decode` and the
    rate getters, over jitted JAX encoder/decoder functions and a param pytree."""

    def __init__(
        self,
        config: Qwen3TTSTokenizerV2Config,
        params: dict,
        policy: Policy = Policy(),
        input_sampling_rate: int | None = None,
        path: str | None = None,
    ):
        self.config = config
        self.params = params  # {"encoder": ..., "decoder": ...}
        self.policy = policy
        self.path = path
        # The feature extractor's rate: what `encode` resamples to (24000 as released).
        self.feature_sampling_rate = int(input_sampling_rate or config.input_sample_rate)
        self._prepared: tuple[dict, dict] | None = None  # (decoder params, their laid-out copy)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, dtype: Any = None, policy: Policy | None = None, **kwargs
    ) -> Qwen3TTSTokenizer:
        """Load a `speech_tokenizer/` folder (or a model folder containing one, or a HF repo id).

        `dtype` is the compute and weight dtype (None → float32, the reference's default; the
        RVQ codebooks stay float32 whatever it is). `policy` replaces the backend's (see
        `Qwen3TTSModel.from_pretrained`). Torch-only loader kwargs (`device_map`,
        `attn_implementation`, ...) are accepted and ignored; anything else is an error.
        """
        unknown = sorted(set(kwargs) - _TORCH_ONLY_KWARGS)
        if unknown:
            raise TypeError(f"Qwen3TTSTokenizer.from_pretrained: unexpected keyword argument(s) {unknown}")
        if dtype is None and kwargs.get("torch_dtype") is not None:
            dtype = kwargs["torch_dtype"]
        policy = Policy.resolve(policy, dtype, "Qwen3TTSTokenizer.from_pretrained")
        folder = _resolve_dir(pretrained_model_name_or_path)
        cfg = Qwen3TTSTokenizerV2Config.from_model_dir(folder)
        params = load_codec_params(folder, dtype=as_dtype(policy.param_dtype), cfg=cfg)
        return cls(cfg, params, policy, _read_preprocessor(folder, cfg), str(folder))

    # ---------------------------------------------------------------------------------------- #

    def encode(self, audios: Any, sr: int | None = None, return_dict: bool = True):
        """Audio → codes: `.audio_codes` is a list of int64 `(ceil(samples/1920), 16)` arrays.

        `audios`: a path / URL / base64 string, a waveform array (needs `sr`), an `(array, sr)`
        tuple, or a list of these. Multichannel audio is averaged to mono; everything is
        resampled to 24 kHz (soxr HQ, as `librosa.resample`).
        """
        wavs = normalize_audios(audios, sr=sr, target_sr=self.feature_sampling_rate, name="audios")
        lengths = np.array([len(w) for w in wavs], np.int32)
        frame = self.config.encoder.frame_size
        buffer = codec_encoder.bucket_samples(int(lengths.max()), frame)
        batch = np.zeros((len(wavs), buffer), np.float32)
        for i, w in enumerate(wavs):
            batch[i, : len(w)] = w
        codes = np.asarray(
            codec_encoder.encode(
                self.params["encoder"],
                self.config,
                jnp.asarray(batch),
                jnp.asarray(lengths),
                self.policy.dtype,
                self.policy.matmul,
            )
        )
        n_frames = -(-lengths // frame)
        out = [codes[i, : int(n)].astype(np.int64) for i, n in enumerate(n_frames)]
        result = Qwen3TTSTokenizerV2EncoderOutput(out)
        return result if return_dict else result.to_tuple()

    def decode(self, encoded: Any) -> tuple[list[np.ndarray], int]:
        """Codes → `(list of float32 mono waveforms, output sample rate)`, `frames × 1920`
        samples each, decoded with the reference's 300-frame chunking (25 frames of left
        context); the laid-out decoder params are computed on the first call and kept."""
        dec = self.config.decoder
        items, names = _code_items(encoded)
        codes = [_check_codes(x, n, dec.num_quantizers, dec.codebook_size) for x, n in zip(items, names)]
        t = max(c.shape[0] for c in codes)
        batch = np.full((len(codes), t, dec.num_quantizers), -1, np.int64)
        for i, c in enumerate(codes):
            batch[i, : c.shape[0]] = c
        if t == 0:
            return [np.zeros(0, np.float32) for _ in codes], self.get_output_sample_rate()
        wavs = codec_decoder.decode(self.prepared_decoder_params(), batch, dec, self.policy, prepared=True)
        return [np.asarray(w, dtype=np.float32) for w in wavs], self.get_output_sample_rate()

    def prepared_decoder_params(self) -> dict:
        """The decoder params with their conv kernels laid out for the streaming step
        (`codec.decoder.prepare_params`), computed once and kept until `params` is replaced;
        what `CodecSlots(..., prepared=True)` takes, so decoders of one model can share them."""
        raw = self.params["decoder"]
        if self._prepared is None or self._prepared[0] is not raw:
            self._prepared = (raw, codec_decoder.prepare_params(raw, self.config.decoder))
        return self._prepared[1]

    # ---------------------------------------------------------------------------------------- #

    def get_model_type(self) -> str:
        return MODEL_TYPE

    def get_input_sample_rate(self) -> int:
        return int(self.config.input_sample_rate)

    def get_output_sample_rate(self) -> int:
        return int(self.config.output_sample_rate)

    def get_encode_downsample_rate(self) -> int:
        return int(self.config.encode_downsample_rate)

    def get_decode_upsample_rate(self) -> int:
        return int(self.config.decode_upsample_rate)

    def __repr__(self) -> str:
        return (
            f"Qwen3TTSTokenizer(path={self.path!r}, dtype={jnp.dtype(self.policy.dtype).name}, "
            f"codebooks={self.config.decoder.num_quantizers}x{self.config.decoder.codebook_size})"
        )
