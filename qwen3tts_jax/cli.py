"""The `qwen3tts-jax` console command: inspect, convert, synthesize, batch."""

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


def _setup_devices(args) -> None:
    """Device options, applied before JAX starts its backends: virtual CPU devices and the
    multi-process rendezvous (`jax.distributed.initialize`)."""
    import jax

    if args.coordinator:
        if args.num_processes is None or args.process_id is None:
            raise ValueError("--coordinator needs --num-processes and --process-id")
        from qwen3tts_jax.sharding import initialize_distributed

        initialize_distributed(args.coordinator, args.num_processes, args.process_id, args.cpu_devices)
    elif args.cpu_devices:
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)


def _synthesize(args) -> int:
    import time
    from pathlib import Path

    import numpy as np
    from tqdm import tqdm

    from qwen3tts_jax.api import Qwen3TTSModel
    from qwen3tts_jax.audio_io import check_output_path, write_audio_atomic

    out = check_output_path(args.out)
    text = Path(args.text_file).read_text(encoding="utf-8").strip() if args.text_file else args.text
    t0 = time.perf_counter()
    _setup_devices(args)
    model = Qwen3TTSModel.from_pretrained(args.model, dtype=args.dtype, seed=args.seed, mesh=args.mesh)
    kw = {"seed": args.seed, "chunk_frames": args.chunk_frames, "language": args.language}
    if args.max_new_tokens is not None:
        kw["max_new_tokens"] = args.max_new_tokens
    if args.greedy:
        kw.update(do_sample=False, subtalker_dosample=False)
    if args.non_streaming_mode != "auto":
        kw["non_streaming_mode"] = args.non_streaming_mode == "true"
    kind = model.tts_model_type
    if kind == "custom_voice":
        speaker = args.speaker or (model.get_supported_speakers() or [None])[0]
        stream = model.stream_custom_voice(text, speaker, instruct=args.instruct, **kw)
    elif kind == "voice_design":
        if not args.instruct:
            raise ValueError("--instruct is required for a VoiceDesign model (describe the voice)")
        stream = model.stream_voice_design(text, args.instruct, **kw)
    else:
        if args.ref_audio:
            stream = model.stream_voice_clone(text, ref_audio=args.ref_audio, ref_text=args.ref_text,
                                              x_vector_only_mode=args.x_vector_only or not args.ref_text, **kw)
        else:
            raise ValueError("--ref-audio is required for a Base (voice clone) model")
    print(f"loaded {args.model} ({kind}, {model.tts_model_size}) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    chunks, sr = [], 24000
    with tqdm(unit="frame", desc="synthesizing", file=sys.stderr) as bar:
        for wav, sr in stream:
            chunks.append(wav)
            bar.update(len(wav) // 1920)
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    import jax

    if jax.process_index() == 0:  # multi-process: every process computes, one writes
        write_audio_atomic(out, audio, sr)
    st = model.last_stream_stats
    print(f"wrote {out}: {len(audio) / sr:.2f} s of audio; first audio after {st.time_to_first_audio or 0:.2f} s, "
          f"total {st.total_time or 0:.2f} s", file=sys.stderr)
    return 0


def _batch(args) -> int:
    from qwen3tts_jax import batch

    _setup_devices(args)
    return batch.main(args)


def _add_device_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("devices")
    g.add_argument("--mesh", default=None, help="run on a device mesh, e.g. data=4,model=2 (data parallel batch x "
                   "tensor parallel weights; see qwen3tts_jax/sharding.py)")
    g.add_argument("--cpu-devices", type=int, default=None, help="CPU only: split the host into N virtual devices")
    g.add_argument("--coordinator", default=None, help="multi-process: coordinator HOST:PORT (jax.distributed.initialize)")
    g.add_argument("--num-processes", type=int, default=None, help="multi-process: number of processes")
    g.add_argument("--process-id", type=int, default=None, help="multi-process: this process's index (0 writes outputs)")


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
    p = sub.add_parser("synthesize", help="text in, speech out (WAV/FLAC by the extension of --out)")
    p.add_argument("--model", required=True, help="model folder, Hugging Face repo id, or random:<name> "
                   "(random:0.6b-base, random:0.6b-customvoice, random:1.7b-voicedesign, random:tiny, ...)")
    text = p.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", help="the text to speak")
    text.add_argument("--text-file", help="a UTF-8 file holding the text to speak")
    p.add_argument("--language", default="auto")
    p.add_argument("--speaker", help="CustomVoice: preset speaker (see --list-speakers)")
    p.add_argument("--instruct", help="CustomVoice 1.7B / VoiceDesign: style or voice description")
    p.add_argument("--ref-audio", help="Base: reference audio to clone")
    p.add_argument("--ref-text", help="Base: transcript of --ref-audio (ICL mode); omit with --x-vector-only")
    p.add_argument("--x-vector-only", action="store_true", help="Base: clone from the speaker embedding only")
    p.add_argument("--out", required=True, help="output .wav or .flac (written atomically)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--greedy", action="store_true", help="do_sample=False and subtalker_dosample=False")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--dtype", default=None, help="compute dtype: float32 (default) or bfloat16")
    p.add_argument("--chunk-frames", type=int, default=8, help="frames per compiled decoding call")
    p.add_argument("--non-streaming-mode", choices=["auto", "true", "false"], default="auto",
                   help="text layout of the prompt (the reference's non_streaming_mode); auto = the method's default")
    _add_device_args(p)
    p.set_defaults(run=_synthesize)
    p = sub.add_parser("batch", help="many texts in, one audio file each + manifest.jsonl out; resumes after interruption")
    p.add_argument("--model", required=True, help="model folder, Hugging Face repo id, or random:<name>")
    p.add_argument("--input", required=True, help="texts.txt (one text per line) or items.jsonl "
                   "({\"id\", \"text\", \"speaker\", \"language\", \"instruct\", \"ref_audio\", \"ref_text\", \"x_vector_only\"})")
    p.add_argument("--out-dir", required=True, help="output folder: <id>.wav files, manifest.jsonl, batch.json")
    p.add_argument("--batch-size", type=int, default=None, help="items per generation batch (default: the mesh's data size, or 1)")
    p.add_argument("--format", choices=["wav", "flac"], default="wav")
    p.add_argument("--language", default="auto", help="default language of items without one")
    p.add_argument("--speaker", help="CustomVoice: default speaker")
    p.add_argument("--instruct", help="CustomVoice 1.7B / VoiceDesign: default instruct")
    p.add_argument("--ref-audio", help="Base: default reference audio")
    p.add_argument("--ref-text", help="Base: default transcript of --ref-audio")
    p.add_argument("--x-vector-only", action="store_true", help="Base: clone from the speaker embedding only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--greedy", action="store_true", help="do_sample=False and subtalker_dosample=False")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--dtype", default=None, help="compute dtype: float32 (default) or bfloat16")
    _add_device_args(p)
    p.set_defaults(run=_batch)
    from qwen3tts_jax.server.cli import add_parser as add_serve_parser  # the speech server (qwen3tts_jax/server)

    add_serve_parser(sub)
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
