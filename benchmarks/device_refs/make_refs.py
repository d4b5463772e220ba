"""Make `tiny_custom_voice.npz`: the official PyTorch classes' outputs for the device check's tiny
parity case, computed on CPU (the device machine has no qwen-tts).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/device_refs/make_refs.py

The weights are not stored (the tiny model's text embedding alone is 29 MB): both sides draw them
from the same numpy seed (`device_check.tensor_dicts`), and the npz keeps their fingerprint so a
machine whose numpy draws differently is told so instead of failing parity. Stored: the case
(`device_check.CASE`), the inputs (talker embeddings and mask, cached-step inputs, predictor
states and codes, codec codes) and the reference outputs (talker prefill and step logits,
predictor teacher-forced logits, greedy codes per item, codec waveforms), all small.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(HERE.parent), str(ROOT), str(ROOT / "tests")]

import device_check as dc  # noqa: E402


def reference_models(model_cfg: dict, codec_cfg: dict, model_t: dict, codec_t: dict):
    """The official model and tokenizer (fp32, eager attention) holding exactly these tensors."""
    import torch
    from reference.codec_models import build_reference_tokenizer
    from reference.models import build_reference_model

    from qwen3tts_jax.codec.weights import CODEC_IGNORED
    from qwen3tts_jax.weights import MODEL_IGNORED

    def load(module, tensors: dict, what: str, ignored):
        state = module.state_dict()
        # Keys our loader ignores (unused by the computations compared) keep the builder's values.
        missing = sorted(k for k in state if k not in tensors and not any(re.fullmatch(p, k) for p in ignored))
        unknown = sorted(k for k in tensors if k not in state)
        params = {k for k, _ in module.named_parameters()}
        if unknown or any(k in params for k in missing):
            raise AssertionError(
                f"{what}: tensors not in the reference {unknown[:5]}, parameters left unset "
                f"{[k for k in missing if k in params][:5]}"
            )
        if missing:
            print(f"{what}: buffers left as built (not in the key table): {missing}")
        module.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, strict=False)
        return module.float().eval()

    model = load(build_reference_model(model_cfg, 0), model_t, "model", MODEL_IGNORED)
    codec = load(build_reference_tokenizer(codec_cfg, 0), codec_t, "speech tokenizer", CODEC_IGNORED)
    return model, codec


def main() -> None:
    import torch
    from reference.talker_steps import reference_talker_hidden, reference_talker_logits

    from qwen3tts_jax import Qwen3TTSModel

    torch.set_num_threads(2)
    case = dc.CASE
    model_cfg, codec_cfg, model_t, codec_t = dc.tensor_dicts(case["seed"])
    ref, codec = reference_models(model_cfg, codec_cfg, model_t, codec_t)
    rng = np.random.RandomState(2026)
    d = model_cfg["talker_config"]["hidden_size"]
    out: dict = {"case": np.array(json.dumps(case)), "fingerprint": np.array(dc.fingerprint(model_t, codec_t))}

    # Talker: a batch-2 prefill (row 1 left-padded by 3) then 4 cached steps, as in tests/test_talker.py.
    x = rng.randn(2, 9, d).astype(np.float32)
    mask = np.ones((2, 9), bool)
    mask[1, :3] = False
    x[1, :3] = 0.0
    steps = rng.randn(4, 2, 1, d).astype(np.float32)
    logits = reference_talker_logits(ref, reference_talker_hidden(ref, x, mask, steps))
    prefill, stepped = logits[0], [w[:, 0] for w in logits[1:]]
    out.update(
        talker_x=x,
        talker_mask=mask,
        talker_steps=steps,
        talker_prefill_logits=prefill.astype(np.float32),
        talker_step_logits=np.stack(stepped).astype(np.float32),
    )

    # Code predictor: the 15 teacher-forced logit sets of 2 frames.
    past_h = rng.randn(2, d).astype(np.float32)
    codes = rng.randint(0, 2048, (2, 16))
    with torch.no_grad():
        logits, _ = ref.talker.forward_sub_talker_finetune(torch.tensor(codes), torch.tensor(past_h))
    out.update(predictor_past=past_h, predictor_codes=codes, predictor_logits=logits.numpy().astype(np.float32))

    # Greedy codes through the reference's generate, prompts built by our API's request builder.
    with tempfile.TemporaryDirectory() as tmp:
        folder, _ = dc.write_tiny_folder(Path(tmp) / "tiny", case["seed"])
        ours = Qwen3TTSModel.from_pretrained(folder)
        reqs = dc.greedy_requests(ours)
    with torch.no_grad():
        greedy, _ = ref.generate(
            input_ids=[torch.tensor([r.text_ids]) for r in reqs],
            languages=[r.language for r in reqs],
            speakers=[r.speaker for r in reqs],
            non_streaming_mode=True,
            max_new_tokens=case["greedy_max_new_tokens"],
            do_sample=False,
            subtalker_dosample=False,
        )
    for i, c in enumerate(greedy):
        out[f"greedy_codes_{i}"] = c.numpy().astype(np.int64)

    # Codec: 2 × 24 frames through the reference decoder's chunked decode.
    ccodes = rng.randint(0, 2048, (2, 16, 24))
    with torch.no_grad():
        wave = codec.decoder.chunked_decode(torch.from_numpy(ccodes)).numpy()[:, 0]
    out.update(codec_codes=ccodes, codec_wave=wave.astype(np.float32))

    path = HERE / "tiny_custom_voice.npz"
    np.savez_compressed(path, **out)
    print(
        f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB): greedy frames {[len(c) for c in greedy]}, "
        f"codec rms {wave.std():.3f}, clamped {np.mean(np.abs(wave) >= 1):.3f}"
    )


if __name__ == "__main__":
    main()
