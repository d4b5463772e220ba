"""The speaker encoder's log-mel front end.

Mirrors `mel_spectrogram` in `qwen_tts/core/models/modeling_qwen3_tts.py` as called by
`Qwen3TTSForConditionalGeneration.extract_speaker_embedding` (architecture notes §5, trap 21):

1. reflect-pad `(n_fft - hop) / 2` samples on each side (torch/numpy "reflect": edge not repeated);
2. STFT with `center=False`, a periodic Hann window, one-sided;
3. magnitude `sqrt(re² + im² + 1e-9)` (the 1e-9 keeps silent bins at ≈3.2e-5, not 0);
4. `librosa.filters.mel` (slaney scale, slaney norm, htk=False) applied as `mel @ mag`;
5. `ln(clamp(mel, 1e-5))`.

The filterbank is rebuilt here in numpy (no librosa at run time) following librosa 0.11's
algorithm step for step, including its float32 accumulation, so it matches bit-for-bit or to
float32 rounding. Everything runs in fp32 regardless of the model's dtype policy: the reference
computes its mel in the input's dtype (fp32) and casts only the result to the model dtype.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import no_type_check

import jax
import jax.numpy as jnp
import numpy as np

from qwen3tts_jax.typing import Array, Float

# The reference's clamp before the log, and the epsilon inside its magnitude's sqrt.
LOG_CLAMP = 1e-5
MAGNITUDE_EPS = 1e-9


@dataclasses.dataclass(frozen=True)
class MelSpec:
    """STFT and filterbank settings (hashable: usable as a jit static argument)."""

    sample_rate: int = 24000
    n_fft: int = 1024
    hop: int = 256
    win: int = 1024
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = 12000.0

    @property
    def pad(self) -> int:
        """Reflect padding on each side: with `center=False` this makes frames = n // hop."""
        return (self.n_fft - self.hop) // 2

    def num_frames(self, n: int) -> int:
        return (n + 2 * self.pad - self.n_fft) // self.hop + 1

    def min_samples(self) -> int:
        """Shortest input the reference accepts: reflect padding needs `n > pad` (torch raises otherwise)."""
        return self.pad + 1


# The constants `extract_speaker_embedding` passes to `mel_spectrogram` (24 kHz, 128 bins).
SPEAKER_MEL = MelSpec()


# --------------------------------------------------------------------------------------------
# Slaney mel filterbank (numpy, build time)
# --------------------------------------------------------------------------------------------


_F_SP = 200.0 / 3  # Hz per mel in the linear region of the slaney scale
_MIN_LOG_HZ = 1000.0  # where the slaney scale turns logarithmic
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_slaney_mel(hz: float | np.ndarray) -> np.ndarray:
    """`librosa.hz_to_mel(htk=False)`: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_region = hz >= _MIN_LOG_HZ
    return np.where(log_region, _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP, mel)


def slaney_mel_to_hz(mel: float | np.ndarray) -> np.ndarray:
    """`librosa.mel_to_hz(htk=False)`, the inverse of `hz_to_slaney_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    hz = _F_SP * mel
    return np.where(mel >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), hz)


@functools.lru_cache(maxsize=8)
def _slaney_filterbank_cached(sr: float, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    fft_hz = np.fft.rfftfreq(n_fft, d=1.0 / sr)  # (f,)
    # n_mels + 2 band edges, uniformly spaced on the mel axis
    edges_hz = slaney_mel_to_hz(np.linspace(hz_to_slaney_mel(fmin), hz_to_slaney_mel(fmax), n_mels + 2))
    widths = np.diff(edges_hz)  # (m + 2 - 1,)
    ramps = edges_hz[:, None] - fft_hz[None, :]  # (m + 2, f)
    lower = -ramps[:n_mels] / widths[:n_mels, None]
    upper = ramps[2:] / widths[1:, None]
    # librosa writes the triangles into a float32 array and normalises in place, in float32;
    # doing the same keeps the result bit-identical rather than merely close.
    weights = np.maximum(0.0, np.minimum(lower, upper)).astype(np.float32)
    enorm = 2.0 / (edges_hz[2:] - edges_hz[:n_mels])  # slaney norm: constant energy per band
    weights *= enorm[:, None]  # float64 operand cast into the float32 array, as librosa does
    weights.setflags(write=False)
    return weights


def slaney_mel_filterbank(
    sr: float, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """`librosa.filters.mel(sr=…, n_fft=…, n_mels=…, fmin=…, fmax=…)` (htk=False, norm="slaney").

    Returns a read-only float32 `(n_mels, 1 + n_fft // 2)` matrix.
    """
    fmax = float(sr) / 2 if fmax is None else float(fmax)
    return _slaney_filterbank_cached(float(sr), int(n_fft), int(n_mels), float(fmin), fmax)


def periodic_hann(win: int, n_fft: int) -> np.ndarray:
    """`torch.hann_window(win)` (periodic), zero-padded to n_fft centred, as torch.stft does."""
    k = np.arange(win, dtype=np.float64)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * k / win)
    left = (n_fft - win) // 2
    return np.pad(window, (left, n_fft - win - left)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# The transform (jit-able)
# --------------------------------------------------------------------------------------------


def frame_signal(y: Float[Array, "b n"], n_fft: int, hop: int) -> Float[Array, "b t w"]:
    """Overlapping frames of `n_fft` samples every `hop` (torch.stft with center=False)."""
    frames = (y.shape[-1] - n_fft) // hop + 1
    idx = np.arange(frames)[:, None] * hop + np.arange(n_fft)[None, :]  # (t, w), static
    return y[:, idx]


def stft_magnitude(y: Float[Array, "b n"], spec: MelSpec) -> Float[Array, "b t f"]:
    """`sqrt(|STFT(y)|² + 1e-9)` with the periodic Hann window, center=False, one-sided."""
    frames = frame_signal(y, spec.n_fft, spec.hop) * jnp.asarray(periodic_hann(spec.win, spec.n_fft))
    z = jnp.fft.rfft(frames, n=spec.n_fft, axis=-1)  # (b, t, f) complex64
    return jnp.sqrt(jnp.real(z) ** 2 + jnp.imag(z) ** 2 + MAGNITUDE_EPS)


@no_type_check  # checks its argument's rank (the error names it): left out of the test run's shape checks
def log_mel_spectrogram(wav: Float[Array, "b n"], spec: MelSpec = SPEAKER_MEL) -> Float[Array, "b t m"]:
    """The reference `mel_spectrogram(...)` transposed to `(b, frames, n_mels)`; frames = n // hop.

    fp32 throughout (the input is cast). Raises ValueError when the input is too short for the
    reflect padding (a static shape check, so it also fires at trace time).
    """
    if wav.ndim != 2:
        raise ValueError(f"log_mel_spectrogram: wav must be (batch, samples), got shape {tuple(wav.shape)}")
    n = wav.shape[-1]
    if n < spec.min_samples():
        raise ValueError(
            f"log_mel_spectrogram: wav has {n} samples; reflect padding by {spec.pad} needs at least "
            f"{spec.min_samples()}"
        )
    y = jnp.pad(wav.astype(jnp.float32), ((0, 0), (spec.pad, spec.pad)), mode="reflect")  # (b, n + 2·pad)
    mag = stft_magnitude(y, spec)  # (b, t, f)
    basis = jnp.asarray(
        slaney_mel_filterbank(spec.sample_rate, spec.n_fft, spec.n_mels, spec.fmin, spec.fmax)
    )  # (m, f)
    # HIGHEST: on GPU/TPU the default fp32 matmul precision (TF32/bf16 passes) would cost ~1e-3 here.
    mel = jnp.einsum("mf,btf->btm", basis, mag, precision=jax.lax.Precision.HIGHEST)
    return jnp.log(jnp.maximum(mel, LOG_CLAMP))
