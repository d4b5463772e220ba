"""Print a checkpoint folder's parameter groups and check it against our key tables.

    python conversion/inspect_checkpoint.py /path/to/Qwen3-TTS-12Hz-0.6B-Base

(the same as `qwen3tts-jax inspect DIR`; the logic is in qwen3tts_jax/inspection.py)."""

import sys

from qwen3tts_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["inspect", *sys.argv[1:]]))
