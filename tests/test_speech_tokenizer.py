"""The public `Qwen3TTSTokenizer` (`qwen3tts_jax.speech_tokenizer`) against the reference's public
`qwen_tts.Qwen3TTSTokenizer`, both loaded from the same saved tiny tokenizer folder, fp32.

Same tiny model as tests/test_codec_encoder.py (released encoder strides, 1920 samples per code
frame; the decoder is shrunk to 64 samples per frame, which only shortens waveforms). Codes must
be identical, with the nearest-vs-second distance margins asserted as there; decoded waveforms
within the 1e-3 waveform tolerance.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import assert_close
from test_codec_encoder import (
    SEED,
    assert_margins,
    code_margins,
    our_stages,
    reference_stages,
    test_signal,
    tiny_cfg_dict,
)

from qwen3tts_jax.speech_tokenizer import Qwen3TTSTokenizer

SR_IN = 16000


@pytest.fixture(scope="module")
def folder(tmp_path_factory, torch_threads) -> Path:
    from tests.reference.codec_models import build_reference_tokenizer, save_reference_tokenizer

    model = build_reference_tokenizer(tiny_cfg_dict(), seed=SEED)
    return save_reference_tokenizer(model, tmp_path_factory.mktemp("speech-tokenizer"))


@pytest.fixture(scope="module")
def ours(folder) -> Qwen3TTSTokenizer:
    return Qwen3TTSTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def reference(folder):
    from qwen_tts import Qwen3TTSTokenizer as Reference

    return Reference.from_pretrained(str(folder))


def clips_16k() -> list[np.ndarray]:
    """Two 16 kHz clips whose 24 kHz lengths are not multiples of 1920 (11 401 → 17 102 samples,
    20 000 → 30 000)."""
    return [test_signal(11401, seed=4), test_signal(20000, seed=5)]


def assert_code_margins(
    ours: Qwen3TTSTokenizer, reference, wavs_24k: list[np.ndarray], codes: list[np.ndarray], what: str
):
    """Margins of the batch computation: each item as the reference sees it, padded to the longest."""
    n = max(len(w) for w in wavs_24k)
    for i, (w, c) in enumerate(zip(wavs_24k, codes)):
        padded = np.zeros(n, np.float32)
        padded[: len(w)] = w
        stages = our_stages(ours.params["encoder"], ours.config, w, n)
        assert_margins(
            *code_margins(stages, reference_stages(reference.model, padded), ours.params["encoder"], ours.config, c),
            f"{what} item {i}",
        )


# --------------------------------------------------------------------------------------------
# encode / decode vs the reference public API
# --------------------------------------------------------------------------------------------


@pytest.mark.reference
@pytest.mark.slow
def test_encode_16khz_matches_reference(ours, reference):
    """Numpy input at 16 kHz: resampled to 24 kHz as the reference (librosa soxr_hq), then a
    batch of two different lengths, then one item alone."""
    from qwen3tts_jax.audio import normalize_audios

    clips = clips_16k()
    ref = reference.encode(clips, sr=SR_IN)
    got = ours.encode(clips, sr=SR_IN)
    assert len(got.audio_codes) == 2
    for i, (g, r) in enumerate(zip(got.audio_codes, ref.audio_codes)):
        n_24k = -(-len(clips[i]) * 3 // 2)  # ceil(n * 24000 / 16000)
        assert g.dtype == np.int64 and g.shape == tuple(r.shape) == (-(-n_24k // 1920), 16)
        np.testing.assert_array_equal(g, r.numpy(), err_msg=f"batch item {i}")
    assert_code_margins(ours, reference, normalize_audios(clips, sr=SR_IN), got.audio_codes, "16 kHz batch")
    (alone,) = ours.encode(clips[0], sr=SR_IN).audio_codes
    np.testing.assert_array_equal(alone, reference.encode(clips[0], sr=SR_IN).audio_codes[0].numpy())
    assert_code_margins(ours, reference, normalize_audios(clips[0], sr=SR_IN), [alone], "16 kHz single")


@pytest.mark.reference
def test_encode_from_file_matches_reference(ours, reference, tmp_path):
    """A stereo 16 kHz wav file path (librosa.load mono=True, then resample)."""
    left = test_signal(15000, seed=6)
    stereo = np.stack([left, 0.5 * left[::-1]], -1)
    path = tmp_path / "stereo16k.wav"
    sf.write(path, stereo, SR_IN, subtype="FLOAT")
    (got,) = ours.encode(str(path)).audio_codes
    (ref,) = reference.encode(str(path)).audio_codes
    np.testing.assert_array_equal(got, ref.numpy())
    from qwen3tts_jax.audio import normalize_audios

    assert_code_margins(ours, reference, normalize_audios(str(path)), [got], "stereo file")


@pytest.mark.reference
@pytest.mark.slow
def test_decode_matches_reference(ours, reference):
    """The reference's own codes (an encode output with items of different lengths), decoded by
    both public APIs, in every accepted input form."""
    import torch

    enc = reference.encode(clips_16k(), sr=SR_IN)
    ref_wavs, ref_sr = reference.decode(enc)
    codes = [c.numpy() for c in enc.audio_codes]
    wavs, sr = ours.decode(ours.encode(clips_16k(), sr=SR_IN))
    assert sr == ref_sr == 24000 and len(wavs) == len(ref_wavs) == 2
    for i, (w, r) in enumerate(zip(wavs, ref_wavs)):
        assert w.dtype == np.float32 and w.shape == r.shape == (codes[i].shape[0] * ours.get_decode_upsample_rate(),)
        assert_close(w, r, 1e-3, f"public decode item {i}")
    padded = np.full((2, max(len(c) for c in codes), 16), -1, np.int64)
    for i, c in enumerate(codes):
        padded[i, : len(c)] = c
    forms = {
        "dict": {"audio_codes": codes},
        "list of dicts": [{"audio_codes": c} for c in codes],
        "list of arrays": codes,
        "list of torch tensors": list(enc.audio_codes),
        "-1 padded batch array": padded,
    }
    for name, form in forms.items():
        got, _ = ours.decode(form)
        for w, r in zip(got, wavs):
            assert_close(w, r, 0.0, f"decode({name})")
    (single,), _ = ours.decode(codes[1])
    # batch 1 vs 2 compiles a different XLA program (other conv tiling / summation order): float
    # noise only, so the single-op tolerance
    assert_close(single, wavs[1], 1e-5, "decode(one (T, 16) array) vs in a batch")
    ref_single, _ = reference.decode({"audio_codes": torch.from_numpy(codes[1])})
    assert_close(single, ref_single[0], 1e-3, "public decode of a single item")


def test_getters_and_encode_output(ours):
    assert ours.get_model_type() == "qwen3_tts_tokenizer_12hz"
    assert (ours.get_input_sample_rate(), ours.get_output_sample_rate()) == (24000, 24000)
    assert (ours.get_encode_downsample_rate(), ours.get_decode_upsample_rate()) == (1920, 64)
    enc = ours.encode([test_signal(1920), test_signal(1921)], sr=24000)
    assert [c.shape for c in enc.audio_codes] == [(1, 16), (2, 16)]
    assert enc["audio_codes"] is enc[0] is enc.audio_codes
    (codes,) = ours.encode((test_signal(3000), 24000), return_dict=False)
    assert codes[0].shape == (2, 16)


def test_from_pretrained_forms_and_dtype(folder, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(folder, model_dir / "speech_tokenizer")
    tok = Qwen3TTSTokenizer.from_pretrained(model_dir, device_map="cpu", attn_implementation="eager")
    assert tok.config.encoder.frame_size == 1920
    bf16 = Qwen3TTSTokenizer.from_pretrained(folder, dtype="bfloat16")
    leaves = bf16.params["encoder"]["encoder"]["layers_0"]["conv"]["weight"]
    book = bf16.params["encoder"]["quantizer"]["acoustic_residual_vector_quantizer"]["layers_0"]["codebook"][
        "embed_sum"
    ]
    assert str(leaves.dtype) == "bfloat16" and str(book.dtype) == "float32"  # codebooks stay fp32


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_bad_codes_name_the_argument(ours):
    good = np.zeros((3, 16), np.int64)
    with pytest.raises(
        ValueError, match=r"encoded\[1\]: code 2048 at frame 2, codebook 5; codes must be in \[0, 2047\]"
    ):
        bad = good.copy()
        bad[2, 5] = 2048
        ours.decode([good, bad])
    with pytest.raises(ValueError, match=r"encoded\['audio_codes'\]\[0\]: code -3 at frame 0, codebook 0"):
        bad = good.copy()
        bad[0, 0] = -3
        ours.decode({"audio_codes": [bad]})
    with pytest.raises(
        ValueError, match=r"encoded\[0\]\['audio_codes'\]: a -1 padding frame before real frames at frame 1"
    ):
        bad = good.copy()
        bad[1] = -1
        ours.decode([{"audio_codes": bad}])
    with pytest.raises(ValueError, match=r"encoded\[0\]: expected codes of shape \(frames, 16\), got shape \(3, 15\)"):
        ours.decode([np.zeros((3, 15), np.int64)])
    with pytest.raises(
        ValueError, match=r"encoded: expected codes of shape \(frames, codebooks\) or \(batch, frames, codebooks\)"
    ):
        ours.decode(np.zeros(16, np.int64))
    with pytest.raises(ValueError, match=r"codes must be integers, got non-integral float values"):
        ours.decode([good + 0.5])
    with pytest.raises(ValueError, match=r"encoded: empty list"):
        ours.decode([])
    with pytest.raises(ValueError, match=r"encoded: dict has no 'audio_codes' key"):
        ours.decode({"codes": [good]})
    with pytest.raises(TypeError, match=r"encoded: expected an encode\(\) output"):
        ours.decode("codes.npy")
    # trailing -1 frames are padding, not an error
    padded = np.concatenate([good, -np.ones((2, 16), np.int64)])
    (w,), _ = ours.decode([padded])
    assert w.shape == (3 * 64,)


def test_bad_audio_names_the_argument(ours, tmp_path):
    with pytest.raises(ValueError, match=r"audios: audio is empty"):
        ours.encode(np.zeros(0, np.float32), sr=24000)
    nan = test_signal(2000)
    nan[7] = np.nan
    with pytest.raises(ValueError, match=r"audios\[1\]: audio contains 1 NaN/inf sample"):
        ours.encode([test_signal(2000), nan], sr=24000)
    with pytest.raises(ValueError, match=r"audios: a numpy waveform needs its sampling rate"):
        ours.encode(test_signal(2000))
    with pytest.raises(FileNotFoundError, match=r"audios: audio file not found"):
        ours.encode(str(tmp_path / "nope.wav"))


def test_bad_pretrained_folder(folder, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"pretrained_model_name_or_path: folder not found"):
        Qwen3TTSTokenizer.from_pretrained(tmp_path / "missing")
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['foo'\]"):
        Qwen3TTSTokenizer.from_pretrained(folder, foo=1)
    with pytest.raises(ValueError, match=r"dtype: not a floating dtype: 'int8'"):
        Qwen3TTSTokenizer.from_pretrained(folder, dtype="int8")
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    pre = json.loads((bad / "preprocessor_config.json").read_text())
    (bad / "preprocessor_config.json").write_text(json.dumps(dict(pre, feature_size=2)))
    with pytest.raises(ValueError, match=r"preprocessor_config\.json: feature_size=2 is not supported"):
        Qwen3TTSTokenizer.from_pretrained(bad)
