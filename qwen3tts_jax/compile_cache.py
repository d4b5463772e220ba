"""JAX's persistent compilation cache for the command line and the server, and a count of what
each run compiled.

Every process otherwise compiles its prefill, frame loop and codec programs from scratch (tens
of seconds before the first audio). With the cache on, a second run of the same model and shapes
loads the compiled programs from disk instead. Where the cache lives, in order:

1. `--compile-cache DIR` (the CLI flag), or `enable(DIR)`;
2. the `QWEN3TTS_COMPILE_CACHE` environment variable (`0`, `off` or empty: no cache);
3. `JAX_COMPILATION_CACHE_DIR` if the user already points JAX at a cache;
4. `$XDG_CACHE_HOME/qwen3tts-jax/xla`, or `~/.cache/qwen3tts-jax/xla`.

`--no-compile-cache` (or `QWEN3TTS_COMPILE_CACHE=off`) turns it off. Every program is cached,
however small or quick to compile (JAX's defaults skip programs compiling in under a second,
which on a small model is most of them).

`CompileStats` counts, from `jax.monitoring` events, the programs a run needed, how many came
from the cache and how many were compiled; the CLI prints it with `--verbose`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

ENV = "QWEN3TTS_COMPILE_CACHE"
_OFF = ("", "0", "off", "false", "no", "none")

# jax.monitoring event names (jax/_src/dispatch.py, jax/_src/compiler.py): one duration event per
# program that needed an executable (compiled or read from the cache), one event per cache hit.
_PROGRAM_EVENT = "/jax/core/compile/backend_compile_duration"
_HIT_EVENT = "/jax/compilation_cache/cache_hits"


def default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "qwen3tts-jax" / "xla"


def resolve_dir(path: str | os.PathLike | None = None, enabled: bool = True) -> Path | None:
    """The cache folder the rules above choose (None: no cache)."""
    if not enabled:
        return None
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get(ENV)
    if env is not None:
        return None if env.strip().lower() in _OFF else Path(env).expanduser()
    jax_env = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if jax_env:
        return Path(jax_env).expanduser()
    return default_dir()


def add_arguments(group) -> None:
    """`--compile-cache DIR` and `--no-compile-cache` on an argparse parser or group (the commands
    that compile: synthesize, batch, serve); `enable(args.compile_cache, enabled=not
    args.no_compile_cache)` applies them."""
    group.add_argument(
        "--compile-cache",
        metavar="DIR",
        default=None,
        help="persistent compilation cache folder (default: $QWEN3TTS_COMPILE_CACHE, else "
        "$JAX_COMPILATION_CACHE_DIR, else $XDG_CACHE_HOME/qwen3tts-jax/xla or ~/.cache/qwen3tts-jax/xla)",
    )
    group.add_argument("--no-compile-cache", action="store_true", help="compile everything afresh, write no cache")


def enable(path: str | os.PathLike | None = None, enabled: bool = True) -> Path | None:
    """Point JAX's persistent compilation cache at `resolve_dir(path, enabled)`; returns it.

    Call before the first compilation. A folder that cannot be created is an error naming it
    (a cache that silently does nothing would look like a slow machine)."""
    import jax

    folder = resolve_dir(path, enabled)
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PermissionError(
            f"compilation cache {folder}: cannot create it ({err.strerror or err}); choose another "
            f"folder with --compile-cache DIR or {ENV}=DIR, or turn it off with --no-compile-cache"
        ) from err
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # -1: no size floor, no override
    return folder


@dataclasses.dataclass
class CompileStats:
    """Programs needed since `start()` (or construction): `from_cache` were read from the
    persistent cache, `compiled` were compiled here; `seconds` is the time spent on both."""

    programs: int = 0
    from_cache: int = 0
    seconds: float = 0.0

    @property
    def compiled(self) -> int:
        return self.programs - self.from_cache

    def summary(self) -> str:
        return (
            f"{self.programs} programs: {self.from_cache} from the persistent cache, {self.compiled} compiled, "
            f"{self.seconds:.1f} s"
        )


class CompileCounter:
    """Counts compilation events while alive (listeners cannot be removed from jax.monitoring,
    so one process-wide counter is registered once and read by difference)."""

    _total = CompileStats()
    _registered = False

    def __init__(self):
        import jax.monitoring

        if not CompileCounter._registered:
            jax.monitoring.register_event_listener(CompileCounter._on_event)
            jax.monitoring.register_event_duration_secs_listener(CompileCounter._on_duration)
            CompileCounter._registered = True
        self._start = dataclasses.replace(CompileCounter._total)

    @staticmethod
    def _on_event(event: str, **kwargs) -> None:
        if event == _HIT_EVENT:
            CompileCounter._total.from_cache += 1

    @staticmethod
    def _on_duration(event: str, duration: float, **kwargs) -> None:
        if event == _PROGRAM_EVENT:
            CompileCounter._total.programs += 1
            CompileCounter._total.seconds += duration

    def stats(self) -> CompileStats:
        t, s = CompileCounter._total, self._start
        return CompileStats(t.programs - s.programs, t.from_cache - s.from_cache, t.seconds - s.seconds)
