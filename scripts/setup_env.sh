#!/usr/bin/env bash
# Create (or refresh) .venv with the library, the test tools and the official reference
# implementation (PyTorch qwen-tts 0.1.1), then fetch the test data. Idempotent.
#
# Why not a plain `pip install qwen-tts`: it pulls torchaudio, whose only build for torch 2.13
# is a CUDA one that fails to import beside the CPU wheel. We install torch's CPU wheel first,
# then qwen-tts with --no-deps plus the packages its 12 Hz path needs; the tests put a stub
# `torchaudio` on sys.path for the unused 25 Hz import chain (tests/reference/stubs).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q torch==2.13.0
pip install -q -e '.[test,notebooks,orbax,serve]'
pip install -q "transformers==4.57.3" "accelerate==1.12.0" librosa einops sox onnxruntime
pip install -q --no-deps qwen-tts==0.1.1
if [ -f scripts/fetch_test_data.sh ]; then bash scripts/fetch_test_data.sh; fi
python -c "import jax, torch, qwen3tts_jax; print('env ready: jax', jax.__version__, 'torch', torch.__version__)"
