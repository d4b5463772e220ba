"""Streaming pushes the codec only whole chunks (or single frames), so its jitted step compiles
for a bounded set of lengths rather than once per distinct tail length; the padded last chunk
leaves the audio exact."""

from __future__ import annotations

import numpy as np

from conftest import assert_close
from qwen3tts_jax import Qwen3TTSModel
from qwen3tts_jax.codec import streaming


def test_stream_tails_reuse_the_chunk_length(monkeypatch):
    pushed = []
    push = streaming.StreamingDecoder.push

    def recording_push(self, codes):
        pushed.append(np.asarray(codes).shape[-1])
        return push(self, codes)

    monkeypatch.setattr(streaming.StreamingDecoder, "push", recording_push)
    model = Qwen3TTSModel.from_pretrained("random:tiny")
    kw = dict(speaker="serena", seed=3, do_sample=False, subtalker_dosample=False)
    for m in (6, 7, 8, 9, 10, 11):  # 5..10 frames: after the 1-frame first chunk, tails of 0..3 frames
        offline = model.generate_custom_voice("Compile counting.", max_new_tokens=m, **kw)[0][0]
        pushed.clear()
        chunks = [c for c, _ in model.stream_custom_voice("Compile counting.", max_new_tokens=m, chunk_frames=4, **kw)]
        assert_close(np.concatenate(chunks) if chunks else np.zeros(0, np.float32), offline, 1e-4,
                     f"stream vs offline, max_new_tokens={m}")
        # the first chunk is one frame (first_chunk_frames=1), every later push a whole chunk
        assert pushed[:1] == [1] and set(pushed[1:]) <= {4}, (m, pushed)
        assert len(chunks) == len(pushed), (m, len(chunks), pushed)
