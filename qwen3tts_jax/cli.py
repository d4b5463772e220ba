"""The `qwen3tts-jax` console command: inspect, convert (and synthesize, see generation)."""

from __future__ import annotations

import argparse
import sys


def _inspect(args) -> int:
    from qwen3tts_jax.inspection import format_report, inspect_folder

    parts = inspect_folder(args.dir)
    ok = True
    for part in parts:
        print(format_report(part))
        if not part.keys.ok:
            print(part.keys.error(str(part.folder)), file=sys.stderr)
            ok = False
    return 0 if ok else 1


def _convert(args) -> int:
    import jax.numpy as jnp

    from qwen3tts_jax.convert import convert

    dtype = {"keep": None, "float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}[args.dtype]
    out = convert(args.dir, args.out, dtype=dtype)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qwen3tts-jax", description="Qwen3-TTS in JAX")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="check a checkpoint folder against the key tables and print its parameter groups")
    p.add_argument("dir", help="model folder (with config.json, model.safetensors[, speech_tokenizer/]) or a tokenizer folder")
    p.set_defaults(run=_inspect)
    p = sub.add_parser("convert", help="convert a model folder to flattened Flax param pytrees (safetensors)")
    p.add_argument("dir")
    p.add_argument("out")
    p.add_argument("--dtype", choices=["keep", "float32", "bfloat16", "float16"], default="keep")
    p.set_defaults(run=_convert)
    try:
        from qwen3tts_jax.synthesize_cli import add_synthesize  # noqa: PLC0415

        add_synthesize(sub)
    except ImportError:
        pass
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        # Bad input is reported as one clear line, never a traceback.
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
