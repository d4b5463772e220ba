"""Audio input handling (`qwen3tts_jax.audio`) against the reference wrappers' own input code
(`Qwen3TTSTokenizer.load_audio` / `_normalize_audio_inputs`, `Qwen3TTSModel._normalize_audio_inputs`)
and `librosa.resample` (default `soxr_hq`), plus the bad-input errors."""

from __future__ import annotations

import base64
import io
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import assert_close

from qwen3tts_jax.audio import check_waveform, load_audio, normalize_audios, resample

RATES = (8000, 16000, 22050, 44100, 48000)


def tone(n: int, sr: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A chirp plus noise, (n,) or (n, channels) like soundfile returns."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    mono = 0.4 * np.sin(2 * np.pi * (100 * t + 900 * t * t)) + 0.05 * rng.standard_normal(n)
    if channels == 1:
        return mono.astype(np.float32)
    return np.stack([mono * (1 - 0.3 * c) + 0.02 * c for c in range(channels)], -1).astype(np.float32)


def reference_tokenizer_wrapper(target_sr: int = 24000):
    """The reference `Qwen3TTSTokenizer` with only what its input code touches."""
    from qwen_tts.inference.qwen3_tts_tokenizer import Qwen3TTSTokenizer

    tok = Qwen3TTSTokenizer()
    tok.feature_extractor = types.SimpleNamespace(sampling_rate=target_sr)
    return tok


# --------------------------------------------------------------------------------------------
# Resampling and loading vs the reference's code paths
# --------------------------------------------------------------------------------------------


@pytest.mark.reference
@pytest.mark.parametrize("sr", RATES)
def test_resample_matches_librosa(sr):
    librosa = pytest.importorskip("librosa")
    for n in (1, 333, sr + 7):
        x = tone(n, sr)
        ours = resample(x, sr, 24000)
        ref = librosa.resample(x, orig_sr=sr, target_sr=24000)
        assert ours.dtype == np.float32 and ours.shape == ref.shape
        assert_close(ours, ref, 1e-5, f"resample {sr}->24000 n={n}")


@pytest.mark.reference
def test_numpy_inputs_match_reference_tokenizer():
    """Mono/stereo, float32/float64, single/list, resampled or not: the tokenizer's path."""
    tok = reference_tokenizer_wrapper()
    cases = [
        (tone(16000, 16000), 16000),
        (tone(12345, 44100, channels=2).astype(np.float64), 44100),
        ([tone(9000, 24000), tone(7000, 24000, channels=3, seed=1)], 24000),
        ([tone(5000, 16000), tone(6000, 16000, channels=2)], 16000),
    ]
    for audios, sr in cases:
        ref = tok._normalize_audio_inputs(audios, sr=sr)
        got = normalize_audios(audios, sr=sr)
        assert len(got) == len(ref)
        for g, r in zip(got, ref):
            assert g.dtype == np.float32 and g.shape == r.shape
            assert_close(g, r, 1e-5, f"numpy input sr={sr} shape={r.shape}")


@pytest.mark.reference
def test_files_and_base64_match_reference(tmp_path: Path):
    """Paths (mono and stereo wav, and a 16-bit file) read as `librosa.load(sr=None, mono=True)`;
    a base64 string and a data URL as soundfile reads them; then resampled to 24 kHz."""
    tok = reference_tokenizer_wrapper()
    files = []
    for name, data, sr, subtype in [
        ("mono.wav", tone(8000, 16000), 16000, "FLOAT"),
        ("stereo.wav", tone(9000, 44100, channels=2), 44100, "FLOAT"),
        ("pcm16.wav", tone(7000, 24000, channels=2), 24000, "PCM_16"),
    ]:
        path = tmp_path / name
        sf.write(path, data, sr, subtype=subtype)
        files.append(str(path))
        assert_close(normalize_audios(str(path))[0], tok.load_audio(str(path), 24000), 1e-5, f"file {name}")
        assert_close(normalize_audios(path)[0], tok.load_audio(str(path), 24000), 1e-5, f"PathLike {name}")
    ref = tok._normalize_audio_inputs(files, sr=None)
    for g, r in zip(normalize_audios(files), ref):
        assert_close(g, r, 1e-5, "list of paths")
    raw = Path(files[1]).read_bytes()
    b64 = base64.b64encode(raw).decode()
    assert "/" in b64  # the reference would take this raw string for a path; we decode it
    data_url = "data:audio/wav;base64," + b64
    assert_close(normalize_audios(data_url)[0], tok.load_audio(data_url, 24000), 1e-5, "base64 data URL")
    assert_close(normalize_audios(b64)[0], tok.load_audio(files[1], 24000), 1e-5, "raw base64")


@pytest.mark.reference
def test_tuples_match_reference_voice_clone_inputs():
    """`(array, sr)` tuples as `Qwen3TTSModel._normalize_audio_inputs` takes them, then resampled
    by `librosa.resample` as `create_voice_clone_prompt` does for the speaker encoder."""
    librosa = pytest.importorskip("librosa")
    from qwen_tts.inference.qwen3_tts_model import Qwen3TTSModel

    wrapper = Qwen3TTSModel.__new__(Qwen3TTSModel)  # its input code needs no model
    items = [(tone(10000, 16000), 16000), (tone(8000, 48000, seed=1), 48000)]
    ref = wrapper._normalize_audio_inputs(list(items))
    for (wav, sr), got in zip(ref, normalize_audios(items)):
        assert_close(got, librosa.resample(wav.astype(np.float32), orig_sr=sr, target_sr=24000), 1e-5, f"tuple sr={sr}")
    # The reference crashes on a multichannel tuple (it assigns into the tuple); we average the
    # channels after the float32 cast, which is what its code meant to do.
    stereo = tone(8000, 48000, channels=2)
    with pytest.raises(TypeError, match="does not support item assignment"):
        wrapper._normalize_audio_inputs([(stereo, 48000)])
    intended = np.mean(stereo.astype(np.float32), axis=-1).astype(np.float32)
    (got,) = normalize_audios((stereo, 48000))
    assert_close(got, librosa.resample(intended, orig_sr=48000, target_sr=24000), 1e-5, "stereo tuple")
    # a single tuple is one item, and its own rate wins over `sr=`
    (single,) = normalize_audios(items[0], sr=8000)
    assert_close(single, normalize_audios([items[0]])[0], 0.0, "single tuple")


def test_target_rate_and_identity():
    x = tone(4800, 24000)
    (same,) = normalize_audios(x, sr=24000)
    np.testing.assert_array_equal(same, x)
    (down,) = normalize_audios(x, sr=24000, target_sr=16000)
    assert down.shape == (3200,)


def test_integer_pcm_is_scaled():
    x = tone(1000, 24000)
    pcm = np.round(x * 32767).astype(np.int16)
    (got,) = normalize_audios(pcm, sr=24000)
    assert np.abs(got - pcm / 32768.0).max() < 1e-7 and np.abs(got).max() <= 1.0


# --------------------------------------------------------------------------------------------
# Bad input: clear errors naming the argument
# --------------------------------------------------------------------------------------------


def test_bad_inputs_name_the_argument(tmp_path: Path):
    good = tone(1000, 24000)
    with pytest.raises(ValueError, match=r"audios: audio is empty"):
        normalize_audios(np.zeros(0, np.float32), sr=24000)
    with pytest.raises(ValueError, match=r"audios\[1\]: audio contains 1 NaN/inf sample\(s\) \(first at index 5\)"):
        bad = good.copy()
        bad[5] = np.nan
        normalize_audios([good, bad], sr=24000)
    with pytest.raises(ValueError, match=r"audios\[0\]: audio contains 1 NaN/inf"):
        bad = good.copy()
        bad[0] = np.inf
        normalize_audios([(bad, 24000)])
    with pytest.raises(ValueError, match=r"audios: a numpy waveform needs its sampling rate"):
        normalize_audios(good)
    with pytest.raises(ValueError, match=r"audios: sampling rate must be a positive integer"):
        normalize_audios(good, sr=0)
    with pytest.raises(ValueError, match=r"sampling rate must be a positive integer, got 16000.5"):
        normalize_audios((good, 16000.5))
    with pytest.raises(FileNotFoundError, match=r"audios: audio file not found: '.*missing\.wav'"):
        normalize_audios(str(tmp_path / "missing.wav"))
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF....not really a wav file" * 10)
    with pytest.raises(ValueError, match=r"audios\[1\]: cannot decode audio from file '.*junk\.wav'"):
        normalize_audios([(good, 24000), str(junk)])
    with pytest.raises(ValueError, match=r"audios: cannot decode audio from base64 string"):
        normalize_audios(base64.b64encode(b"x" * 300).decode())
    with pytest.raises(ValueError, match=r"audios: 2-D audio must be \(samples, channels\)"):
        normalize_audios(np.stack([good, good]), sr=24000)  # (channels, samples)
    with pytest.raises(ValueError, match=r"expected a 1-D waveform or a 2-D"):
        normalize_audios(np.zeros((10, 2, 2)), sr=24000)
    with pytest.raises(ValueError, match=r"audios: no audio given"):
        normalize_audios([])
    with pytest.raises(TypeError, match=r"a list of numbers is ambiguous"):
        normalize_audios([0.1, 0.2, 0.3], sr=24000)
    with pytest.raises(TypeError, match=r"audios\[0\]: audio is None"):
        normalize_audios([None])
    with pytest.raises(TypeError, match=r"ref_audio: expected a float waveform"):
        normalize_audios(np.array(["a", "b"]), sr=24000, name="ref_audio")


def test_check_waveform_and_load_audio_helpers(tmp_path: Path):
    check_waveform(np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"x: audio is empty"):
        check_waveform(np.ones(0), "x")
    path = tmp_path / "a.flac"
    sf.write(path, tone(2000, 16000, channels=2), 16000)
    wav, sr = load_audio(path, "ref_audio")
    assert sr == 16000 and wav.shape == (2000,) and wav.dtype == np.float32
    buf = io.BytesIO()
    sf.write(buf, tone(100, 8000), 8000, format="WAV")
    assert load_audio("data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode())[1] == 8000
