#!/usr/bin/env bash
# The README's main-job command: set up .venv (what synthesis needs), then run the synthesize line
# the README shows, with the real 0.6B CustomVoice architecture and seeded random weights (pass
# other synthesize flags to override, e.g. `bash scripts/run_demo.sh --model /path/to/Qwen3-TTS-12Hz-0.6B-CustomVoice`).
# tests/test_first_hour.py checks that this line and the README's are the same command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
mkdir -p out
exec .venv/bin/qwen3tts-jax synthesize --model random:0.6b-customvoice --speaker ryan --language english \
  --text "Hello from qwen3tts-jax. This is the real architecture with random weights." \
  --max-new-tokens 48 --out out/demo.wav "$@"
