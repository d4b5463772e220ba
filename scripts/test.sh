#!/usr/bin/env bash
# The test command (README, .ci/run): set up .venv with the test environment, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh --test
bash scripts/install_browser.sh
exec .venv/bin/python -m pytest -q tests "$@"
