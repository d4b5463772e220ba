"""The frame bookkeeping of the streaming codec (`qwen3tts_jax.codec.pieces`): reference chunk
runs, piece splits, final padding and batch buckets. Pure Python; the numerics are checked
against the official decoder in tests/test_codec_slots.py and tests/test_codec_decoder.py."""

from __future__ import annotations

import pytest

from qwen3tts_jax.codec.pieces import Run, padded_length, piece_sizes, row_groups, runs, split


def _reference_chunks(t: int, chunk: int = 300, left: int = 25) -> list[tuple[int, int, int]]:
    """(first decoded frame, first kept frame, end) of each forward of the reference's
    `chunked_decode`, transcribed from its loop."""
    out, start = [], 0
    while start < t:
        end = min(start + chunk, t)
        ctx = left if start - left > 0 else start
        out.append((start - ctx, start, end))
        start = end
    return out


@pytest.mark.parametrize("t", [1, 299, 300, 301, 624, 900, 931])
def test_one_push_runs_are_the_reference_chunks(t):
    got = runs(0, t, 300, 25)
    assert [(r.first, r.emit, r.stop) for r in got] == _reference_chunks(t)
    assert [r.fresh for r in got] == [False] + [True] * (len(got) - 1)


def test_runs_of_many_pushes_join_up_to_the_reference_chunks():
    """Pushed in uneven pieces, the runs that start fresh are exactly the reference's chunk
    starts, and the kept frames tile the stream once."""
    done, kept, fresh_starts = 0, [], []
    for k in [7, 293, 1, 299, 13, 0, 290, 40]:
        for r in runs(done, k, 300, 25):
            assert r.first <= r.emit < r.stop <= done + k and r.stop - 1 < (r.emit // 300 + 1) * 300
            kept.extend(range(r.emit, r.stop))
            if r.fresh:
                fresh_starts.append((r.first, r.emit))
        done += k
    assert kept == list(range(done))
    assert fresh_starts == [(c[0], c[1]) for c in _reference_chunks(done)[1:]]


def test_a_push_that_ends_on_a_boundary_restarts_at_the_next_push():
    assert runs(0, 300, 300, 25) == [Run(False, 0, 0, 300)]
    assert runs(300, 4, 300, 25) == [Run(True, 275, 300, 304)]
    assert runs(0, 310, 300, 25, reference_chunking=False) == [Run(False, 0, 0, 310)]


def test_split_and_piece_sizes():
    assert piece_sizes(16) == (1, 2, 4, 8, 16)
    assert split(0) == [] and split(13, 16) == [8, 4, 1] and split(37, 16) == [16, 16, 4, 1]
    for n in range(200):
        parts = split(n, 32)
        assert sum(parts) == n and set(parts) <= set(piece_sizes(32)) and parts == sorted(parts, reverse=True)
    for bad in (0, 3, 12):
        with pytest.raises(ValueError, match=f"max_piece must be a power of two >= 1, got {bad}"):
            piece_sizes(bad)


def test_final_padding_only_where_it_saves_calls():
    # call overhead 1 frame: 7 = 4+2+1 (3 calls) costs more than 8 (1 call, 1 padded frame)
    assert padded_length(7, 64, 1.0) == 8
    assert padded_length(5, 64, 1.0) == 5  # 4+1: one extra call < 3 padded frames
    assert padded_length(64 + 15, 64, 1.0) == 64 + 16
    assert padded_length(64, 64, 1.0) == 64 and padded_length(0, 64, 1.0) == 0
    assert padded_length(5, 64, 0.0) == 5 and padded_length(5, 64, 10.0) == 8


def test_row_groups():
    assert row_groups(4, 8) == [(4, 4)]
    assert row_groups(5, 4, 1.0) == [(4, 4), (1, 1)]  # padding 3 rows x 4 frames > one more call
    assert row_groups(7, 1, 1.0) == [(7, 8)]  # 1 padded row-frame < two more calls
    assert row_groups(3, 1, 10.0) == [(3, 4)]
    # at most max_call_frames row-frames a call (one row at least)
    assert row_groups(8, 8, 1.0, 32) == [(4, 4), (4, 4)]
    assert row_groups(3, 64, 1.0, 32) == [(1, 1)] * 3
    assert row_groups(40, 1, 1.0, 32) == [(32, 32), (8, 8)]
    for n in range(1, 40):
        for frames in (1, 4, 32):
            groups = row_groups(n, frames, 1.0, 16)
            assert sum(g for g, _ in groups) == n
            assert all(b >= g and b & (b - 1) == 0 and (b == 1 or b * frames <= 16) for g, b in groups)
