"""`benchmarks/device_check.py --device cpu --quick`: the accelerator check runs green on CPU, so it
is ready (and not rotten) when a GPU machine comes. No timing is asserted: only that every item
ran and produced numbers, and that the tiny-model parity (fp32 and bf16) passed against the
stored references."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "device_check.py"


def _run(*args, timeout=3000):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("device_check") / "dc.json"
    proc = _run("--device", "cpu", "--quick", "--out", str(out))
    assert out.exists(), f"no JSON written\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc, json.loads(out.read_text())


@pytest.mark.slow
def test_quick_run_is_green(quick):
    proc, data = quick
    assert proc.returncode == 0, f"failed: {data.get('failed')}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert data["failed"] == [] and data["environment"]["backend"] == "cpu"
    # the device image has neither: nothing on the check's path may import them
    assert data["environment"]["loaded_audio_io"] == [] and data["loaded_audio_io_at_end"] == []


@pytest.mark.slow
def test_quick_parity_passed_in_fp32_and_bf16(quick):
    _, data = quick
    fp32, bf16 = data["parity_fp32"], data["parity_bf16"]
    assert fp32["ok"] and fp32["same_weights_as_references"] and all(fp32["checks"].values()), fp32["checks"]
    assert fp32["talker_prefill_max_abs"] <= 1e-4 and fp32["codec_max_abs"] <= 1e-3
    assert fp32["greedy_frames"] == fp32["greedy_reference_frames"] and fp32["greedy_code_agreement"] == [1.0, 1.0]
    assert bf16["ok"] and bf16["policy"]["dtype"] == "bfloat16" and all(bf16["checks"].values()), bf16["checks"]
    assert 0 < bf16["talker_rel_p99"] <= 0.05  # bf16 really ran: its error is not zero


@pytest.mark.slow
def test_quick_speed_items_all_measured(quick):
    _, data = quick
    speed = data["speed"]
    assert speed["model"] == "random:tiny" and speed["policy"]["dtype"] == "bfloat16"
    for name in ("single_stream", "streaming", "codec_decode", "prefill", "batch_2"):
        assert "skipped" not in speed[name] and "error" not in speed[name], (name, speed[name])
    assert speed["single_stream"]["audio_s"] == pytest.approx(8 * 0.08) and speed["single_stream"]["xrt"] > 0
    assert speed["batch_2"]["audio_s"] == pytest.approx(2 * 8 * 0.08) and speed["batch_2"]["audio_s_per_s"] > 0
    assert 0 < speed["streaming"]["ttfa_ms"] and speed["prefill"]["tokens"] == 16 and speed["codec_decode"]["xrt"] > 0
    assert set(speed["targets"]) >= {"single_stream_met", "ttfa_met", "batch32_met"}


def test_bad_arguments_are_refused():
    proc = _run("--frames", "0")
    assert proc.returncode == 2 and "--frames must be >= 1, got 0" in proc.stderr
    proc = _run("--out", "/nonexistent-folder/x.json")
    assert proc.returncode == 2 and "--out: folder /nonexistent-folder does not exist" in proc.stderr
