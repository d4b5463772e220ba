"""Long text, segmented (`long_form=True`) against one unsegmented call with the same total budget.

    .venv/bin/python benchmarks/long_form.py                       # full-size 0.6B CustomVoice, random weights
    .venv/bin/python benchmarks/long_form.py --model random:tiny   # a quick check

For a 2,000-character English text and a 1,000-character Chinese text: total time, time to first
audio of the streaming call, audio seconds, peak RSS, the segments and how each ended; then one
unsegmented call whose `max_new_tokens` is the sum of the segments' budgets (random weights rarely
sample EOS, so it runs to its budget: the worst case long text meets without segmentation).
Greedy, 2 CPU threads. Writes benchmarks/results/long_form.json. Timing does not belong in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

ENGLISH = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk, counting the steps as his father had "
    "taught him. There were one hundred and twelve of them, worn smooth in the middle by a century of boots. At the "
    "top he trimmed the wick, polished the great lens, and watched the beam sweep out across the water. Ships he "
    "would never meet passed in the dark, trusting the light to tell them where the rocks began. In the winter the "
    "storms came in from the west, and the whole tower hummed with the wind. He kept a logbook of every night: the "
    "weather, the ships, the hour the fog rolled in. Most entries were only a line or two. Some nights, though, he "
    "wrote for pages, about the sound of the sea, the birds that sheltered on the gallery, the strange green glow "
    "that sometimes rose from the waves. When the automated lamp arrived, the engineers told him he could retire. "
    "He thanked them, packed his books, and walked down the hundred and twelve steps for the last time. The light "
    "went on turning without him, as bright as ever, and the ships never knew the difference. But on clear "
    "evenings, from the window of his small cottage on the hill, he still watched the beam come round, and he "
    "still counted, quietly, one to twelve, the seconds between each flash. His neighbours thought him a little "
    "odd. The children of the village thought him wonderful, because he could tell them the name of every star "
    "and the story of every wreck along the coast. Years later, when the cottage was sold, the new owners found "
    "the logbooks stacked in a cupboard, forty-one of them, and in the last one a single line: the light is "
    "still turning, and that is enough."
)
CHINESE = (
    "清晨的薄雾笼罩着小镇，街道两旁的梧桐树还滴着昨夜的雨水。老王像往常一样推开了他那家小书店的门，把写着营业中的牌子挂在门口。"
    "这家书店已经开了整整三十年，见证了小镇从泥泞的土路变成宽阔的柏油马路。书架上摆满了各种各样的书，有泛黄的旧书，也有刚刚到货的新书。"
    "每天早上，总有几位老顾客准时出现，他们坐在靠窗的位置，一边喝茶，一边翻阅当天的报纸。孩子们放学后也喜欢来这里，挤在角落里看漫画，"
    "直到天黑才被父母叫回家。老王从不催促任何人，他总说，书是用来读的，不是用来卖的。有一年冬天，一场大雪压塌了书店的屋顶，"
    "许多珍贵的书都被雪水浸湿了。镇上的人们听说以后，纷纷赶来帮忙，有的搬书，有的修屋顶，还有的送来了热腾腾的饭菜。"
    "那天晚上，书店里挤满了人，大家围着炉火，把湿透的书一页一页地烘干。老王看着眼前的一切，眼眶湿润了。他说，这三十年来，"
    "他卖出去的不只是书，更是一份份温暖的记忆。如今，老王已经白发苍苍，书店交给了他的女儿打理。可他还是每天早上来到店里，"
    "坐在那张熟悉的藤椅上，静静地看着来来往往的人们。阳光透过玻璃窗洒在书架上，空气中弥漫着纸张和墨水的味道。"
    "对于小镇的人来说，这家书店早已不只是一个买书的地方，而是一个可以停下脚步、安放心灵的港湾。每当有人问起书店的未来，"
    "老王总是笑着说，只要还有人愿意读书，这盏灯就会一直亮着。"
)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="random:0.6b-customvoice")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "long_form.json"))
    ap.add_argument("--skip-unsegmented", action="store_true")
    ap.add_argument(
        "--texts",
        default="english_2000,chinese_1000",
        help="comma-separated subset of english_2000,chinese_1000 (the unsegmented English call: 47 min on 2 cores)",
    )
    args = ap.parse_args()
    # The stories told twice over, cut to the length asked for.
    english = (ENGLISH + "\n\n" + ENGLISH)[:2000]
    chinese = (CHINESE + "\n\n" + CHINESE)[:1000]
    texts = {"english_2000": (english, "english"), "chinese_1000": (chinese, "chinese")}
    chosen = args.texts.split(",")
    unknown = [n for n in chosen if n not in texts]
    if unknown:  # before the model loads
        ap.error(f"--texts: unknown name(s) {unknown}; choose from {sorted(texts)}")
    import jax

    from qwen3tts_jax import Qwen3TTSModel

    t = time.perf_counter()
    model = Qwen3TTSModel.from_pretrained(args.model)
    out = {
        "model": args.model,
        "jax": jax.__version__,
        "load_s": round(time.perf_counter() - t, 1),
        "loadavg_start": os.getloadavg(),
        "texts": {},
    }
    greedy = dict(do_sample=False, subtalker_dosample=False)
    for name in chosen:
        text, lang = texts[name]
        res: dict = {"characters": len(text)}
        t = time.perf_counter()
        wav, sr = model.generate_custom_voice(text, "ryan", language=lang, long_form=True, **greedy)
        res["segmented_offline_s"] = round(time.perf_counter() - t, 1)
        res["audio_s"] = round(len(wav[0]) / sr, 2)
        reps = model.last_long_form[0]
        res["segments"] = [
            {"chars": len(r.text), "frames": r.frames, "budget": r.max_new_tokens, "finish": r.finish_reason}
            for r in reps
        ]
        t = time.perf_counter()
        first = None
        for _ in model.stream_custom_voice(text, "ryan", language=lang, long_form=True, **greedy):
            first = first or time.perf_counter() - t
        res["segmented_stream_ttfa_s"] = round(first or 0.0, 2)
        res["segmented_stream_total_s"] = round(time.perf_counter() - t, 1)
        res["peak_rss_mb_after_segmented"] = round(_rss_mb())
        if not args.skip_unsegmented:
            budget = sum(r.max_new_tokens for r in reps)
            t = time.perf_counter()
            first = None
            for _ in model.stream_custom_voice(text, "ryan", language=lang, max_new_tokens=budget, **greedy):
                first = first or time.perf_counter() - t
            res["unsegmented_budget"] = budget
            res["unsegmented_stream_ttfa_s"] = round(first or 0.0, 2)
            res["unsegmented_total_s"] = round(time.perf_counter() - t, 1)
            res["unsegmented_frames"] = model.last_stream_stats.frames
            res["peak_rss_mb_after_unsegmented"] = round(_rss_mb())
        out["texts"][name] = res
        print(json.dumps({name: res}, ensure_ascii=False))
    out["loadavg_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
