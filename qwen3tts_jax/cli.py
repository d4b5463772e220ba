"""The `qwen3tts-jax` console command: synthesize, batch, inspect, convert, save-random.

Every argument is checked (`checks.py`) before a model is loaded or anything is compiled: number
ranges, the output location (a writable file path), the text file, and the voice flags against
the model type read from its config (a Base model takes --ref-audio, a CustomVoice model
--speaker, ...; a flag the model would ignore is refused, not dropped). Every error reaches the
user as one `error:` line (exit status 2 for bad input, 1 for a failing system call), warnings
as `warning:` lines. Compiled programs go to JAX's persistent cache (`compile_cache.py`), so a
second run starts in seconds.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import warnings

from qwen3tts_jax import checks, compile_cache, presets

_INPUT_ERRORS = (
    ValueError,
    TypeError,
    LookupError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
_LANGUAGES = ["auto"] + [k for k in presets.LANGUAGES if "dialect" not in k]
# The voice flags each model type takes; the others are refused (the API would ignore them).
_VOICE_FLAGS = {
    "custom_voice": ("--speaker", "--instruct"),
    "voice_design": ("--instruct",),
    "base": ("--ref-audio", "--ref-text", "--x-vector-only"),
}
_KIND_NAMES = {"custom_voice": "CustomVoice", "voice_design": "VoiceDesign", "base": "Base"}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qwen3tts-jax")
    except PackageNotFoundError:
        return "(not installed)"


# ------------------------------------------------------------------------------------------
# Checks shared by synthesize and batch
# ------------------------------------------------------------------------------------------


def _check_numbers(args) -> None:
    checks.check_seed(args.seed, "--seed")
    if args.max_new_tokens is not None:
        checks.check_max_new_tokens(args.max_new_tokens, "--max-new-tokens")
    checks.check_optional_int("--cpu-devices", args.cpu_devices, 1)
    checks.check_optional_int("--num-processes", args.num_processes, 1)
    hi = args.num_processes - 1 if args.num_processes is not None else None
    checks.check_optional_int("--process-id", args.process_id, 0, hi)
    if args.coordinator and (args.num_processes is None or args.process_id is None):
        raise ValueError("--coordinator needs --num-processes and --process-id")
    if getattr(args, "chunk_frames", None) is not None:
        checks.check_int("--chunk-frames", args.chunk_frames, 1)
    checks.check_optional_int("--batch-size", getattr(args, "batch_size", None), 1)


def _voice_flags(args) -> dict[str, object]:
    return {
        "--speaker": args.speaker,
        "--instruct": args.instruct,
        "--ref-audio": args.ref_audio,
        "--ref-text": args.ref_text,
        "--x-vector-only": args.x_vector_only or None,
    }


def _check_voice(args, cfg, single: bool) -> None:
    """The voice flags against the model `cfg` describes. `single`: synthesize (the flags are
    the whole request); batch flags are defaults that items may complete."""
    kind = cfg.tts_model_type
    allowed = _VOICE_FLAGS[kind]
    for flag, value in _voice_flags(args).items():
        if value is not None and flag not in allowed:
            raise ValueError(
                f"{flag} is not used by a {_KIND_NAMES[kind]} model ({args.model} has tts_model_type={kind!r}); "
                f"it takes {' / '.join(allowed)}"
            )
    checks.check_languages([args.language], checks.supported_languages(cfg.talker), "--language")
    if kind == "custom_voice" and args.speaker is not None:
        checks.check_speakers([args.speaker], checks.supported_speakers(cfg.talker) or [], "--speaker")
    if args.ref_audio is not None:
        from qwen3tts_jax.audio import is_local_source

        if is_local_source(args.ref_audio):
            checks.check_input_file(args.ref_audio, "--ref-audio")
    if not single:
        return
    if kind == "voice_design" and not (args.instruct or "").strip():
        raise ValueError("--instruct is required for a VoiceDesign model (describe the voice)")
    if kind == "base":
        if args.ref_audio is None:
            raise ValueError("--ref-audio is required for a Base (voice clone) model")
        if not args.x_vector_only and not (args.ref_text or "").strip():
            raise ValueError(
                "--ref-text is required with --ref-audio (its transcript, for ICL cloning); or pass "
                "--x-vector-only to clone from the speaker embedding alone"
            )


def _setup_compilation(args):
    """The persistent compilation cache (before anything compiles) and a compile counter."""
    folder = compile_cache.enable(args.compile_cache, enabled=not args.no_compile_cache)
    return folder, compile_cache.CompileCounter()


def _setup_devices(args) -> None:
    """Device options, applied before JAX starts its backends: virtual CPU devices and the
    multi-process rendezvous (`jax.distributed.initialize`)."""
    import jax

    if args.coordinator:
        from qwen3tts_jax.sharding import initialize_distributed

        initialize_distributed(args.coordinator, args.num_processes, args.process_id, args.cpu_devices)
    elif args.cpu_devices:
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)


def _model_config(name: str):
    """The config of `--model` without its weights (a hub id is downloaded first)."""
    from qwen3tts_jax.config import Qwen3TTSConfig
    from qwen3tts_jax.hub import check_model_folder, peek_config, resolve_folder

    cfg = peek_config(name, "--model")
    if cfg is None:
        folder = resolve_folder(name, "--model")
        cfg = Qwen3TTSConfig.from_model_dir(folder)
        check_model_folder(folder, "--model")
    return cfg


# ------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------


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
    print(
        f"wrote {out} (flattened Flax param trees for other JAX code; read it with qwen3tts_jax.convert.load_converted)"
    )
    return 0


def _save_random(args) -> int:
    from qwen3tts_jax.random_model import save_random_model

    checks.check_seed(args.seed, "--seed")
    out = save_random_model(args.name, args.out, seed=args.seed)
    print(
        f"wrote {out}: {args.name} (seed {args.seed}) in the released layout; try `qwen3tts-jax inspect {out}` or "
        f"`qwen3tts-jax synthesize --model {out} ...`"
    )
    return 0


def _list(args) -> int:
    cfg = _model_config(args.model)
    if args.list_speakers:
        speakers = checks.supported_speakers(cfg.talker)
        print(
            "\n".join(speakers)
            if speakers
            else f"({args.model} is a {_KIND_NAMES[cfg.tts_model_type]} model: no preset speakers)"
        )
    if args.list_languages:
        print("\n".join(checks.supported_languages(cfg.talker)))
    return 0


def _synthesize(args) -> int:
    import time

    _check_numbers(args)
    if args.list_speakers or args.list_languages:
        return _list(args)
    if args.text is None and args.text_file is None:
        raise ValueError("synthesize needs --text TEXT or --text-file FILE")
    if args.out is None:
        raise ValueError("synthesize needs --out FILE.wav (or .flac)")
    if args.text_file is not None:
        text = checks.check_text(f"--text-file {args.text_file}", checks.read_text_file(args.text_file).strip())
    else:
        text = checks.check_text("--text", args.text)
    out = checks.check_output_path(args.out, "--out")
    cfg = _model_config(args.model)
    _check_voice(args, cfg, single=True)
    cache, counter = _setup_compilation(args)
    _setup_devices(args)

    import jax
    import numpy as np
    from tqdm import tqdm

    from qwen3tts_jax.api import Qwen3TTSModel
    from qwen3tts_jax.audio_io import write_audio_atomic

    t0 = time.perf_counter()
    model = Qwen3TTSModel.from_pretrained(args.model, dtype=args.dtype, seed=args.seed, mesh=args.mesh)
    # A file is written at the end, so nothing is gained by a 1-frame first chunk; equal chunks
    # compile every program in the first step, and the progress bar then shows the frame rate.
    kw = {
        "seed": args.seed,
        "chunk_frames": args.chunk_frames,
        "first_chunk_frames": args.chunk_frames,
        "language": args.language,
    }
    if args.max_new_tokens is not None:
        kw["max_new_tokens"] = args.max_new_tokens
    if args.greedy:
        kw.update(do_sample=False, subtalker_dosample=False)
    if args.non_streaming_mode != "auto":
        kw["non_streaming_mode"] = args.non_streaming_mode == "true"
    # Long text (a --text-file, by default) is spoken segment by segment (qwen3tts_jax.long_form).
    long_form = args.long_form == "on" or (args.long_form == "auto" and args.text_file is not None)
    kw["long_form"] = long_form
    kind = model.tts_model_type
    if kind == "custom_voice":
        speaker = args.speaker or (model.get_supported_speakers() or [None])[0]
        if args.speaker is None:
            print(f"note: no --speaker given, using {speaker!r} (--list-speakers shows the others)", file=sys.stderr)
        stream = model.stream_custom_voice(text, speaker, instruct=args.instruct, **kw)
    elif kind == "voice_design":
        stream = model.stream_voice_design(text, args.instruct, **kw)
    else:
        stream = model.stream_voice_clone(
            text, ref_audio=args.ref_audio, ref_text=args.ref_text, x_vector_only_mode=args.x_vector_only, **kw
        )
    budget = kw.get("max_new_tokens", model.generation_config.max_new_tokens)
    limit = (
        "long form: a budget per segment"
        if long_form
        else f"up to {budget - 1} frames ({(budget - 1) / 12.5:.1f} s of audio)"
    )
    print(
        f"loaded {args.model} ({kind}, {model.tts_model_size}) in {time.perf_counter() - t0:.1f} s; {limit}",
        file=sys.stderr,
    )
    # The first chunk carries the compilation (or the read from the persistent cache): its own
    # step, so the progress bar's rate is the frame rate.
    where = f"compiled programs cached in {cache}" if cache is not None else "persistent compilation cache off"
    print(f"compiling and running the first frame ({where}) ...", file=sys.stderr)
    t1, before = time.perf_counter(), counter.stats()
    first = next(stream, None)
    compiled = counter.stats()
    print(
        f"first audio after {time.perf_counter() - t1:.1f} s ({compiled.compiled - before.compiled} programs compiled, "
        f"{compiled.from_cache - before.from_cache} loaded from the cache)",
        file=sys.stderr,
    )
    chunks, sr = [], 24000
    if first is not None:
        chunks.append(first[0])
        sr = first[1]
        with tqdm(
            total=None if long_form else budget - 1,
            initial=len(first[0]) // 1920,
            unit="frame",
            desc="synthesizing",
            file=sys.stderr,
        ) as bar:
            for wav, _ in stream:
                chunks.append(wav)
                bar.update(len(wav) // 1920)
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if not len(audio):
        warnings.warn("the model ended the speech at its first frame: the file holds no audio", stacklevel=2)
    if jax.process_index() == 0:  # multi-process: every process computes, one writes
        write_audio_atomic(out, audio, sr)
    st = model.last_stream_stats
    print(
        f"wrote {out}: {len(audio) / sr:.2f} s of audio ({len(audio) // 1920} frames), "
        f"total {st.total_time or 0:.2f} s",
        file=sys.stderr,
    )
    if long_form:
        for i, seg in enumerate(model.last_long_form[0]):
            print(
                f"segment {i + 1}: {seg.frames} frames, {seg.finish_reason} (of {seg.max_new_tokens - 1}): "
                f"{seg.text[:60]!r}",
                file=sys.stderr,
            )
    if args.verbose:
        print(f"compilation: {counter.stats().summary()}" + (f" (cache {cache})" if cache else ""), file=sys.stderr)
    return 0


def _batch(args) -> int:
    from qwen3tts_jax import batch

    _check_numbers(args)
    _check_voice(args, _model_config(args.model), single=False)  # batch.main checks --input and --out-dir
    cache, counter = _setup_compilation(args)
    _setup_devices(args)
    rc = batch.main(args)
    if args.verbose:
        print(f"compilation: {counter.stats().summary()}" + (f" (cache {cache})" if cache else ""), file=sys.stderr)
    return rc


# ------------------------------------------------------------------------------------------
# The parser
# ------------------------------------------------------------------------------------------

_MODEL_HELP = "model folder (Hugging Face layout), Hugging Face repo id (owner/name), or random:NAME (see below)"
_RANDOM_EPILOG = (
    textwrap.fill(
        "random models: seeded random weights of the real architecture (noise, not speech). They rarely end on "
        f"their own, so their budget is {presets.RANDOM_MAX_NEW_TOKENS} tokens unless --max-new-tokens says "
        "otherwise; --seed also "
        "draws the weights.",
        100,
    )
    + "\n"
    + presets.describe_random_models()
)


def _add_run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("generation")
    g.add_argument(
        "--seed", type=int, default=0, help="sampling seed in [0, 2**32-1] (random: models: also the weights)"
    )
    g.add_argument("--greedy", action="store_true", help="do_sample=False and subtalker_dosample=False")
    g.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="token budget (>= 2; M tokens give at most M-1 frames of 80 ms). Default: the model's "
        f"generation_config.json (8192 released, {presets.RANDOM_MAX_NEW_TOKENS} for random: models)",
    )
    g.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="compute dtype (default float32, whatever the checkpoint stores; bfloat16 for GPU/TPU)",
    )
    g = p.add_argument_group("compilation")
    compile_cache.add_arguments(g)
    g.add_argument(
        "--verbose", action="store_true", help="print a compilation line: programs compiled / read from the cache"
    )
    g = p.add_argument_group("devices")
    g.add_argument(
        "--mesh",
        default=None,
        help="run on a device mesh, e.g. data=4,model=2 (data parallel batch x "
        "tensor parallel weights; see qwen3tts_jax/sharding.py)",
    )
    g.add_argument("--cpu-devices", type=int, default=None, help="CPU only: split the host into N >= 1 virtual devices")
    g.add_argument(
        "--coordinator", default=None, help="multi-process: coordinator HOST:PORT (jax.distributed.initialize)"
    )
    g.add_argument("--num-processes", type=int, default=None, help="multi-process: number of processes")
    g.add_argument(
        "--process-id", type=int, default=None, help="multi-process: this process's index (0 writes outputs)"
    )


def _add_voice_args(p: argparse.ArgumentParser, default: str = "") -> None:
    g = p.add_argument_group("voice (which flags apply depends on the model type)")
    g.add_argument("--language", default="auto", help=f"{default}one of {', '.join(_LANGUAGES)} (default auto)")
    g.add_argument("--speaker", help=f"CustomVoice: {default}preset speaker (--list-speakers on synthesize shows them)")
    g.add_argument("--instruct", help=f"CustomVoice 1.7B / VoiceDesign: {default}style or voice description")
    g.add_argument("--ref-audio", help=f"Base: {default}reference audio to clone (WAV/FLAC/..., up to 300 s)")
    g.add_argument("--ref-text", help=f"Base: {default}transcript of --ref-audio (ICL cloning); or --x-vector-only")
    g.add_argument(
        "--x-vector-only", action="store_true", help="Base: clone from the speaker embedding only (no --ref-text)"
    )


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="qwen3tts-jax", description="Qwen3-TTS (12 Hz) in JAX", epilog=_RANDOM_EPILOG, formatter_class=fmt
    )
    parser.add_argument("--version", action="version", version=f"qwen3tts-jax {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "synthesize",
        help="text in, speech out (WAV/FLAC by the extension of --out)",
        epilog=_RANDOM_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("--model", required=True, help=_MODEL_HELP)
    text = p.add_mutually_exclusive_group()
    text.add_argument("--text", help="the text to speak")
    text.add_argument("--text-file", help="a UTF-8 file holding the text to speak")
    p.add_argument("--out", help="output .wav or .flac (checked before synthesis, written atomically)")
    p.add_argument("--list-speakers", action="store_true", help="print the model's preset speakers and exit")
    p.add_argument("--list-languages", action="store_true", help="print the model's languages and exit")
    _add_voice_args(p)
    p.add_argument("--chunk-frames", type=int, default=8, help="frames per decoding step of the stream (>= 1)")
    p.add_argument(
        "--long-form",
        choices=["auto", "on", "off"],
        default="auto",
        help="speak the text segment by segment (sentences/clauses, each with its own budget and loop guard, "
        "joined with short pauses); auto = on for --text-file, off for --text",
    )
    p.add_argument(
        "--non-streaming-mode",
        choices=["auto", "true", "false"],
        default="auto",
        help="text layout of the prompt (the reference's non_streaming_mode); auto = the method's default",
    )
    _add_run_args(p)
    p.set_defaults(run=_synthesize)

    p = sub.add_parser(
        "batch",
        help="many texts in, one audio file each + manifest.jsonl out; resumes after interruption",
        epilog=_RANDOM_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("--model", required=True, help=_MODEL_HELP)
    p.add_argument(
        "--input",
        required=True,
        help="texts.txt (one text per line) or items.jsonl "
        '({"id", "text", "speaker", "language", "instruct", "ref_audio", "ref_text", "x_vector_only"}); '
        "every item is checked before the first is synthesised",
    )
    p.add_argument("--out-dir", required=True, help="output folder: <id>.wav files, manifest.jsonl, batch.json")
    p.add_argument(
        "--batch-size", type=int, default=None, help="items per generation batch (default: the mesh's data size, or 1)"
    )
    p.add_argument("--format", choices=["wav", "flac"], default="wav")
    p.add_argument(
        "--long-form",
        action="store_true",
        help="speak each item segment by segment (see synthesize --long-form); the manifest says how each "
        "segment ended",
    )
    _add_voice_args(p, default="default for items without one: ")
    _add_run_args(p)
    p.set_defaults(run=_batch)

    p = sub.add_parser(
        "inspect", help="check a checkpoint folder against the key tables and print its parameter groups"
    )
    p.add_argument(
        "dir",
        help="model folder (config.json, model.safetensors[, speech_tokenizer/]), a speech tokenizer "
        "folder, or a folder written by convert",
    )
    p.set_defaults(run=_inspect)

    p = sub.add_parser(
        "convert",
        help="write a model folder's params as flattened Flax trees (params.safetensors) for "
        "other JAX code; not loadable by --model",
    )
    p.add_argument(
        "dir", help="model folder in the Hugging Face layout (config.json, model.safetensors, speech_tokenizer/)"
    )
    p.add_argument("out", help="new output folder (must not exist; its parent must)")
    p.add_argument(
        "--dtype",
        choices=["keep", "float32", "bfloat16", "float16"],
        default="keep",
        help="dtype of the written floats (keep: as stored)",
    )
    p.set_defaults(run=_convert)

    p = sub.add_parser(
        "save-random",
        help="write a random: model as a folder in the released layout (to try inspect, "
        "convert and --model DIR without a checkpoint)",
        epilog=_RANDOM_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("name", help="random:NAME (see below)")
    p.add_argument("out", help="new output folder (must not exist; its parent must)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="weight seed (the same seed gives the same weights as --model random:NAME --seed)",
    )
    p.set_defaults(run=_save_random)

    from qwen3tts_jax.server.cli import add_parser as add_serve_parser  # the speech server (qwen3tts_jax/server)

    add_serve_parser(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = warnings.showwarning
    warnings.showwarning = _show_warning  # one line, not a source location
    try:
        return args.run(args)
    except _INPUT_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        if getattr(args, "verbose", False):
            raise
        return 2
    except OSError as err:  # the system failed (disk full, I/O error): still one line, no traceback
        print(f"error: {err}", file=sys.stderr)
        if getattr(args, "verbose", False):
            raise
        return 1
    except KeyboardInterrupt:
        kept = (
            "finished items are kept; run the same command to resume"
            if args.command == "batch"
            else "nothing was written"
        )
        print(f"interrupted: {kept}", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":
    sys.exit(main())
