"""The frame loop on the device: requests prefilled into slots, a jitted frame step, and a
`lax.while_loop` that advances every slot until one of them ends.

Mirrors the decoding half of `Qwen3TTSForConditionalGeneration.generate` →
`Qwen3TTSTalkerForConditionalGeneration.generate` (HF `GenerationMixin._sample`) and, inside each
talker step, `code_predictor.generate` (15 tokens) — per row, so that rows are independent
requests: each slot (batch row) has its own KV-cache length and positions, its own PRNG key,
sampling values, `max_new_tokens` and text track. `engine.Engine` owns the slots on the host.

One frame step, all inside one XLA computation (no host round-trip per codebook):
    codebooks 1..15 of the current frame from the code predictor (fresh 16-slot cache)
    → write the frame's 16 codes
    → next talker input = Σ of the 16 codebook embeddings + the text track (trailing[step] or tts_pad)
    → one talker step on the donated KV cache → codec_head → penalty / min-tokens / suppression /
      warpers → codebook 0 of the next frame.
Frame bookkeeping as the reference: the prefill samples codebook 0 of frame 0; the last sampled
token (EOS or the `max_new_tokens`-th) is never expanded, so M tokens give M−1 frames.

What is compiled: `FrameSampler` (configs, `Policy`, the static `SamplingProgram`, the
`Placement`) and the shapes — slots, KV slots, text-track length, frames per advance, the rows
an advance steps (a bucket of the occupied ones), and per admission the number of newcomers
and the packed prompt shapes (`prompt.PackedPrompts`, in buckets). Sampling values, lengths,
budgets and the number of steps per advance are traced, so none of them recompiles.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from qwen3tts_jax import sampling
from qwen3tts_jax.code_predictor import CodePredictor, embed_codes, head_logits, predictor_cache
from qwen3tts_jax.config import Policy, Qwen3TTSConfig
from qwen3tts_jax.nn.linear import linear
from qwen3tts_jax.nn.transformer import DecoderCache, init_cache
from qwen3tts_jax.prompt import PackedPrompts, codebook_tables, embed_packed, embed_text_ids, sum_codebook_embeddings
from qwen3tts_jax.sampling import SamplingProgram, SamplingValues
from qwen3tts_jax.sharding import Placement
from qwen3tts_jax.talker import Talker
from qwen3tts_jax.typing import Array, Bool, Float, HostArray, Int, pytree_dataclass

# `SlotState.reason`: why a row stopped (0 while it runs or the slot is idle).
RUNNING, STOP, LENGTH = 0, 1, 2
FINISH_REASONS = {STOP: "stop", LENGTH: "length"}


@pytree_dataclass
class SlotState:
    """Everything the frame loop carries for its b slots; an explicit pytree, no hidden state."""

    cache: DecoderCache  # the talker's KV cache, one end per row
    trailing: Float[Array, "b u d"]  # each row's text track, continued with tts_pad
    token: Int[Array, " b"]  # codebook 0 of the frame to expand next
    hidden: Float[Array, "b d"]  # talker hidden (after norm) at the position that produced `token`
    seen: Bool[Array, "b v"]  # codebook-0 tokens generated so far (repetition penalty)
    num_tokens: Int[Array, " b"]  # codebook-0 tokens the row's request sampled (1 after its prefill)
    limit: Int[Array, " b"]  # the request's max_new_tokens
    running: Bool[Array, " b"]  # the slot holds a request that has not ended
    reason: Int[Array, " b"]  # RUNNING, STOP (sampled EOS) or LENGTH (reached max_new_tokens)
    key: Array  # b 2 uint32: each row's PRNG key (raw), advanced only while the row runs
    values: SamplingValues  # each row's sampling values
    codes: Int[Array, "b k q"]  # frames written by the current advance (frame i at index i)
    steps: Int[Array, ""]  # frames written into `codes` by the current advance

    @property
    def slots(self) -> int:
        return self.token.shape[0]


@dataclasses.dataclass(frozen=True)
class FrameSampler:
    """The static half of decoding (hashable, a static jit argument): configs, policy, which
    sampling code is compiled in, and where the arrays live."""

    cfg: Qwen3TTSConfig
    policy: Policy
    program: SamplingProgram
    placement: Placement = Placement()

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

    def sample_first(self, params, hidden, seen, num_tokens, keys, values: SamplingValues):
        logits = self.talker.apply({"params": params}, hidden, method=Talker.logits)
        return sampling.sample_talker(logits, seen, num_tokens, keys, values, self.program)

    def residual_codes(
        self,
        params,
        past_hidden: Float[Array, "b d"],
        e0: Float[Array, "b d"],
        keys: Array,
        values: sampling.SamplerValues,
    ) -> Int[Array, "b n"]:
        """Codebooks 1..15 of one frame: a 2-token prefill then 14 cached single steps, each row
        drawing with its own keys (`keys`: b 2, split per step) and values.

        `policy.predictor_loop="switch"` (XLA:CPU): one loop body whose step picks its embedding
        table and head with `lax.switch`, read in place (5x less to compile than 14 unrolled
        steps, and no weight copies: XLA:CPU copies every slice of a stacked weight). "scan"
        (GPU/TPU): a `lax.scan` over stacked tables and heads, no data-dependent branches."""
        cp, sub = self.predictor, self.program.subtalker_sample
        p = {"params": params["code_predictor"]}
        n = self.num_groups - 1
        b = past_hidden.shape[0]
        step_keys = jax.vmap(lambda k: jax.random.split(k, n))(keys)  # b n 2
        cache = predictor_cache(self.cfg.talker, self.policy, b)
        h, cache = cp.apply(p, jnp.stack([past_hidden, e0], 1), jnp.ones((b, 2), bool), cache)
        cp_params = params["code_predictor"]
        code = sampling.sample_subtalker(head_logits(cp_params, 0, h[:, -1], self.policy), step_keys[:, 0], values, sub)
        if self.policy.predictor_loop == "switch":
            embeds = [functools.partial(embed_codes, cp_params, j, policy=self.policy) for j in range(n - 1)]
            heads = [functools.partial(head_logits, cp_params, j, policy=self.policy) for j in range(1, n)]

            def step(j, carry):
                cache, prev, codes = carry
                emb = jax.lax.switch(j - 1, embeds, prev[:, None])
                h, cache = cp.apply(p, emb, jnp.ones((b, 1), bool), cache)
                k = jax.lax.dynamic_index_in_dim(step_keys, j, axis=1, keepdims=False)
                nxt = sampling.sample_subtalker(jax.lax.switch(j - 1, heads, h[:, -1]), k, values, sub)
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
            nxt = sampling.sample_subtalker(logits, k, values, sub)
            return (cache, nxt), nxt

        _, rest = jax.lax.scan(body, (cache, code), (tables, heads, jnp.swapaxes(step_keys[:, 1:], 0, 1)))
        return jnp.concatenate([code[:, None], rest.T], axis=1)

    def frame_embedding(self, params, token, rest) -> Float[Array, "b d"]:
        """Σ of the 16 codebook embeddings of a frame (codebook 0 via the talker's table)."""
        frame = jnp.concatenate([token[:, None], rest], 1)
        return sum_codebook_embeddings(codebook_tables(params, self.num_groups), frame, self.policy.dtype)

    # -- the slots ------------------------------------------------------------------------

    def init_state(self, slots: int, cache_slots: int, text_track: int, chunk: int) -> SlotState:
        """Empty slots: `cache_slots` KV positions and a `text_track`-long text track per row,
        room for `chunk` frames per advance."""
        t = self.cfg.talker
        zeros = lambda shape, dt: jnp.zeros(shape, dt)
        state = SlotState(
            cache=init_cache(t.transformer, self.policy, slots, cache_slots, per_row=True),
            trailing=zeros((slots, text_track, t.transformer.hidden_size), self.policy.dtype),
            token=zeros((slots,), jnp.int32),
            hidden=zeros((slots, t.transformer.hidden_size), self.policy.dtype),
            seen=sampling.init_seen(slots, t.vocab_size),
            num_tokens=zeros((slots,), jnp.int32),
            limit=zeros((slots,), jnp.int32),
            running=zeros((slots,), bool),
            reason=zeros((slots,), jnp.int32),
            key=zeros((slots, 2), jnp.uint32),
            values=jax.tree.map(jnp.asarray, self.neutral_values(slots)),
            codes=zeros((slots, chunk, self.num_groups), jnp.int32),
            steps=zeros((), jnp.int32),
        )
        return self.placement.constrain(state, "state")

    def neutral_values(self, rows: int) -> SamplingValues:
        """Sampling values of an idle slot (greedy, no processors)."""
        return sampling.SamplingConfig(sampling.TalkerSamplingConfig(), sampling.SamplerConfig()).values(rows)

    def admit(
        self,
        params,
        state: SlotState,
        prompts: PackedPrompts,
        trailing_ids: Int[HostArray, "n w"],
        rows: Int[HostArray, " n"],
        keys: Array,
        values: SamplingValues,
        limits: Int[HostArray, " n"],
    ) -> SlotState:
        """Prefill n new requests (their prompts packed end to end, `prompt.PackedPrompts`) and
        put them in the slots `rows`: each gets its own KV rows (positions from 0), text track,
        key, values and budget. The other slots are untouched."""
        t = self.cfg.talker
        n, length = prompts.index.shape
        prompts = self.placement.constrain(prompts, "prompt")
        embeds = embed_packed(params, prompts, t, self.policy)  # g p d
        on = prompts.segment >= 0
        cache = init_cache(t.transformer, self.policy, *on.shape)
        hidden, cache = self.talker.apply({"params": params}, embeds, on, cache, prompts.segment)
        # Back from the packs: each request's positions, in its own row from slot 0.
        unpack = lambda a, axis: jnp.take(a.reshape(*a.shape[:axis], -1, *a.shape[axis + 2 :]), prompts.index, axis)
        layers = jax.tree.map(lambda a: unpack(a, 1 if self.policy.scan_layers else 0), cache.layers)
        last = jnp.take_along_axis(prompts.index, prompts.lengths[:, None] - 1, axis=1)[:, 0]
        hidden = jnp.take(hidden.reshape(-1, hidden.shape[-1]), last, axis=0)  # n d
        split = jax.vmap(jax.random.split)(keys)  # n 2 2
        seen = sampling.init_seen(n, t.vocab_size)
        token = self.sample_first(params, hidden, seen, 0, split[:, 1], values)
        reason = jnp.where(token == t.codec_eos_token_id, STOP, jnp.where(limits <= 1, LENGTH, RUNNING))

        pad = embed_text_ids(params, jnp.full((1, 1), self.cfg.tts_pad_token_id, jnp.int32), t, self.policy)[0, 0]
        text = embed_text_ids(params, trailing_ids, t, self.policy)  # n w d
        s, u = state.cache.slots, state.trailing.shape[1]
        newcomers = SlotState(
            # A request's KV lands in the first `length` of its row's slots, its prompt first;
            # `valid` covers every slot, so a previous occupant's history is never attended.
            cache=DecoderCache(
                layers,
                jnp.zeros((n, s), bool).at[:, :length].set(jnp.arange(length) < prompts.lengths[:, None]),
                jnp.asarray(prompts.lengths, jnp.int32),
            ),
            trailing=jnp.broadcast_to(pad, (n, u, pad.shape[0])).at[:, : text.shape[1]].set(text),
            token=token,
            hidden=hidden,
            seen=sampling.mark_seen(seen, token),
            num_tokens=jnp.ones((n,), jnp.int32),
            limit=jnp.asarray(limits, jnp.int32),
            running=reason == RUNNING,
            reason=reason,
            key=split[:, 0],
            values=values,
            codes=jnp.zeros((n, *state.codes.shape[1:]), jnp.int32),
            steps=jnp.zeros((), jnp.int32),
        )
        return self.placement.constrain(self.set_rows(state, newcomers, rows), "state")

    def set_rows(self, state: SlotState, part: SlotState, rows: Int[Array, " n"]) -> SlotState:
        """`part`'s n slots written into `state` at `rows`; a leaf of `part` may be shorter than
        `state`'s past the slot axis (a prefill's KV slots) and fills their start. `state`'s
        `steps` is kept."""
        stacked = self.policy.scan_layers

        def one(path, big, small):
            a = _row_axis(path, stacked)
            if a < 0:
                return big
            at = (slice(None),) * a + (rows,) + tuple(slice(0, d) for d in small.shape[a + 1 :])
            return big.at[at].set(small.astype(big.dtype), unique_indices=True)

        return jax.tree_util.tree_map_with_path(one, state, part)

    def release(self, state: SlotState, rows: Bool[HostArray, " b"]) -> SlotState:
        """Free slots (a request ended or was cancelled): the row stops and its cache length
        goes back to 0, so attention over the slots never visits a freed row's history."""
        cache = dataclasses.replace(state.cache, end=jnp.where(rows, 0, state.cache.end))
        return dataclasses.replace(state, cache=cache, running=state.running & ~rows)

    # -- the frame loop -------------------------------------------------------------------

    def frame_step(self, params, state: SlotState) -> SlotState:
        """Expand each running row's current frame and sample codebook 0 of its next one."""
        state = self.placement.constrain(state, "state")
        live = state.running
        split = jax.vmap(lambda k: jax.random.split(k, 3))(state.key)  # b 3 2
        e0 = jnp.take(params["model"]["codec_embedding"]["weight"], state.token, axis=0).astype(self.policy.dtype)
        rest = self.residual_codes(params, state.hidden, e0, split[:, 1], state.values.subtalker)
        frame = jnp.concatenate([state.token[:, None], rest], 1)
        codes = jax.lax.dynamic_update_slice(state.codes, frame[:, None], (0, state.steps, 0))
        # The text track: trailing[step] while text remains; the track continues with tts_pad.
        step = jnp.minimum(state.num_tokens - 1, state.trailing.shape[1] - 1)  # the reference's generation_step
        text = jnp.take_along_axis(state.trailing, step[:, None, None], axis=1)[:, 0]
        x = self.frame_embedding(params, state.token, rest) + text.astype(self.policy.dtype)
        hidden, cache = self.talker.apply({"params": params}, x[:, None], live[:, None], state.cache)
        cache = dataclasses.replace(cache, end=jnp.where(live, cache.end, state.cache.end))
        token = self.sample_first(params, hidden[:, -1], state.seen, state.num_tokens, split[:, 2], state.values)
        num_tokens = state.num_tokens + live
        eos = live & (token == self.cfg.talker.codec_eos_token_id)
        length = live & ~eos & (num_tokens >= state.limit)
        keep = lambda new, old: jnp.where(live.reshape(live.shape + (1,) * (new.ndim - 1)), new, old)
        new = dataclasses.replace(
            state,
            cache=cache,
            token=keep(token, state.token),
            hidden=keep(hidden[:, -1], state.hidden),
            seen=keep(sampling.mark_seen(state.seen, token), state.seen),
            num_tokens=num_tokens,
            running=live & ~eos & ~length,
            reason=jnp.where(eos, STOP, jnp.where(length, LENGTH, state.reason)),
            key=keep(split[:, 0], state.key),
            codes=codes,
            steps=state.steps + 1,
        )
        return self.placement.constrain(new, "state")

    def advance(self, params, state: SlotState, max_steps, rows: int | None = None) -> SlotState:
        """Frame steps until `max_steps` (traced, at most the chunk capacity) frames are written,
        a row ends (so its slot can be freed and refilled at once), or no row runs.

        `rows` (static; None: all): step only the first `rows` slots — the engine keeps its
        requests in the lowest rows and passes a bucket of them, so a lightly loaded engine pays
        a small batch's step, not the whole batch's. Those rows are copied out, advanced and
        written back; the others are untouched (their `codes` are stale and not read)."""
        if rows is None or rows >= state.slots:
            return self._advance(params, state, max_steps)
        axes = jax.tree_util.tree_map_with_path(lambda path, _: _row_axis(path, self.policy.scan_layers), state)
        head = jax.tree.map(lambda x, a: x if a < 0 else jax.lax.slice_in_dim(x, 0, rows, axis=a), state, axes)
        head = self._advance(params, head, max_steps)
        return self.placement.constrain(
            jax.tree.map(
                lambda x, h, a: h if a < 0 else jax.lax.dynamic_update_slice_in_dim(x, h, 0, axis=a),
                state,
                head,
                axes,
            ),
            "state",
        )

    def _advance(self, params, state: SlotState, max_steps) -> SlotState:
        state = dataclasses.replace(state, steps=jnp.zeros((), jnp.int32))
        limit = jnp.minimum(jnp.asarray(max_steps, jnp.int32), state.codes.shape[1])
        entry = state.running

        def cond(s: SlotState):
            return (s.steps < limit) & ~jnp.any(entry & ~s.running) & jnp.any(s.running)

        return jax.lax.while_loop(cond, functools.partial(self.frame_step, params), state)


def _row_axis(path, stacked: bool) -> int:
    """The slot axis of a `SlotState` leaf: 0, 1 for the KV cache under a layer axis, -1 for
    `steps` (a scalar)."""
    names = [getattr(k, "name", None) for k in path]
    if names[0] == "steps":
        return -1
    return 1 if stacked and names[:2] == ["cache", "layers"] else 0


@dataclasses.dataclass(frozen=True)
class Compiled:
    """The jitted entry points of one `FrameSampler` (the slot state is donated)."""

    init: object
    admit: object
    advance: object
    release: object
    # What has been compiled so far, by `signature` of the arguments: admissions (state, inputs)
    # and advances (state, rows). An engine compiles a program it has not met yet off its
    # stepping thread while other requests run (`engine.Engine.background_compile`).
    admissions: set = dataclasses.field(default_factory=set, compare=False, repr=False)
    advances: set = dataclasses.field(default_factory=set, compare=False, repr=False)


def signature(tree) -> tuple:
    """The shapes and dtypes of a pytree's leaves: what a program of one sampler (and so one
    placement) is compiled for, besides its static arguments."""
    return tuple((tuple(a.shape), str(a.dtype)) for a in jax.tree.leaves(tree))


@functools.lru_cache(maxsize=16)
def compiled(sampler: FrameSampler) -> Compiled:
    """Jitted entry points per static sampler (a bounded cache: a model has at most a few —
    the sampling programs × layouts it is run with)."""
    return Compiled(
        init=jax.jit(sampler.init_state, static_argnums=(0, 1, 2, 3)),
        admit=jax.jit(sampler.admit, donate_argnums=(1,)),
        advance=jax.jit(sampler.advance, donate_argnums=(1,), static_argnums=(3,)),
        release=jax.jit(sampler.release, donate_argnums=(0,)),
    )


def cache_slots(prompt_len: int, frames: int, step: int = 256) -> int:
    """KV-cache slots for a prompt of `prompt_len` (bucketed) tokens and a `frames` budget,
    rounded up to `step`: engines of different budgets share one compiled frame loop (the slots
    are its only length-dependent shape), and unwritten slots cost nothing per step (attention
    visits the written prefix only)."""
    return -(-(prompt_len + frames) // step) * step


def compile_count(sampler: FrameSampler) -> dict[str, int]:
    """How many programs each entry point of `sampler` has compiled (tests, diagnostics)."""
    c = compiled(sampler)
    return {name: getattr(c, name)._cache_size() for name in ("init", "admit", "advance", "release")}


__all__ = [
    "FINISH_REASONS",
    "LENGTH",
    "RUNNING",
    "STOP",
    "Compiled",
    "FrameSampler",
    "SlotState",
    "cache_slots",
    "compile_count",
    "compiled",
    "signature",
]
