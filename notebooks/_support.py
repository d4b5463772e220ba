"""Where the notebooks' models come from, and the reference (PyTorch, qwen-tts 0.1.1) side of
each comparison. No model code: tiny folders are built by the test suite's builders
(`tests/reference/`), and every number on the reference side comes from the official classes.

`model_dir(MODEL, variant)`: MODEL is a model folder or hub id (real weights), or None for a tiny
random-weight folder built from the reference classes (model + speech tokenizer + the real Qwen
text-tokenizer files), cached per process.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for p in (REPO / "tests" / "reference" / "stubs", REPO / "tests", REPO):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

GREEDY = dict(do_sample=False, subtalker_dosample=False)


@functools.cache
def tiny_model_dir(variant: str = "custom-0b6-gqa", seed: int = 0) -> Path:
    """A complete tiny released-layout folder (see tests/conftest.py `tiny_full_model`)."""
    from reference.codec_models import build_reference_tokenizer, codec_config_dict, save_reference_tokenizer
    from reference.models import TINY_VARIANTS, build_reference_model, config_dict, save_reference_model
    from reference.text_fixture import write_tokenizer_files

    torch_threads()
    folder = Path(tempfile.mkdtemp(prefix=f"qwen3tts-nb-{variant}-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # ~40 MB each; gone when the kernel exits
    save_reference_model(build_reference_model(config_dict(**TINY_VARIANTS[variant]), seed), folder)
    save_reference_tokenizer(build_reference_tokenizer(codec_config_dict(), seed), folder / "speech_tokenizer")
    write_tokenizer_files(folder)
    return folder


def model_dir(model: str | None, variant: str = "custom-0b6-gqa") -> Path:
    """The folder to compare on: `model` (folder or hub id) or a tiny one of `variant`."""
    if model is None:
        return tiny_model_dir(variant)
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model))


def torch_threads(n: int | None = None) -> None:
    import torch

    torch.set_num_threads(n or min(4, os.cpu_count() or 1))


# ------------------------------------------------------------------------------------------
# The reference side
# ------------------------------------------------------------------------------------------


def reference_model(folder: Path, dtype: str = "float32"):
    """The official `qwen_tts.Qwen3TTSModel` wrapper (eager attention: exact numerics)."""
    import torch
    from qwen_tts import Qwen3TTSModel as Reference

    return Reference.from_pretrained(str(folder), dtype=getattr(torch, dtype), attn_implementation="eager")


def reference_tokenizer(folder: Path):
    """The official `qwen_tts.Qwen3TTSTokenizer` of a speech_tokenizer folder."""
    from qwen_tts import Qwen3TTSTokenizer as Reference

    return Reference.from_pretrained(str(folder))


def reference_talker_states(ref_model, embeds, mask) -> dict:
    """Same keys as `qwen3tts_jax.parity.talker_hidden_states`, from the reference talker
    (`Qwen3TTSForConditionalGeneration`) with forward hooks on its decoder layers."""
    import numpy as np
    import torch

    talker = ref_model.talker
    dtype = next(talker.parameters()).dtype
    seen, hooks = {}, []
    for i, layer in enumerate(talker.model.layers):
        hooks.append(
            layer.register_forward_hook(
                lambda mod, args, out, i=i: seen.__setitem__(f"layer_{i}", (out[0] if isinstance(out, tuple) else out))
            )
        )
    try:
        with torch.no_grad():
            x = torch.from_numpy(np.asarray(embeds, np.float32)).to(dtype)
            out = talker(
                inputs_embeds=x, attention_mask=torch.from_numpy(np.asarray(mask)).long(), output_hidden_states=True
            )
    finally:
        for h in hooks:
            h.remove()
    res = {"embeddings": x}
    res.update(seen)
    res["norm"] = out.hidden_states[0][-1]
    res["logits"] = out.logits
    return {k: v.float().numpy() for k, v in res.items()}


def reference_codes(ref_api, requests, max_new_tokens: int):
    """Greedy codes of the official model for our `PromptRequest`s (one batch), list of (T, 16)."""
    import numpy as np
    import torch

    ids = [torch.tensor([r.text_ids]) for r in requests]
    instruct = [torch.tensor([r.instruct_ids]) if r.instruct_ids else None for r in requests]
    ref_ids = [torch.tensor([r.ref_text_ids]) if r.ref_text_ids else None for r in requests]
    speakers = [r.speaker for r in requests] if any(r.speaker for r in requests) else None
    prompts = None
    if any(r.speaker_embedding is not None for r in requests):
        prompts = dict(
            ref_code=[None if r.ref_code is None else torch.tensor(np.asarray(r.ref_code)) for r in requests],
            ref_spk_embedding=[torch.tensor(np.asarray(r.speaker_embedding, np.float32)) for r in requests],
            x_vector_only_mode=[r.ref_code is None for r in requests],
            icl_mode=[r.ref_code is not None for r in requests],
        )
    with torch.no_grad():
        codes, _ = ref_api.model.generate(
            input_ids=ids,
            instruct_ids=instruct if any(i is not None for i in instruct) else None,
            ref_ids=ref_ids if any(i is not None for i in ref_ids) else None,
            voice_clone_prompt=prompts,
            languages=[r.language for r in requests],
            speakers=speakers,
            non_streaming_mode=requests[0].non_streaming_mode,
            max_new_tokens=max_new_tokens,
            **GREEDY,
        )
    return [c.numpy() for c in codes]


def reference_decoder_stages(ref_tokenizer, codes) -> dict:
    """The official decoder's intermediate outputs for codes (b, 16, t), channels last, with the
    keys of our `Qwen3TTSTokenizerV2Decoder(..., stages=True)`."""
    import numpy as np
    import torch

    dec = ref_tokenizer.model.decoder
    nwc = lambda h: h.transpose(1, 2).float().numpy()
    out = {}
    with torch.no_grad():
        c = torch.from_numpy(np.asarray(codes)).long()
        q = dec.quantizer.decode(c)
        out["quantizer"] = nwc(q)
        h = dec.pre_conv(q)
        out["pre_conv"] = nwc(h)
        h = dec.pre_transformer(inputs_embeds=h.transpose(1, 2)).last_hidden_state.transpose(1, 2)
        out["pre_transformer"] = nwc(h)
        for i, blocks in enumerate(dec.upsample):
            for block in blocks:
                h = block(h)
            out[f"upsample_{i}"] = nwc(h)
        h = dec.decoder[0](h)
        for i, block in enumerate(dec.decoder[1:-2]):
            h = block(h)
            out[f"decoder_{i + 1}"] = nwc(h)
        out["waveform"] = dec(c)[:, 0].float().numpy()
    return out
