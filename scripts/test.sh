#!/usr/bin/env bash
# The test command (README, .ci/run): set up .venv with the test environment, lint, then run the
# whole suite (with jaxtyping shape checks on: tests/conftest.py). Extra arguments go to pytest,
# e.g. `bash scripts/test.sh -m "not slow"` for the fast tier.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh --test
bash scripts/install_browser.sh
echo "[lint] ruff check + ruff format --check" >&2
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest -q tests "$@"
