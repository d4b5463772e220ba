#!/usr/bin/env bash
# The prepared device check (benchmarks/device_check.py): parity + speed on this machine's accelerator, one JSON in $OUT.
cd "$(dirname "$0")/.." && PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec python3 benchmarks/device_check.py --out "${OUT:-.}/device_check.json" "$@"
