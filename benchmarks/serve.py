"""Load test of `qwen3tts-jax serve`: c concurrent streaming clients with staggered arrivals.

    .venv/bin/python benchmarks/serve.py                        # c = 1, 8, 32 on random:0.6b-customvoice
    .venv/bin/python benchmarks/serve.py --concurrency 1,8 --frames 40
    .venv/bin/python benchmarks/serve.py --url http://127.0.0.1:8000   # against a server already running

Starts the server (unless `--url`) as `qwen3tts-jax serve` in a subprocess with `--max-batch`
slots and room for every client in the queue, waits for /health, then for each concurrency c:

1. a warm-up pass with the same pattern (not measured): the engine compiles one admission
   program per (group size, prompt bucket) on first use, and the measured pass should see the
   steady state, not those compiles (their cost is the warm-up pass's wall time, recorded);
2. the measured pass: client i arrives at i · `--stagger` seconds and streams
   `stream_format=audio`, `response_format=pcm` (s16le 24 kHz) of the same text (one prompt
   bucket), sampled with its own seed, `max_new_tokens = --frames + 1` (random weights rarely
   stop early, so each stream is about `--frames` frames = frames / 12.5 s of audio).

Per stream (client side, through HTTP): time to first audio (request sent → first PCM bytes),
whether it underran — after the first chunk a player starts; the stream underran if any later
chunk arrived after the audio received before it had finished playing — and its audio seconds.
Per pass: TTFA p50/p95, aggregate audio-seconds per wall second (all streams' audio / first
request to last end), the underrun fraction, and the server's /metrics at the end. Writes
`--out` (JSON) and prints a markdown table; the machine and its load are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from bench import _git, _machine  # the run's commit and machine, as bench.py records them (this folder is sys.path[0])

ROOT = Path(__file__).resolve().parent.parent
TEXT = "The quick brown fox jumps over the lazy dog, and the server keeps every stream flowing."
BYTES_PER_SECOND = 2 * 24000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stream(url: str, body: dict, t0: float, out: dict) -> None:
    """One client: send at once, record every chunk's arrival (seconds since t0) and size."""
    arrivals, sizes = [], []
    sent = time.perf_counter()
    try:
        with httpx.Client(timeout=3600) as client, client.stream("POST", f"{url}/v1/audio/speech", json=body) as r:
            if r.status_code != 200:
                r.read()
                out.update(error=f"{r.status_code}: {r.text[:200]}")
                return
            for piece in r.iter_raw():
                if piece:
                    arrivals.append(time.perf_counter())
                    sizes.append(len(piece))
    except httpx.HTTPError as err:
        out.update(error=f"{type(err).__name__}: {err}")
        return
    end = time.perf_counter()
    if not arrivals:
        out.update(error="no audio")
        return
    received = np.cumsum([0] + sizes[:-1]) / BYTES_PER_SECOND  # audio seconds received before each chunk
    played = np.asarray(arrivals) - arrivals[0]  # a player started at the first chunk needs this much by then
    late = np.maximum(played - received, 0.0)
    out.update(
        sent=sent - t0,
        ttfa=arrivals[0] - sent,
        end=end - t0,
        audio_s=sum(sizes) / BYTES_PER_SECOND,
        underran=bool((late[1:] > 1e-3).any()),
        worst_gap_s=float(late.max()),
        chunks=len(sizes),
    )


def run_pass(url: str, c: int, stagger: float, frames: int, seed0: int) -> dict:
    outs = [dict() for _ in range(c)]
    t0 = time.perf_counter()

    def client(i: int) -> None:
        time.sleep(i * stagger)
        body = {
            "input": TEXT,
            "stream": True,
            "stream_format": "audio",
            "response_format": "pcm",
            "seed": seed0 + i,
            "max_new_tokens": frames + 1,
        }
        _stream(url, body, t0, outs[i])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = [o for o in outs if "error" not in o]
    errors = [o["error"] for o in outs if "error" in o]
    if not ok:
        return {"c": c, "errors": errors}
    ttfa = np.array([o["ttfa"] for o in ok])
    wall = max(o["end"] for o in ok) - min(o["sent"] for o in ok)
    audio = sum(o["audio_s"] for o in ok)
    return {
        "c": c,
        "streams": len(ok),
        "errors": errors,
        "ttfa_p50_s": float(np.percentile(ttfa, 50)),
        "ttfa_p95_s": float(np.percentile(ttfa, 95)),
        "audio_s_per_s": audio / wall,
        "wall_s": wall,
        "audio_s": audio,
        "underrun_fraction": sum(o["underran"] for o in ok) / len(ok),
        "per_stream_rt": float(np.median([o["audio_s"] / (o["end"] - o["sent"]) for o in ok])),
        "worst_gap_p50_s": float(np.median([o["worst_gap_s"] for o in ok])),
    }


def _metrics(url: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        for s in fam.samples:
            if s.name in (
                "qwen3tts_frames_total",
                "qwen3tts_audio_seconds_total",
                "qwen3tts_requests_total",
                "qwen3tts_time_to_first_audio_seconds_sum",
                "qwen3tts_preempted_segments_total",
                "qwen3tts_time_to_first_audio_seconds_count",
            ):
                key = s.name + ("{" + ",".join(f"{k}={v}" for k, v in s.labels.items()) + "}" if s.labels else "")
                out[key] = s.value
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="random:0.6b-customvoice")
    p.add_argument("--url", default=None, help="a running server (default: start one)")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=40, help="frames per stream (12.5 per audio second)")
    p.add_argument("--stagger", type=float, default=0.5, help="seconds between arrivals")
    p.add_argument("--no-warmup-pass", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve.json"))
    args = p.parse_args(argv)
    levels = [int(x) for x in args.concurrency.split(",")]
    proc, url, started = None, args.url, time.perf_counter()
    if url is None:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [
            sys.executable,
            "-m",
            "qwen3tts_jax.cli",
            "serve",
            "--model",
            args.model,
            "--port",
            str(port),
            "--max-batch",
            str(args.max_batch),
            "--max-queue",
            str(max(levels)),
            "--max-input-tokens",
            "128",
            "--max-new-tokens",
            str(args.frames + 1),
            "--max-ref-seconds",
            "1",
        ]
        log = open(Path(tempfile.gettempdir()) / "qwen3tts-serve-bench.server.log", "w")  # the server's own log
        proc = subprocess.Popen(cmd, cwd=ROOT, stderr=log, stdout=log, env={**os.environ, "PYTHONPATH": str(ROOT)})
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "commit": _git(),
        "machine": _machine(),
        "model": args.model,
        "max_batch": args.max_batch,
        "frames": args.frames,
        "stagger_s": args.stagger,
        "text": TEXT,
        "loadavg_start": os.getloadavg(),
        "levels": [],
    }
    try:
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=10).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc is not None and proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}; see {log.name}")
            time.sleep(2)
        result["server_ready_s"] = time.perf_counter() - started
        print(f"server ready after {result['server_ready_s']:.0f} s", flush=True)
        for c in levels:
            entry = {"c": c}
            if not args.no_warmup_pass:
                t = time.perf_counter()
                entry["warmup_pass"] = run_pass(url, c, args.stagger, args.frames, seed0=10_000)
                entry["warmup_pass_wall_s"] = time.perf_counter() - t
            entry.update(run_pass(url, c, args.stagger, args.frames, seed0=0))
            entry["loadavg"] = os.getloadavg()
            result["levels"].append(entry)
            print(json.dumps({k: v for k, v in entry.items() if k != "warmup_pass"}), flush=True)
        result["server_metrics"] = _metrics(url)
    finally:
        result["loadavg_end"] = os.getloadavg()
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
            result["server_exit"] = proc.returncode
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    print(table(result))
    return 0


def table(r: dict) -> str:
    m = r["machine"]
    lines = [
        f"{r['model']}, {r['max_batch']} slots, {r['frames']} frames per stream, arrivals every {r['stagger_s']} s; "
        f"{m['cpu']}, {m['cores']} cores, load average {r['loadavg_start'][0]:.1f}→{r['loadavg_end'][0]:.1f}; "
        f"{r['date']}, commit {r['commit']}; server ready after {r.get('server_ready_s', 0):.0f} s.",
        "",
        "| c | streams | TTFA p50 (s) | TTFA p95 (s) | audio-s/s (aggregate) | per-stream ×RT (median) | underrun "
        "fraction "
        "| warm-up pass wall (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in r["levels"]:
        if "ttfa_p50_s" not in e:
            lines.append(f"| {e['c']} | 0 | – | – | – | – | – | errors: {e.get('errors')} |")
            continue
        lines.append(
            f"| {e['c']} | {e['streams']} | {e['ttfa_p50_s']:.2f} | {e['ttfa_p95_s']:.2f} | {e['audio_s_per_s']:.3f} "
            f"| {e['per_stream_rt']:.3f} | {e['underrun_fraction']:.2f} | {e.get('warmup_pass_wall_s', 0):.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
