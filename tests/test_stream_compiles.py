"""Streaming through the engine compiles the codec for a bounded set of piece shapes, whatever the
utterance lengths and chunk sizes; the streamed audio equals the offline audio."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

from qwen3tts_jax import Qwen3TTSModel
from qwen3tts_jax.codec import decoder as codec_decoder


@pytest.mark.slow
def test_stream_lengths_share_the_codec_programs():
    model = Qwen3TTSModel.from_pretrained("random:tiny")
    kw = dict(speaker="serena", seed=3, do_sample=False, subtalker_dosample=False)
    sizes = []
    for m, chunk in ((6, 4), (7, 4), (9, 3), (11, 5), (13, 2), (10, 4)):  # tails of every length
        offline = model.generate_custom_voice("Compile counting.", max_new_tokens=m, **kw)[0][0]
        chunks = [
            c for c, _ in model.stream_custom_voice("Compile counting.", max_new_tokens=m, chunk_frames=chunk, **kw)
        ]
        assert_close(
            np.concatenate(chunks) if chunks else np.zeros(0, np.float32),
            offline,
            1e-4,
            f"stream vs offline, max_new_tokens={m}, chunk_frames={chunk}",
        )
        sizes.append(codec_decoder._step_copying._cache_size())
    # Pieces are powers of two (codec/pieces.py), one batch row: a handful of programs at most,
    # and the later lengths compile nothing new.
    assert sizes[-1] <= 8 and sizes[-1] == sizes[-3], sizes
