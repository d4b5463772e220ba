"""Compiled decoding: jitted prefill, a jitted frame step, and the `lax.while_loop` decode.

Mirrors the decoding half of `Qwen3TTSForConditionalGeneration.generate` →
`Qwen3TTSTalkerForConditionalGeneration.generate` (HF `GenerationMixin._sample`) and, inside each
talker step, `code_predictor.generate` (15 tokens).

One frame step, all inside one XLA computation (no host round-trip per codebook):
    codebooks 1..15 of the current frame from the code predictor (fresh 16-slot cache)
    → write the frame's 16 codes
    → next talker input = Σ of the 16 codebook embeddings + the text track (trailing[step] or tts_pad)
    → one talker step on the donated KV cache → codec_head → penalty / min-tokens / suppression /
      warpers → codebook 0 of the next frame.
Frame bookkeeping as the reference: the prefill samples codebook 0 of frame 0; the last sampled
token (EOS or the `max_new_tokens`-th) is never expanded, so M tokens give M−1 frames; rows that
finished keep being fed EOS and are cut at their first EOS frame by `frames_of`.

Shapes are static per bucket (prompt length, text-track length, cache slots, frame budget), so
requests of different lengths within a bucket reuse one compilation; `max_new_tokens` itself is a
traced bound of the while loop, so streaming runs the same loop chunk by chunk (a bound a few
frames past the current one).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from qwen3tts_jax import sampling
from qwen3tts_jax.code_predictor import CodePredictor, embed_codes, head_logits, predictor_cache
from qwen3tts_jax.config import Policy, Qwen3TTSConfig
from qwen3tts_jax.nn.linear import linear
from qwen3tts_jax.nn.transformer import DecoderCache, init_cache
from qwen3tts_jax.prompt import codebook_tables, sum_codebook_embeddings
from qwen3tts_jax.sampling import SamplingConfig
from qwen3tts_jax.talker import Talker
from qwen3tts_jax.typing import Array, Bool, Float, Int, PRNGKey

# Incremented whenever one of the jitted entry points is traced: tests count compilations with it.
TRACE_COUNTS: dict[str, int] = {"prefill": 0, "decode": 0}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DecodeState:
    """Everything the frame loop carries; an explicit pytree, no hidden state."""

    cache: DecoderCache  # the talker's KV cache
    token: Int[Array, "b"]  # codebook 0 of the frame to expand next
    hidden: Float[Array, "b d"]  # talker hidden (after norm) at the position that produced `token`
    seen: Bool[Array, "b v"]  # codebook-0 tokens generated so far (repetition penalty)
    finished: Bool[Array, "b"]  # row has sampled EOS
    codes: Int[Array, "b f q"]  # frames written so far (frame i at index i)
    num_tokens: Int[Array, ""]  # codebook-0 tokens sampled so far (1 after prefill)
    key: PRNGKey


@dataclasses.dataclass(frozen=True)
class Decoder:
    """The static half of decoding: configs and policy (hashable, a static jit argument)."""

    cfg: Qwen3TTSConfig
    policy: Policy
    sampling: SamplingConfig

    @property
    def talker(self) -> Talker:
        return Talker(self.cfg.talker, self.policy)

    @property
    def predictor(self) -> CodePredictor:
        return CodePredictor(self.cfg.talker, self.policy)

    @property
    def num_groups(self) -> int:
        return self.cfg.talker.num_code_groups

    # -- pieces ---------------------------------------------------------------------------

    def sample_first(self, params, hidden, seen, num_tokens, key):
        logits = self.talker.apply({"params": params}, hidden, method=Talker.logits)
        return sampling.sample_talker(logits, seen, num_tokens, key, self.sampling.talker)

    def residual_codes(self, params, past_hidden: Float[Array, "b d"], e0: Float[Array, "b d"], key) -> Int[Array, "b n"]:
        """Codebooks 1..15 of one frame: a 2-token prefill then 14 cached single steps.

        The 14 steps run as one loop body either way. Unrolled layers (CPU): each step's own
        embedding table and head are chosen with `lax.switch` and read in place (as fast as a
        Python-unrolled loop, 5x less to compile). `policy.predictor_loop="scan"` (GPU/TPU): a `lax.scan`
        over stacked tables and heads, no data-dependent branches on the device."""
        cp, cfg = self.predictor, self.sampling.subtalker
        p = {"params": params["code_predictor"]}
        n = self.num_groups - 1
        b = past_hidden.shape[0]
        keys = jax.random.split(key, n)
        cache = predictor_cache(self.cfg.talker, self.policy, b)
        h, cache = cp.apply(p, jnp.stack([past_hidden, e0], 1), jnp.ones((b, 2), bool), cache)
        cp_params = params["code_predictor"]
        code = sampling.sample_subtalker(head_logits(cp_params, 0, h[:, -1], self.policy), keys[0], cfg)
        if self.policy.predictor_loop == "switch":
            # A loop over the 14 single steps (one compiled body: 5 layers instead of 70), each
            # step's embedding table and head picked by `lax.switch` and read in place — no
            # stacking, no weight copies (XLA:CPU copies every slice of a stacked weight).
            embeds = [functools.partial(embed_codes, cp_params, j, policy=self.policy) for j in range(n - 1)]
            heads = [functools.partial(head_logits, cp_params, j, policy=self.policy) for j in range(1, n)]

            def step(j, carry):
                cache, prev, codes = carry
                emb = jax.lax.switch(j - 1, embeds, prev[:, None])
                h, cache = cp.apply(p, emb, jnp.ones((b, 1), bool), cache)
                nxt = sampling.sample_subtalker(jax.lax.switch(j - 1, heads, h[:, -1]), keys[j], cfg)
                return cache, nxt, jax.lax.dynamic_update_index_in_dim(codes, nxt, j, axis=1)

            codes = jnp.zeros((b, n), jnp.int32).at[:, 0].set(code)
            return jax.lax.fori_loop(1, n, step, (cache, code, codes))[2]
        model = params["code_predictor"]["model"]
        tables = jnp.stack([model[f"codec_embedding_{j}"]["weight"] for j in range(n - 1)])  # n-1 V d
        heads = jnp.stack([params["code_predictor"][f"lm_head_{j}"]["weight"] for j in range(1, n)])  # n-1 V c

        def body(carry, xs):
            cache, prev = carry
            table, head, k = xs
            emb = jnp.take(table, prev, axis=0)[:, None].astype(self.policy.dtype)
            h, cache = cp.apply(p, emb, jnp.ones((b, 1), bool), cache)
            logits = linear(h[:, -1], head, form=self.policy.matmul, out_dtype=jnp.float32)
            nxt = sampling.sample_subtalker(logits, k, cfg)
            return (cache, nxt), nxt

        _, rest = jax.lax.scan(body, (cache, code), (tables, heads, keys[1:]))
        return jnp.concatenate([code[:, None], rest.T], axis=1)

    def frame_embedding(self, params, token, rest) -> Float[Array, "b d"]:
        """Σ of the 16 codebook embeddings of a frame (codebook 0 via the talker's table)."""
        frame = jnp.concatenate([token[:, None], rest], 1)
        return sum_codebook_embeddings(codebook_tables(params, self.num_groups), frame, self.policy.dtype)

    # -- the two jitted steps -------------------------------------------------------------

    def prefill(self, params, embeds, mask, slots: int, max_frames: int, key) -> DecodeState:
        """Run the prompt, sample codebook 0 of frame 0."""
        TRACE_COUNTS["prefill"] += 1
        b = embeds.shape[0]
        cache = init_cache(self.cfg.talker.transformer, self.policy, b, slots)
        hidden, cache = self.talker.apply({"params": params}, embeds, mask, cache)
        key, sub = jax.random.split(key)
        seen = sampling.init_seen(b, self.cfg.talker.vocab_size)
        token = self.sample_first(params, hidden[:, -1], seen, 0, sub)
        eos = self.cfg.talker.codec_eos_token_id
        return DecodeState(
            cache=cache, token=token, hidden=hidden[:, -1], seen=sampling.mark_seen(seen, token), finished=token == eos,
            codes=jnp.zeros((b, max_frames, self.num_groups), jnp.int32), num_tokens=jnp.ones((), jnp.int32), key=key,
        )

    def frame_step(self, params, trailing, state: DecodeState) -> DecodeState:
        """Expand the current frame and sample codebook 0 of the next one."""
        key, k_pred, k_talk = jax.random.split(state.key, 3)
        e0 = jnp.take(params["model"]["codec_embedding"]["weight"], state.token, axis=0).astype(self.policy.dtype)
        rest = self.residual_codes(params, state.hidden, e0, k_pred)
        step = state.num_tokens - 1  # the reference's generation_step
        frame = jnp.concatenate([state.token[:, None], rest], 1)
        codes = jax.lax.dynamic_update_slice(state.codes, frame[:, None], (0, step, 0))
        # The text track: trailing[step] while text remains; trailing is padded with tts_pad.
        text = jax.lax.dynamic_index_in_dim(trailing, jnp.minimum(step, trailing.shape[1] - 1), axis=1, keepdims=False)
        x = self.frame_embedding(params, state.token, rest) + text.astype(self.policy.dtype)
        b = x.shape[0]
        hidden, cache = self.talker.apply({"params": params}, x[:, None], jnp.ones((b, 1), bool), state.cache)
        token = self.sample_first(params, hidden[:, -1], state.seen, state.num_tokens, k_talk)
        eos = self.cfg.talker.codec_eos_token_id
        token = jnp.where(state.finished, eos, token)  # HF feeds finished rows the pad (= EOS) id
        return DecodeState(
            cache=cache, token=token, hidden=hidden[:, -1], seen=sampling.mark_seen(state.seen, token),
            finished=state.finished | (token == eos), codes=codes, num_tokens=state.num_tokens + 1, key=key,
        )

    def decode(self, params, trailing, state: DecodeState, max_new_tokens) -> DecodeState:
        """Frame steps until every row finished or `max_new_tokens` tokens (a traced bound: offline
        generation passes the request's, streaming the end of the next chunk)."""
        TRACE_COUNTS["decode"] += 1
        limit = jnp.minimum(jnp.asarray(max_new_tokens, jnp.int32), state.codes.shape[1] + 1)

        def cond(s: DecodeState):
            return (s.num_tokens < limit) & ~jnp.all(s.finished)

        return jax.lax.while_loop(cond, functools.partial(self.frame_step, params, trailing), state)


@functools.lru_cache(maxsize=None)
def compiled(decoder: Decoder):
    """The jitted entry points of one decoder (cached per hashable config + policy + sampling)."""
    return (
        jax.jit(decoder.prefill, static_argnums=(3, 4)),
        jax.jit(decoder.decode, donate_argnums=(2,)),
        jax.jit(decoder.frame_step, donate_argnums=(2,)),
    )


def done(state: DecodeState, max_new_tokens: int) -> bool:
    limit = min(max_new_tokens, state.codes.shape[1] + 1)
    return bool(int(state.num_tokens) >= limit or bool(jnp.all(state.finished)))


def frames_of(state: DecodeState, eos: int) -> list[np.ndarray]:
    """Per row: the frames generated, cut at the first frame whose codebook 0 is EOS."""
    codes = np.asarray(state.codes)[:, : int(state.num_tokens) - 1]
    out = []
    for row in codes:
        stops = np.nonzero(row[:, 0] == eos)[0]
        out.append(row[: stops[0]] if len(stops) else row)
    return out


def cache_slots(prompt_len: int, frames: int, step: int = 256) -> int:
    """KV-cache slots for a prompt of `prompt_len` (bucketed) tokens and a `frames` budget,
    rounded up to `step`: prompts of different lengths share one compiled frame-step loop (the
    slots are its only prompt-dependent shape), and the unwritten slots cost nothing per step
    (attention visits the written prefix only)."""
    return -(-(prompt_len + frames) // step) * step


def frame_budget(max_new_tokens: int, step: int = 64) -> int:
    """Static frame-buffer size for a request (max_new_tokens − 1 frames, rounded up to a bucket)."""
    return max(step, -(-(max_new_tokens - 1) // step) * step)


def generate_codes(
    decoder: Decoder, params, embeds, mask, trailing, max_new_tokens: int, key: PRNGKey,
) -> list[np.ndarray]:
    """Prefill + while-loop decode; returns each row's (T_i, 16) codes."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    prefill, decode, _ = compiled(decoder)
    frames = frame_budget(max_new_tokens)
    slots = cache_slots(embeds.shape[1], frames)
    state = prefill(params, jax.device_put(embeds), jax.device_put(mask), slots, frames, key)
    state = decode(params, jax.device_put(trailing), state, max_new_tokens)
    return frames_of(state, decoder.cfg.talker.codec_eos_token_id)
