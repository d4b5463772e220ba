"""The speaker encoder's log-mel front end against librosa and the reference `mel_spectrogram`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

from qwen3tts_jax.mel import SPEAKER_MEL, MelSpec, log_mel_spectrogram, periodic_hann, slaney_mel_filterbank


def test_signal(n: int, seed: int = 0) -> np.ndarray:
    """Non-stationary: a 100 Hz → 8 kHz chirp, white noise, a loud burst and a silent gap (the
    gap exercises the 1e-9 magnitude floor and the 1e-5 log clamp)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 24000.0
    f0, f1, dur = 100.0, 8000.0, max(n / 24000.0, 1e-3)
    x = 0.5 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) / (2 * dur) * t**2)) + 0.05 * rng.standard_normal(n)
    x[n // 5 : n // 4] *= 1.8  # burst, slightly past full scale
    x[n // 3 : n // 2] = 0.0  # silence
    return x.astype(np.float32)


test_signal.__test__ = False  # a helper, not a test


def reference_log_mel(x: np.ndarray) -> np.ndarray:
    """`mel_spectrogram` with the constants `extract_speaker_embedding` uses, as (1, frames, 128)."""
    import torch
    from qwen_tts.core.models.modeling_qwen3_tts import mel_spectrogram

    mel = mel_spectrogram(
        torch.from_numpy(x)[None],
        n_fft=1024,
        num_mels=128,
        sampling_rate=24000,
        hop_size=256,
        win_size=1024,
        fmin=0,
        fmax=12000,
    )
    return mel.transpose(1, 2).numpy()


@pytest.mark.reference
@pytest.mark.parametrize(
    "sr,n_fft,n_mels,fmin,fmax",
    [(24000, 1024, 128, 0, 12000), (22050, 2048, 80, 0, None), (16000, 512, 40, 20.0, 7600.0)],
)
def test_slaney_filterbank_matches_librosa(sr, n_fft, n_mels, fmin, fmax):
    import librosa

    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    ours = slaney_mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    assert_close(ours, ref, 1e-6, f"slaney filterbank sr={sr} n_fft={n_fft} n_mels={n_mels}")


@pytest.mark.reference
def test_periodic_hann_matches_torch():
    import torch

    # torch builds the window in float32, we in float64 then round: a few ulps apart
    assert_close(periodic_hann(1024, 1024), torch.hann_window(1024).numpy(), 1e-6, "periodic hann window")


@pytest.mark.reference
@pytest.mark.parametrize("n", [385, 1000, 1280, 24001, 2 * 24000 + 77])
def test_log_mel_matches_reference(n, torch_threads):
    x = test_signal(n)
    ref = reference_log_mel(x)
    ours = np.asarray(jax.jit(log_mel_spectrogram)(jnp.asarray(x)[None]))
    assert ours.shape == ref.shape == (1, n // 256, 128)
    # Both sides do an fp32 FFT with different algorithms (pocketfft vs XLA's ducc); the log-mel
    # error observed is ≤ 2e-5, well inside the module tolerance.
    assert_close(ours, ref, 1e-4, f"log-mel n={n}")


def test_log_mel_batch_and_eager_agree_with_jit():
    x = np.stack([test_signal(3000, seed=1), test_signal(3000, seed=2)])
    eager = np.asarray(log_mel_spectrogram(jnp.asarray(x)))
    jitted = np.asarray(jax.jit(log_mel_spectrogram)(jnp.asarray(x)))
    single = np.asarray(log_mel_spectrogram(jnp.asarray(x[1:])))
    assert eager.shape == (2, 3000 // 256, 128)
    assert_close(jitted, eager, 1e-5, "log-mel jit vs eager")
    assert_close(single[0], eager[1], 1e-5, "log-mel batch row vs single")


def test_silence_hits_the_clamp():
    out = np.asarray(log_mel_spectrogram(jnp.zeros((1, 2048))))
    # silent bins have magnitude sqrt(1e-9); every band sums to < 1e-5, so the clamp decides
    np.testing.assert_allclose(out, np.log(1e-5), rtol=0, atol=1e-6)


@pytest.mark.parametrize("n", [0, 1, 384])
def test_too_short_raises(n):
    with pytest.raises(ValueError, match=f"{n} samples"):
        log_mel_spectrogram(jnp.zeros((1, n)))


def test_wrong_rank_raises():
    with pytest.raises(ValueError, match=r"shape \(1000,\)"):
        log_mel_spectrogram(jnp.zeros((1000,)))


def test_frames_formula():
    for n in [385, 511, 512, 24000, 24001]:
        assert SPEAKER_MEL.num_frames(n) == n // 256
    assert MelSpec(n_fft=512, hop=128, win=512).pad == 192
