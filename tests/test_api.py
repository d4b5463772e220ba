"""The public API against the reference's public API (`qwen_tts.Qwen3TTSModel`) on complete tiny
model folders, greedy: identical frame counts, waveforms within 1e-3; plus input validation."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

from qwen3tts_jax import Qwen3TTSModel

GREEDY = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=8)
TEXTS = ["Hello world, how are you today?", "Guten Tag! 今天天气很好。"]


def _reference_api(folder):
    import torch
    from qwen_tts import Qwen3TTSModel as RefModel

    return RefModel.from_pretrained(str(folder), dtype=torch.float32, attn_implementation="eager")


def _compare(ours, ref, what):
    (ow, osr), (rw, rsr) = ours, ref
    assert osr == rsr == 24000 and len(ow) == len(rw)
    for i, (a, b) in enumerate(zip(ow, rw)):
        assert a.dtype == np.float32 and a.shape == b.shape, f"{what} item {i}: {a.shape} vs {b.shape}"
        assert_close(a, b, 1e-3, f"{what} waveform {i}")


def _voice(seconds=1.3, sr=16000, seed=0):
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.RandomState(seed)
    f = 140 + 60 * np.sin(2 * np.pi * 1.3 * t)
    return (0.4 * np.sin(2 * np.pi * np.cumsum(f) / sr) + 0.05 * rng.randn(len(t))).astype(np.float32), sr


@pytest.mark.reference
@pytest.mark.parametrize("name", ["custom-0b6-gqa", "custom-1b7-gqa"])
@pytest.mark.slow
def test_custom_voice_matches_reference_api(tiny_full_model, name):
    _, folder = tiny_full_model(name)
    ref, ours = _reference_api(folder), Qwen3TTSModel.from_pretrained(folder)
    assert ours.get_supported_speakers() == ref.get_supported_speakers()
    assert ours.get_supported_languages() == ref.get_supported_languages()
    kw = dict(speaker=["Eric", "vivian"], language=["Auto", "German"], instruct="Speak slowly and warmly.", **GREEDY)
    _compare(ours.generate_custom_voice(TEXTS, **kw), ref.generate_custom_voice(TEXTS, **kw), f"custom voice [{name}]")


@pytest.mark.reference
@pytest.mark.slow
def test_voice_design_matches_reference_api(tiny_full_model):
    _, folder = tiny_full_model("design-1b7-gqa")
    ref, ours = _reference_api(folder), Qwen3TTSModel.from_pretrained(folder)
    kw = dict(instruct=["A deep calm voice.", ""], language="english", non_streaming_mode=False, **GREEDY)
    _compare(ours.generate_voice_design(TEXTS, **kw), ref.generate_voice_design(TEXTS, **kw), "voice design")


@pytest.mark.reference
@pytest.mark.parametrize("x_vector_only", [False, True])
@pytest.mark.slow
def test_voice_clone_matches_reference_api(tiny_full_model, x_vector_only):
    _, folder = tiny_full_model("base-0b6-gqa")
    ref, ours = _reference_api(folder), Qwen3TTSModel.from_pretrained(folder)
    audio = _voice()  # 16 kHz: both resample to 24 kHz
    kw = dict(ref_audio=audio, ref_text="This is what the reference says.", x_vector_only_mode=x_vector_only, **GREEDY)
    _compare(
        ours.generate_voice_clone(TEXTS[0], language="english", **kw),
        ref.generate_voice_clone(TEXTS[0], language="english", **kw),
        f"voice clone [x_vector_only={x_vector_only}]",
    )
    # A prompt made once is reusable, and gives the same audio as passing the audio again.
    prompt = ours.create_voice_clone_prompt(audio, ref_text=kw["ref_text"], x_vector_only_mode=x_vector_only)
    again = ours.generate_voice_clone(TEXTS[0], language="english", voice_clone_prompt=prompt, **GREEDY)
    direct = ours.generate_voice_clone(TEXTS[0], language="english", **kw)
    np.testing.assert_array_equal(again[0][0], direct[0][0])


@pytest.mark.slow
def test_seeded_sampling_is_reproducible():
    model = Qwen3TTSModel.from_pretrained("random:tiny")
    a = model.generate_custom_voice("Sampling test.", "ryan", max_new_tokens=6, seed=7)[0][0]
    b = model.generate_custom_voice("Sampling test.", "ryan", max_new_tokens=6, seed=7)[0][0]
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_streaming_equals_offline():
    model = Qwen3TTSModel.from_pretrained("random:tiny")
    offline = model.generate_custom_voice("Streaming test here.", "serena", max_new_tokens=12, seed=3)[0][0]
    chunks = [
        c
        for c, _ in model.stream_custom_voice(
            "Streaming test here.", "serena", max_new_tokens=12, seed=3, chunk_frames=3
        )
    ]
    assert len(chunks) > 1 and model.last_stream_stats.time_to_first_audio is not None
    assert_close(np.concatenate(chunks), offline, 1e-4, "streaming vs offline waveform")


@pytest.mark.slow
def test_streaming_chunk_sizes():
    """The first chunk holds `first_chunk_frames` frames, later ones `chunk_frames` (the last may
    be shorter); the audio is the offline audio whatever the split."""
    model = Qwen3TTSModel.from_pretrained("random:tiny")
    kw = dict(max_new_tokens=14, seed=5, do_sample=False, subtalker_dosample=False)
    offline = model.generate_custom_voice("Chunk sizes here.", "serena", **kw)[0][0]
    per = model.speech_tokenizer.get_decode_upsample_rate()
    frames = len(offline) // per
    assert frames > 6, frames
    chunks = [
        c
        for c, _ in model.stream_custom_voice("Chunk sizes here.", "serena", chunk_frames=3, first_chunk_frames=2, **kw)
    ]
    sizes = [len(c) // per for c in chunks]
    assert sizes[0] == 2 and all(n == 3 for n in sizes[1:-1]) and 1 <= sizes[-1] <= 3 and sum(sizes) == frames, sizes
    assert_close(np.concatenate(chunks), offline, 1e-4, "chunked stream vs offline")
    with pytest.raises(ValueError, match=r"first_chunk_frames must be an integer >= 1, got 0"):
        next(model.stream_custom_voice("Chunk sizes here.", "serena", first_chunk_frames=0))


@pytest.fixture(scope="module")
def tiny():
    return Qwen3TTSModel.from_pretrained("random:tiny")


@pytest.fixture(scope="module")
def tiny_base():
    return Qwen3TTSModel.from_pretrained("random:tiny-base")


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda m: m.generate_custom_voice("", "ryan"), r"text\[0\]: must be a non-empty string"),
        (
            lambda m: m.generate_custom_voice("hi", "nobody"),
            r"Unsupported speaker\(s\) \['nobody'\]. Supported: \['aiden'",
        ),
        (
            lambda m: m.generate_custom_voice("hi", "ryan", language="klingon"),
            r"Unsupported language\(s\) \['klingon'\]. Supported: \['auto'",
        ),
        (
            lambda m: m.generate_voice_design("hi", "calm"),
            r"needs a 'voice_design' model .* this model is 'custom_voice'",
        ),
        (lambda m: m.generate_custom_voice("hi", "ryan", max_new_tokens=0), r"max_new_tokens must be an integer >= 2"),
        (lambda m: m.generate_custom_voice("hi", "ryan", max_new_tokens=40000), r"exceed the model's position budget"),
        (
            lambda m: m.generate_custom_voice(["a", "b"], ["ryan", "eric", "aiden"]),
            r"Batch size mismatch: speaker has 3",
        ),
    ],
)
def test_bad_input_is_refused_before_compute(tiny, call, match):
    with pytest.raises(ValueError, match=match):
        call(tiny)


@pytest.mark.parametrize(
    "audio,match",
    [
        ((np.zeros(24000, np.float32), 24000), r"ref_audio\[0\]: the audio is silent"),
        ((np.full(24000, np.nan, np.float32), 24000), r"NaN"),
        ((np.ones(500, np.float32) * 0.1, 24000), r"too short"),
    ],
)
def test_bad_reference_audio(tiny_base, audio, match):
    with pytest.raises(ValueError, match=match):
        tiny_base.generate_voice_clone("hi", ref_audio=audio, ref_text="ref words")


def test_icl_needs_ref_text_and_stereo_is_downmixed(tiny_base):
    wav, sr = _voice(sr=24000)
    with pytest.raises(ValueError, match=r"ref_text\[0\] is required"):
        tiny_base.create_voice_clone_prompt((wav, sr))
    mono = tiny_base.create_voice_clone_prompt((wav, sr), x_vector_only_mode=True)[0]
    stereo = tiny_base.create_voice_clone_prompt((np.stack([wav, wav], 1), sr), x_vector_only_mode=True)[0]
    np.testing.assert_allclose(stereo.ref_spk_embedding, mono.ref_spk_embedding, atol=1e-6)


@pytest.mark.slow
def test_cli_synthesize_writes_audio_atomically(tmp_path):
    import soundfile as sf

    from qwen3tts_jax.cli import main

    out = tmp_path / "x.flac"
    assert (
        main(
            [
                "synthesize",
                "--model",
                "random:tiny",
                "--text",
                "Command line test.",
                "--max-new-tokens",
                "6",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    audio, sr = sf.read(out)
    assert sr == 24000 and 0 < len(audio) <= 5 * 1920
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.flac"]  # no temporary left behind
    bad = tmp_path / "x.mp3"
    assert main(["synthesize", "--model", "random:tiny", "--text", "x", "--out", str(bad)]) == 2
    assert not bad.exists()
