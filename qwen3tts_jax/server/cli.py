"""`qwen3tts-jax serve`: the flags, and uvicorn running the app until SIGINT/SIGTERM.

No reference class. uvicorn owns the signals: on SIGINT/SIGTERM it stops accepting, lets open
responses finish for up to `--graceful-seconds`, then the app's lifespan stops the service
(queued and running requests are cancelled, the engine thread ends) and the process exits 0.
(uvicorn re-raises the signal to the handlers it found; ours only note it, so a clean shutdown
is exit status 0, not death by the signal or a KeyboardInterrupt traceback.)
A model that fails to load stops the server with exit status 2 and the reason in the log.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from qwen3tts_jax import compile_cache


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help="OpenAI-compatible speech server (/v1/audio/speech) with continuous batching")
    p.add_argument("--model", required=True, help="model folder, Hugging Face repo id, or random:<name>")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=8, help="requests generating at once (engine slots)")
    p.add_argument("--max-queue", type=int, default=32, help="requests waiting for a slot; more get 503")
    p.add_argument(
        "--max-input-tokens", type=int, default=512, help="longest input (and instructions, ref_text) in tokens"
    )
    p.add_argument(
        "--max-input-chars", type=int, default=20_000, help="longest input in characters (long form included)"
    )
    p.add_argument(
        "--long-form-default",
        default="auto",
        choices=["auto", "on", "off"],
        help="a request's long_form when it sends none (auto: cut inputs longer than one segment)",
    )
    p.add_argument(
        "--long-form-tokens",
        type=int,
        default=None,
        help="text tokens per long-form segment (default 80, within --max-input-tokens)",
    )
    p.add_argument(
        "--long-form-parallel", type=int, default=4, help="segments of one long-form request generating at once"
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=2048, help="largest frame budget a request may ask (the default)"
    )
    p.add_argument("--max-ref-seconds", type=float, default=30.0, help="longest reference audio (ref_audio, uploads)")
    p.add_argument("--chunk-frames", type=int, default=4, help="frames per streamed chunk")
    p.add_argument("--first-chunk-frames", type=int, default=1, help="frames in a stream's first chunk")
    p.add_argument("--voices-dir", default=None, help="folder of uploaded voices (safetensors); in memory when omitted")
    p.add_argument(
        "--mesh", default=None, help="run on a device mesh, e.g. data=4,model=2 (see qwen3tts_jax/sharding.py)"
    )
    p.add_argument("--cpu-devices", type=int, default=None, help="CPU only: split the host into N virtual devices")
    p.add_argument("--dtype", default=None, help="compute dtype: float32 (default) or bfloat16")
    p.add_argument("--seed", type=int, default=0, help="random:<name> models: the weights' seed")
    p.add_argument(
        "--graceful-seconds", type=float, default=5.0, help="on shutdown, how long open responses may finish"
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    compile_cache.add_arguments(p)  # a restart reads the warm-up's programs instead of compiling them
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    try:
        import uvicorn

        from qwen3tts_jax.server.app import create_app
        from qwen3tts_jax.server.service import SpeechService
    except ImportError as err:
        raise ValueError(f"serve needs the server extra: pip install 'qwen3tts-jax[serve]' ({err})") from None
    from qwen3tts_jax.server.settings import ServerConfig

    config = ServerConfig(
        model=args.model,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        max_input_tokens=args.max_input_tokens,
        max_input_chars=args.max_input_chars,
        long_form_default=args.long_form_default,
        long_form_tokens=args.long_form_tokens,
        long_form_parallel=args.long_form_parallel,
        max_new_tokens=args.max_new_tokens,
        max_ref_seconds=args.max_ref_seconds,
        chunk_frames=args.chunk_frames,
        first_chunk_frames=args.first_chunk_frames,
        voices_dir=args.voices_dir,
        mesh=args.mesh,
        dtype=args.dtype,
        seed=args.seed,
    )
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    if args.cpu_devices:
        import jax

        jax.config.update("jax_num_cpu_devices", args.cpu_devices)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    cache = compile_cache.enable(args.compile_cache, enabled=not args.no_compile_cache)  # before anything compiles
    logging.getLogger("qwen3tts_jax.server").info("compilation cache: %s", cache or "off")
    failed: list[str] = []
    server: uvicorn.Server | None = None

    def on_failure(reason: str) -> None:
        failed.append(reason)
        if server is not None:
            server.should_exit = True

    app = create_app(SpeechService(config), on_failure=on_failure)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            timeout_graceful_shutdown=args.graceful_seconds,
            access_log=False,
        )
    )
    received: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda number, frame: received.append(number))
    server.run()
    if received:
        logging.getLogger("qwen3tts_jax.server").info("stopped by %s", signal.Signals(received[0]).name)
    if failed:
        print(f"error: the server could not start: {failed[0]}", file=sys.stderr)
        return 2
    return 0 if server.started else 1
