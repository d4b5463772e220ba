#!/usr/bin/env bash
# Create (or refresh) .venv with what synthesis and the server need: the library and its
# dependencies (jax, flax, safetensors, tokenizers, soundfile, soxr, fastapi, uvicorn, ...). Idempotent.
#
#   bash scripts/setup_env.sh          # the main job: synthesis only
#   bash scripts/setup_env.sh --test   # + the test tools, notebooks, orbax, the official reference
#                                      #   implementation (PyTorch qwen-tts 0.1.1) and the test data
#
# Why the reference is not a plain `pip install qwen-tts`: it pulls torchaudio, whose only build
# for torch 2.13 is a CUDA one that fails to import beside the CPU wheel. We install torch's CPU
# wheel first, then qwen-tts with --no-deps plus the packages its 12 Hz path needs; the tests put
# a stub `torchaudio` on sys.path for the unused 25 Hz import chain (tests/reference/stubs).
set -euo pipefail
cd "$(dirname "$0")/.."
TEST=0
for arg in "$@"; do
  case "$arg" in
    --test) TEST=1 ;;
    *) echo "error: unknown argument '$arg' (expected --test or nothing)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
# Every install is held to the tested versions (constraints.txt; README "Tested versions").
export PIP_CONSTRAINT="$PWD/constraints.txt${PIP_CONSTRAINT:+ $PIP_CONSTRAINT}"
step() { echo "[setup] $*" >&2; }
[ -x .venv/bin/python ] || { step "creating .venv with $PY"; "$PY" -m venv .venv; }
. .venv/bin/activate
step "pip itself"
pip install -q --upgrade pip
if [ "$TEST" = 1 ]; then
  step "torch (CPU wheel), for the reference implementation"
  pip install -q torch==2.13.0
  step "the library with its test, notebook and orbax extras"
  pip install -q -e '.[test,notebooks,orbax,serve]'
  step "the reference's dependencies and qwen-tts 0.1.1 (--no-deps)"
  pip install -q "transformers==4.57.3" "accelerate==1.12.0" librosa einops sox onnxruntime
  pip install -q --no-deps qwen-tts==0.1.1
  if [ -f scripts/fetch_test_data.sh ]; then step "test data"; bash scripts/fetch_test_data.sh; fi
  python -c "import jax, torch, qwen3tts_jax; print('test env ready: jax', jax.__version__, 'torch', torch.__version__)"
else
  step "the library, what synthesis and the server need"
  pip install -q -e '.[serve]'
  python -c "import jax, qwen3tts_jax; print('env ready: jax', jax.__version__)"
fi
