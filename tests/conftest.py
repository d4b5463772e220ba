"""Shared test set-up: the reference import path, fp32 JAX, and worst-error reporting."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "reference" / "stubs"))
sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent))

# Every jaxtyping annotation of the package is enforced at call time (tests/shape_checks.py:
# beartype through jaxtyping's import hook, installed before anything imports the package), so a
# wrong shape in a signature fails the test that reaches it. QWEN3TTS_SHAPE_CHECKS=0 turns it off.
if os.environ.get("QWEN3TTS_SHAPE_CHECKS", "1") == "1":
    sys.path.insert(0, str(Path(__file__).parent))
    from jaxtyping import install_import_hook

    install_import_hook("qwen3tts_jax", "shape_checks.typechecker")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", False)
# The CLI turns JAX's persistent compilation cache on by default; tests (and the CLI processes
# they start) compile afresh and write nothing to ~/.cache. tests/test_first_hour.py checks the cache.
os.environ.setdefault("QWEN3TTS_COMPILE_CACHE", "off")


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drop every compiled program when a test file ends. XLA:CPU maps each executable's code
    into memory; a ~1,000-test session that kept them all passes the kernel's 65,530-map limit
    (vm.max_map_count) about two thirds of the way through, and LLVM segfaults when its next
    mmap fails (seen in CI at tests/test_speaker_encoder.py)."""
    yield
    import gc

    from qwen3tts_jax import generate

    generate.compiled.cache_clear()
    jax.clear_caches()
    gc.collect()


def max_abs(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape mismatch {a.shape} vs {b.shape}"
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def assert_close(ours, ref, tol: float, what: str) -> float:
    """Assert max |ours - ref| <= tol and print the worst error (the suite's error report)."""
    err = max_abs(ours, ref)
    print(f"[parity] {what}: max abs err {err:.3e} (tol {tol:.0e})")
    assert err <= tol, f"{what}: max abs err {err:.3e} > tol {tol:.0e}"
    return err


@pytest.fixture(scope="session")
def torch_threads():
    import torch

    torch.set_num_threads(2)
    return 2


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """`tiny_model(name, seed=0)` → (reference torch model, saved folder). Built once per session."""
    from reference.models import TINY_VARIANTS, build_reference_model, config_dict, save_reference_model

    built = {}

    def get(name: str, seed: int = 0):
        if (name, seed) not in built:
            model = build_reference_model(config_dict(**TINY_VARIANTS[name]), seed)
            folder = save_reference_model(model, tmp_path_factory.mktemp(f"{name}-{seed}"))
            built[name, seed] = (model, folder)
        return built[name, seed]

    return get


@pytest.fixture(scope="session")
def tiny_full_model(tiny_model, tmp_path_factory):
    """`tiny_full_model(name)` → (reference torch model, complete released-layout folder): model,
    `speech_tokenizer/` (tiny reference codec) and the real Qwen text tokenizer files."""
    import shutil

    from reference.codec_models import build_reference_tokenizer, codec_config_dict, save_reference_tokenizer
    from reference.text_fixture import write_tokenizer_files

    built = {}

    def get(name: str, seed: int = 0):
        if (name, seed) not in built:
            ref, folder = tiny_model(name, seed)
            full = tmp_path_factory.mktemp(f"full-{name}-{seed}")
            shutil.copytree(folder, full, dirs_exist_ok=True)
            codec = build_reference_tokenizer(codec_config_dict(), seed)
            save_reference_tokenizer(codec, full / "speech_tokenizer")
            write_tokenizer_files(full)
            built[name, seed] = (ref, full)
        return built[name, seed]

    return get
