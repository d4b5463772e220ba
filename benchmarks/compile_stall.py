"""What a running stream sees when a request needing a new admission program joins: the longest
gap between its chunks, with that program compiled on the stepping thread (inline) or on the
compiler thread (`Engine.background_compile`, the default under an `EngineLoop`).

    .venv/bin/python benchmarks/compile_stall.py --model DIR|random:tiny [--frames 64] [--reps 2]

Each mode runs in its own fresh process (nothing compiled, no persistent cache), alternating,
`--reps` times. In a process: an `EngineLoop` over a 2-slot engine streaming audio one frame a
chunk; warm-up (not timed): every codec push shape ahead of time, then two copies of request A
together and A alone (A's admissions and both advances); then, timed: A streams `--frames`
frames, and after its `--join-after`-th chunk request B arrives, whose prompt (a long text) is in
a prompt bucket nothing has compiled yet. Figures: A's longest gap between chunks and its
median, B's time to first audio, A's total time. Prints one JSON line per process and a summary
line; timing does not belong in tests.

`--behind`: a 3-slot engine (warm-up: three copies of A together, then A alone), and request C,
a copy of A (its programs exist), submitted two chunks of A after B (B has been taken by a step;
submitted together, one step would take both as one group): C's time to first audio shows
whether C waits behind B's compile or comes in beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LONG_TEXT = (
    "A newcomer with a long text arrives while the first stream is playing: its prompt lands in a "
    "prompt bucket that no admission has been compiled for, so its program has to be built first."
)


def _one(args) -> dict:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench import SPEAKER, TEXT_1, _no_eos

    from qwen3tts_jax import Qwen3TTSModel
    from qwen3tts_jax.engine import Engine, EngineLoop, EngineShape

    model = Qwen3TTSModel.from_pretrained(args.model)
    prompts = model.custom_voice_prompts([TEXT_1, LONG_TEXT], SPEAKER, "english")
    a, b = (model.requests([p], seed=0, **_no_eos(args.frames))[0] for p in prompts)
    slots = 3 if args.behind else 2
    engine = Engine(
        model,
        EngineShape.fit([a, b], model.config, model.placement, slots=slots),
        chunk_frames=1,
        first_chunk_frames=1,
        background_compile=args.mode == "background",
    )
    loop = EngineLoop(engine).start()
    try:
        engine.codec.compile()
        for h in [loop.submit(a) for _ in range(slots)]:
            h.result()
        loop.submit(a).result()
        times: list[float] = []
        joined: list = []

        def read(handle):
            for _ in handle:
                times.append(time.perf_counter())
                if len(times) == args.join_after:
                    joined.append(loop.submit(b))
                if args.behind and len(times) == args.join_after + 2:  # B taken by a step (held)
                    joined.append(loop.submit(a))

        ha = loop.submit(a)
        reader = threading.Thread(target=read, args=(ha,))
        reader.start()
        reader.join()
        ra, rb = ha.result(), joined[0].result()
        rc = joined[1].result() if args.behind else None
    finally:
        loop.stop()
    gaps = [t1 - t0 for t0, t1 in zip(times, times[1:])]
    return {
        "mode": args.mode,
        "model": args.model,
        "frames": args.frames,
        "a_chunks": len(times),
        "a_max_gap_s": round(max(gaps), 3),
        "a_median_gap_s": round(statistics.median(gaps), 4),
        "a_gaps_over_0.5s": sum(g > 0.5 for g in gaps),
        "a_total_s": round(ra.total_time, 2),
        "b_ttfa_s": round(rb.time_to_first_audio, 3),
        "b_codes_frames": len(rb.codes),
        **({"c_ttfa_s": round(rc.time_to_first_audio, 3)} if rc is not None else {}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="random:tiny")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--join-after", type=int, default=8, help="A's chunks before B is submitted")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--behind", action="store_true", help="request C (programs compiled) right after B")
    ap.add_argument("--modes", default="inline,background", help="which modes to run, comma-separated")
    ap.add_argument("--mode", choices=("inline", "background"), help="one process's run (internal)")
    args = ap.parse_args()
    if args.mode:
        print(json.dumps(_one(args)), flush=True)
        return
    modes = args.modes.split(",")
    if not modes or not set(modes) <= {"inline", "background"}:
        ap.error(f"--modes: a comma-separated subset of inline,background, got {args.modes!r}")
    rows = []
    for _ in range(args.reps):
        for mode in modes:
            cmd = [sys.executable, __file__, "--model", args.model, "--frames", str(args.frames)]
            cmd += ["--join-after", str(args.join_after), "--mode", mode] + ["--behind"] * args.behind
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    summary = {
        mode: {
            key: statistics.median(r[key] for r in rows if r["mode"] == mode)
            for key in ("a_max_gap_s", "a_median_gap_s", "a_total_s", "b_ttfa_s") + ("c_ttfa_s",) * args.behind
        }
        for mode in modes
    }
    print(json.dumps({"summary": summary}))


if __name__ == "__main__":
    main()
