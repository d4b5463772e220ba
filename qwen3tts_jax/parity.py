"""Numerical comparison helpers for the notebooks, the bf16 bounds and the device check:
per-layer states of our modules and error statistics. No torch here; the reference side lives in
`notebooks/_support.py`.

`talker_hidden_states` returns what the reference's `Qwen3TTSTalkerModel.forward(...,
output_hidden_states=True)` exposes (the input embeddings, then each decoder layer's output, then
the final norm), read from our own modules with Flax's `capture_intermediates` — no second
implementation of the stack.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from qwen3tts_jax.config import Policy, Qwen3TTSConfig
from qwen3tts_jax.nn.transformer import DecoderLayer
from qwen3tts_jax.talker import Talker, talker_cache


def talker_hidden_states(
    cfg: Qwen3TTSConfig, policy: Policy, talker_params: dict, embeds, mask
) -> dict[str, np.ndarray]:
    """{"embeddings", "layer_0" … "layer_{L-1}" (each decoder layer's output, before the final
    norm), "norm" (the last hidden state), "logits" (fp32)} for a prefill of `embeds` (b, t, d).
    Needs per-layer params (`Policy.scan_layers=False`)."""
    if policy.scan_layers:
        raise ValueError("talker_hidden_states: use per-layer params (Policy(scan_layers=False))")
    talker = Talker(cfg.talker, policy)
    b, t, _ = embeds.shape

    def run(p, x, m):
        (hidden, _), state = talker.apply(
            {"params": p},
            x,
            m,
            talker_cache(cfg.talker, policy, b, t),
            capture_intermediates=lambda mdl, _: isinstance(mdl, DecoderLayer),
            mutable=["intermediates"],
        )
        logits = talker.apply({"params": p}, hidden, method=Talker.logits)
        return hidden, logits, state["intermediates"]

    hidden, logits, inter = jax.jit(run)(talker_params, jnp.asarray(embeds, policy.dtype), jnp.asarray(mask))
    out = {"embeddings": np.asarray(jnp.asarray(embeds, policy.dtype), np.float32)}
    for i in range(cfg.talker.transformer.num_hidden_layers):
        out[f"layer_{i}"] = np.asarray(inter["model"][f"layers_{i}"]["__call__"][0][0], np.float32)
    out["norm"] = np.asarray(hidden, np.float32)
    out["logits"] = np.asarray(logits, np.float32)
    return out


def error_stats(ours, ref) -> dict[str, float]:
    """max |ours − ref| and that relative to max |ref| (the scale-free number to plot)."""
    a, r = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if a.shape != r.shape:
        raise ValueError(f"error_stats: shapes differ {a.shape} vs {r.shape}")
    err = float(np.max(np.abs(a - r))) if a.size else 0.0
    scale = float(np.max(np.abs(r))) if r.size else 0.0
    return {"max_abs": err, "relative": err / scale if scale else float("nan")}


def topk_agreement(ours, ref, k: int) -> float:
    """Fraction of rows (last axis = vocabulary) whose top-k id *sets* agree."""
    a, r = np.asarray(ours).reshape(-1, np.shape(ours)[-1]), np.asarray(ref).reshape(-1, np.shape(ref)[-1])
    ta, tr = np.argsort(-a, axis=-1)[:, :k], np.argsort(-r, axis=-1)[:, :k]
    return float(np.mean([set(x) == set(y) for x, y in zip(ta, tr)]))


def row_relative_error(ours, ref) -> np.ndarray:
    """Per row (last axis = vocabulary): ‖ours − ref‖₂ / ‖ref‖₂ — the bf16 bound's measure of a
    logit vector (scale-free, dominated by the large logits that decide sampling)."""
    a, r = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if a.shape != r.shape:
        raise ValueError(f"row_relative_error: shapes differ {a.shape} vs {r.shape}")
    a, r = a.reshape(-1, a.shape[-1]), r.reshape(-1, r.shape[-1])
    return np.linalg.norm(a - r, axis=-1) / np.maximum(np.linalg.norm(r, axis=-1), 1e-30)


def snr_db(ours, ref) -> float:
    """Signal-to-noise ratio of `ours` against `ref` (waveforms): 10·log10(Σref² / Σ(ours−ref)²)."""
    a, r = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if a.shape != r.shape:
        raise ValueError(f"snr_db: shapes differ {a.shape} vs {r.shape}")
    noise = float(np.sum((a - r) ** 2))
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(r**2) / noise))


def code_agreement(ours, ref) -> np.ndarray:
    """Per-codebook fraction of identical codes for (t, q) code arrays of equal shape."""
    a, r = np.asarray(ours), np.asarray(ref)
    if a.shape != r.shape:
        raise ValueError(f"code_agreement: shapes differ {a.shape} vs {r.shape}")
    return (a == r).mean(axis=0)


def spectrogram(wav, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """log10 magnitude STFT (frequency × frames), Hann window; for plots only."""
    w = np.asarray(wav, np.float64)
    if len(w) < n_fft:
        w = np.pad(w, (0, n_fft - len(w)))
    frames = np.lib.stride_tricks.sliding_window_view(w, n_fft)[::hop] * np.hanning(n_fft)
    return np.log10(np.abs(np.fft.rfft(frames, axis=-1)).T + 1e-6)


def decoder_stages(tokenizer, codes) -> dict[str, np.ndarray]:
    """Our codec decoder's intermediate outputs (channels last) and waveform for codes
    (b, 16, t), one unchunked forward: the keys of `Qwen3TTSTokenizerV2Decoder(..., stages=True)`
    plus "waveform". `tokenizer` is a `Qwen3TTSTokenizer`."""
    from qwen3tts_jax.codec.decoder import Qwen3TTSTokenizerV2Decoder

    module = Qwen3TTSTokenizerV2Decoder(tokenizer.config.decoder, tokenizer.policy)
    wav, seen = jax.jit(lambda p, c: module.apply({"params": p}, c, stages=True))(
        tokenizer.params["decoder"], jnp.asarray(codes, jnp.int32)
    )
    out = {k: np.asarray(v, np.float32) for k, v in seen.items()}
    out["waveform"] = np.asarray(wav, np.float32)
    return out
