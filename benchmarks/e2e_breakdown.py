"""Where batch-8 `generate_custom_voice` time goes: admission, frame loop, streamed codec, and one
offline codec call over the same codes.

    .venv/bin/python benchmarks/e2e_breakdown.py [--model random:0.6b-customvoice]

bench.py's 8 texts and speaker, default sampling, EOS blocked (bench.py's `_no_eos`); for 10 and
64 frames, one timed run each after a warm-up of: the whole call; codes only (`audio=False`);
admission + 1 frame (`max_new_tokens=2`); `speech_tokenizer.decode` of the 8 code arrays. Prints
one JSON line. Timing does not belong in tests.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _timed(f):
    t = time.perf_counter()
    r = f()
    return round(time.perf_counter() - t, 2), r


def _row(model, bench, prompts, frames: int) -> dict:
    texts, speaker, language = bench.TEXTS_8, bench.SPEAKER, bench.LANGUAGE
    kw = dict(bench._no_eos(frames), seed=0)
    first = dict(kw, max_new_tokens=2, min_new_tokens=2)
    runs = {
        "e2e_s": lambda: model.generate_custom_voice(texts, speaker, language, **kw),
        "codes_only_s": lambda: model.run(model.requests(prompts, audio=False, **kw)),
        "admission_plus_1_frame_s": lambda: model.run(model.requests(prompts, audio=False, **first)),
    }
    row, results = {}, None
    for name, f in runs.items():
        f()  # warm-up (compiles)
        row[name], r = _timed(f)
        results = r if name == "codes_only_s" else results
    items = [{"audio_codes": r.codes} for r in results]
    model.speech_tokenizer.decode(items)
    row["offline_codec_decode_b8_s"], _ = _timed(lambda: model.speech_tokenizer.decode(items))
    row["streamed_codec_and_rest_s"] = round(row["e2e_s"] - row["codes_only_s"], 2)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="random:0.6b-customvoice")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    # bench.py by path: an installed package named `benchmarks` shadows this folder.
    spec = importlib.util.spec_from_file_location("bench", ROOT / "benchmarks" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from qwen3tts_jax import Qwen3TTSModel

    model = Qwen3TTSModel.from_pretrained(args.model)
    prompts = model.custom_voice_prompts(bench.TEXTS_8, bench.SPEAKER, bench.LANGUAGE)
    out: dict = {"model": args.model, "commit": bench._git(), "loadavg_start": os.getloadavg()}
    for frames in (10, 64):
        out[str(frames)] = _row(model, bench, prompts, frames)
    out["loadavg_end"] = os.getloadavg()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
