"""Convert a Hugging Face Qwen3-TTS folder to flattened Flax params (safetensors).

    python conversion/convert_checkpoint.py IN_DIR OUT_DIR [--dtype bfloat16]

(the same as `qwen3tts-jax convert`; the logic is in qwen3tts_jax/convert.py)."""

import sys

from qwen3tts_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
