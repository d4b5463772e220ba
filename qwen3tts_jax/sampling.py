"""Logits processors and samplers for the talker (codebook 0) and the sub-talker (codebooks 1..15).

Mirrors what `Qwen3TTSForConditionalGeneration.generate` asks of HF `GenerationMixin`
(transformers 4.57.3, `_get_logits_processor` then `_sample`):

* talker, each step, on fp32 logits: `RepetitionPenaltyLogitsProcessor` over the codebook-0 tokens
  generated so far (the prompt goes in as `inputs_embeds`, so `input_ids` starts empty) →
  `MinNewTokensLengthLogitsProcessor` (EOS blocked while fewer than `min_new_tokens` generated) →
  `SuppressTokensLogitsProcessor` (the last 1024 ids except EOS) → only when sampling:
  `TemperatureLogitsWarper` → `TopKLogitsWarper` → `TopPLogitsWarper` → softmax + multinomial;
  otherwise argmax. The processors run in greedy mode too (the penalty changes greedy picks).
* sub-talker (`code_predictor.generate`): only the warpers and the pick, with its own switches.

What is compiled and what is traced: the *values* (temperature, top-k, top-p, repetition
penalty, min new tokens, do_sample, for both pipelines) are per-row arrays (`SamplingValues`),
so rows of one batch sample with their own settings and a new value never recompiles; the
*program* (`SamplingProgram`: whether any row samples on each pipeline, EOS, the suppressed ids)
is static. HF skips temperature 1.0, top-k 0 and top-p 1.0; here those values are exact no-ops
(x/1 == x, no k-th threshold, no cut), so one program serves every setting. `SamplerConfig`,
`TalkerSamplingConfig` and `SamplingConfig` are the validated, hashable per-request settings on
the host; `.values(rows)` and `.program()` turn them into the two halves.

Everything is a pure function of arrays, no host syncs, so it runs inside `lax.while_loop`.
The repetition-penalty state is a `(b, v)` "seen" mask carried by the loop: HF gathers the scores
of the ids in `input_ids`, penalises them and scatters them back, so a token seen twice is
penalised once — a boolean mask is exactly that, updated with one O(b) scatter per step.

Bit-level fidelity to HF on CPU (the fp32 oracle), where XLA would otherwise differ by an ulp:
divisions (temperature, penalty) are true divisions, not XLA's multiply-by-reciprocal; top-p's
cumulative sum reproduces torch's double-accumulated, once-rounded prefix sums, so exact
boundaries (equal probabilities summing to `1 - top_p`) fall the same way; `1 - top_p` itself is
computed in double on the host and rounded to float32 once, as torch compares.

Known, documented divergences from HF (both measure-zero for real logits):
* top-p with ties straddling the cut: HF's `torch.sort` is not stable, so *which* of several
  equal logits get removed is unspecified there; we use a stable sort (the lower index goes first).
* sampling draws come from JAX's PRNG (Gumbel-max over the same processed logits, one key per
  row), not torch's `multinomial`: same distribution, different draws.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from qwen3tts_jax.typing import Array, Bool, Float, HostArray, Int, PRNGKey, pytree_dataclass

# Ids the reference suppresses: `range(vocab_size - 1024, vocab_size)` minus EOS (the codec's
# control / language / speaker rows, which must never be emitted as codebook 0).
SUPPRESSED_TAIL = 1024
# `Qwen3TTSForConditionalGeneration.generate` hard-codes `min_new_tokens=2` for the talker.
TALKER_MIN_NEW_TOKENS = 2

# A processor's value: one for all rows (a Python or numpy scalar, or a traced 0-d array) or
# one per row (`(b,)`, traced: the engine's rows each carry their request's values).
RowFloat = float | np.floating | Float[HostArray, ""] | Float[HostArray, " b"]
RowInt = int | np.integer | Int[HostArray, ""] | Int[HostArray, " b"]

_NEG_INF = -math.inf
# `apply_top_k` finds the k-th largest score among this many (`lax.top_k`) when every row's k is
# at most this, else by a full sort; 128 costs what 64 does on XLA:CPU (≈0.1 ms at 8 × 3072).
TOP_K_PARTIAL = 128


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------


def _check_sampler(do_sample: Any, temperature: Any, top_k: Any, top_p: Any, prefix: str = "") -> None:
    """Boundary validation, naming the argument as the caller spells it: `top_p` for the talker,
    `subtalker_top_p` for the sub-talker, whose switch the reference spells `subtalker_dosample`."""
    flag = "subtalker_dosample" if prefix == "subtalker_" else f"{prefix}do_sample"
    if not isinstance(do_sample, (bool, np.bool_)):
        raise ValueError(f"{flag} must be a bool, got {do_sample!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise ValueError(f"{prefix}top_k must be an int >= 0 (0 disables it), got {top_k!r}")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float, np.number)) or not 0.0 < top_p <= 1.0:
        raise ValueError(f"{prefix}top_p must be in (0, 1] (1.0 disables it), got {top_p!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.number)):
        raise ValueError(f"{prefix}temperature must be a float, got {temperature!r}")
    if do_sample and not (math.isfinite(temperature) and temperature > 0.0):
        raise ValueError(
            f"{prefix}temperature must be > 0 when sampling, got {temperature!r} (for greedy decoding set {flag}=False)"
        )


@pytree_dataclass
class SamplerValues:
    """One pipeline's warper values, one entry per row (traced: a new value never recompiles).

    Rows that do not sample carry the disabling values (temperature 1, top-k 0, no top-p cut)."""

    do_sample: Bool[HostArray, " b"]
    temperature: Float[HostArray, " b"]
    top_k: Int[HostArray, " b"]  # 0 disables
    top_p_cut: Float[HostArray, " b"]  # float32(1 - top_p) computed in double, as torch compares; 0 disables


@pytree_dataclass
class SamplingValues:
    """Both pipelines' values per row: the talker's warpers and processors, the sub-talker's warpers."""

    talker: SamplerValues
    repetition_penalty: Float[HostArray, " b"]  # 1.0 disables
    min_new_tokens: Int[HostArray, " b"]
    subtalker: SamplerValues

    @staticmethod
    def stack(rows: list[SamplingValues]) -> SamplingValues:
        """Rows of several requests (each of batch 1 or more) as one batch, on the host."""
        return jax.tree.map(lambda *xs: np.concatenate(xs), *rows)

    def row(self, i: int) -> SamplingValues:
        return jax.tree.map(lambda x: x[i : i + 1], self)


@dataclasses.dataclass(frozen=True)
class SamplingProgram:
    """The static half of sampling (part of a jit key): the talker's EOS and suppressed ids (from
    the model config), and whether the warpers and draws of each pipeline are compiled in at all
    (False: every row is greedy, and the program is argmax of the processed scores)."""

    eos_token_id: int | None = None
    suppress: tuple[tuple[int, int], ...] = ()
    talker_sample: bool = True
    subtalker_sample: bool = True

    def covers(self, other: SamplingProgram) -> bool:
        """Whether this program can run requests that need `other` (greedy rows run in a sampling
        program as argmax of the same processed scores)."""
        return (
            self.eos_token_id == other.eos_token_id
            and self.suppress == other.suppress
            and self.talker_sample >= other.talker_sample
            and self.subtalker_sample >= other.subtalker_sample
        )

    def union(self, other: SamplingProgram) -> SamplingProgram:
        if (self.eos_token_id, self.suppress) != (other.eos_token_id, other.suppress):
            raise ValueError("SamplingProgram.union: programs of different models")
        return dataclasses.replace(
            self,
            talker_sample=self.talker_sample or other.talker_sample,
            subtalker_sample=self.subtalker_sample or other.subtalker_sample,
        )


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """The warpers and the final pick: temperature → top-k → top-p → multinomial, or argmax.

    The sub-talker's whole pipeline, and the tail of the talker's. The warpers apply only when
    `do_sample` (as in HF); greedy decoding ignores them, so `temperature` must be > 0 only when
    sampling (top_k >= 0 and top_p in (0, 1] are checked either way).
    """

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0 disables
    top_p: float = 1.0  # 1.0 disables

    def __post_init__(self):
        _check_sampler(self.do_sample, self.temperature, self.top_k, self.top_p)
        # Canonical Python scalars: equal configs hash equal (a static jit arg is keyed on them).
        object.__setattr__(self, "do_sample", bool(self.do_sample))
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "top_k", int(self.top_k))
        object.__setattr__(self, "top_p", float(self.top_p))

    def values(self, rows: int = 1) -> SamplerValues:
        """This setting for `rows` rows, as host arrays (greedy rows carry the disabling values)."""
        on = self.do_sample
        full = lambda x, dt: np.full((rows,), x, dt)
        return SamplerValues(
            full(on, np.bool_),
            full(self.temperature if on else 1.0, np.float32),
            full(self.top_k if on else 0, np.int32),
            full(top_p_cut(self.top_p) if on else 0.0, np.float32),
        )


def suppress_ranges(start: int, stop: int, exempt: tuple[int, ...] = ()) -> tuple[tuple[int, int], ...]:
    """`[start, stop)` minus the `exempt` ids, as sorted disjoint half-open ranges.

    Ranges rather than the 1023 ids keep the config's repr and hash small.
    """
    if not 0 <= start <= stop:
        raise ValueError(f"suppress range [{start}, {stop}) is not a valid id range")
    out, lo = [], start
    for e in sorted(set(e for e in exempt if start <= e < stop)):
        if lo < e:
            out.append((lo, e))
        lo = e + 1
    if lo < stop:
        out.append((lo, stop))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class TalkerSamplingConfig:
    """The talker's codebook-0 pipeline: penalty → min new tokens → suppression → `sampler`."""

    sampler: SamplerConfig = SamplerConfig()
    repetition_penalty: float = 1.0  # 1.0 disables (HF adds no processor then)
    min_new_tokens: int = 0
    eos_token_id: int | None = None  # needed by min_new_tokens (HF: no EOS → no processor)
    suppress: tuple[tuple[int, int], ...] = ()  # half-open id ranges set to -inf every step

    def __post_init__(self):
        p = self.repetition_penalty
        if isinstance(p, bool) or not isinstance(p, (int, float, np.number)) or not (math.isfinite(p) and p > 0):
            raise ValueError(f"repetition_penalty must be a finite float > 0 (1.0 disables it), got {p!r}")
        m = self.min_new_tokens
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 0:
            raise ValueError(f"min_new_tokens must be an int >= 0, got {m!r}")
        e = self.eos_token_id
        if e is not None and (isinstance(e, bool) or not isinstance(e, (int, np.integer)) or e < 0):
            raise ValueError(f"eos_token_id must be an int >= 0 or None, got {e!r}")
        if m > 0 and e is None:
            raise ValueError(f"min_new_tokens={m} needs an eos_token_id to block")
        ranges = tuple((int(a), int(b)) for a, b in self.suppress)
        for a, b in ranges:
            if not 0 <= a < b:
                raise ValueError(f"suppress range [{a}, {b}) must satisfy 0 <= start < stop")
        object.__setattr__(self, "repetition_penalty", float(p))
        object.__setattr__(self, "min_new_tokens", int(m))
        object.__setattr__(self, "eos_token_id", None if e is None else int(e))
        object.__setattr__(self, "suppress", ranges)

    @property
    def suppressed_ids(self) -> tuple[int, ...]:
        """The ids as HF's `suppress_tokens` list would hold them (for debugging and tests)."""
        return tuple(i for a, b in self.suppress for i in range(a, b))


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Both switch sets of `Qwen3TTSForConditionalGeneration.generate`: talker and sub-talker."""

    talker: TalkerSamplingConfig
    subtalker: SamplerConfig

    @staticmethod
    def from_generation_config(
        gen: Any,
        *,
        vocab_size: int,
        eos_token_id: int,
        min_new_tokens: int = TALKER_MIN_NEW_TOKENS,
        suppressed_tail: int = SUPPRESSED_TAIL,
    ) -> SamplingConfig:
        """Build from `config.GenerationConfig` (or anything with its fields) and the talker's
        codec `vocab_size` / `codec_eos_token_id`, as the reference's `talker_kwargs` do."""
        _check_sampler(gen.do_sample, gen.temperature, gen.top_k, gen.top_p)
        _check_sampler(
            gen.subtalker_dosample, gen.subtalker_temperature, gen.subtalker_top_k, gen.subtalker_top_p, "subtalker_"
        )
        if not 0 <= eos_token_id < vocab_size:
            raise ValueError(f"eos_token_id={eos_token_id} is outside the codec vocabulary [0, {vocab_size})")
        if not 0 <= suppressed_tail <= vocab_size:
            raise ValueError(f"suppressed_tail={suppressed_tail} must be in [0, vocab_size={vocab_size}]")
        talker = TalkerSamplingConfig(
            sampler=SamplerConfig(gen.do_sample, gen.temperature, gen.top_k, gen.top_p),
            repetition_penalty=gen.repetition_penalty,
            min_new_tokens=min_new_tokens,
            eos_token_id=eos_token_id,
            suppress=suppress_ranges(vocab_size - suppressed_tail, vocab_size, exempt=(eos_token_id,)),
        )
        # The reference's sub-talker spelling is `subtalker_dosample` (no underscore in "dosample").
        sub = SamplerConfig(gen.subtalker_dosample, gen.subtalker_temperature, gen.subtalker_top_k, gen.subtalker_top_p)
        return SamplingConfig(talker=talker, subtalker=sub)

    def values(self, rows: int = 1) -> SamplingValues:
        t = self.talker
        return SamplingValues(
            t.sampler.values(rows),
            np.full((rows,), t.repetition_penalty, np.float32),
            np.full((rows,), t.min_new_tokens, np.int32),
            self.subtalker.values(rows),
        )

    def program(self) -> SamplingProgram:
        return SamplingProgram(
            self.talker.eos_token_id, self.talker.suppress, self.talker.sampler.do_sample, self.subtalker.do_sample
        )

    @staticmethod
    def from_configs(gen: Any, talker_config: Any) -> SamplingConfig:
        """Convenience: `from_generation_config` with ids read from a `config.TalkerConfig`."""
        return SamplingConfig.from_generation_config(
            gen, vocab_size=talker_config.vocab_size, eos_token_id=talker_config.codec_eos_token_id
        )


# --------------------------------------------------------------------------------------------
# Repetition-penalty state
# --------------------------------------------------------------------------------------------


def init_seen(batch: int, vocab: int) -> Bool[Array, "b v"]:
    """No tokens generated yet (the prompt is not part of HF's `input_ids` here)."""
    return jnp.zeros((batch, vocab), jnp.bool_)


def mark_seen(seen: Bool[Array, "b v"], tokens: Int[Array, " b"]) -> Bool[Array, "b v"]:
    """Record this step's tokens. Mark every row's token, finished rows too: HF appends the pad
    (= EOS) to their `input_ids` as well, and a finished row's scores are never used again."""
    rows = jnp.arange(seen.shape[0])
    return seen.at[rows, tokens].set(True)


# --------------------------------------------------------------------------------------------
# Processors (run in greedy mode too)
# --------------------------------------------------------------------------------------------


def _per_row(value, rows: int, dtype) -> Array:
    """A scalar or `(b,)` value as a `(b, 1)` column that broadcasts over the vocabulary."""
    return jnp.broadcast_to(jnp.asarray(value, dtype), (rows,))[:, None]


def _true_divide(x: Float[Array, "b v"], c) -> Float[Array, "b v"]:
    """`x / c` (c a scalar or one per row) as a true IEEE division, like torch's CPU kernel. XLA
    turns a division by a broadcast value into a multiply by its reciprocal (1 ulp off, ~2e-6 at
    logit 20); a full-shape divisor behind an optimization barrier keeps the real divide."""
    return x / jax.lax.optimization_barrier(jnp.broadcast_to(_per_row(c, x.shape[0], x.dtype), x.shape))


def apply_repetition_penalty(
    logits: Float[Array, "b v"], seen: Bool[Array, "b v"], penalty: RowFloat
) -> Float[Array, "b v"]:
    """`RepetitionPenaltyLogitsProcessor`: seen tokens' scores `s*p` if `s < 0` else `s/p` (a
    penalty of 1.0 leaves every score bit for bit: HF adds no processor then)."""
    # HF computes the penalised value from the *original* score once per id, duplicates included.
    p = _per_row(penalty, logits.shape[0], jnp.float32)
    penalised = jnp.where(logits < 0, logits * p, _true_divide(logits, penalty))
    return jnp.where(seen, penalised, logits)


def apply_min_new_tokens(
    logits: Float[Array, "b v"],
    num_generated: Int[Array, ""] | Int[Array, " b"] | int,
    min_new_tokens: RowInt,
    eos_token_id: int | None,
) -> Float[Array, "b v"]:
    """`MinNewTokensLengthLogitsProcessor`: EOS is -inf while `num_generated < min_new_tokens`.

    `num_generated` counts tokens already generated before this step (0 at the prefill); a scalar
    (HF: every row has the same length) or one per row, as is `min_new_tokens`.
    """
    if eos_token_id is None:
        return logits
    b, v = logits.shape
    if not 0 <= eos_token_id < v:
        return logits  # HF's `isin` over `arange(v)` matches nothing either
    blocked = _per_row(num_generated, b, jnp.int32) < _per_row(min_new_tokens, b, jnp.int32)  # b 1
    is_eos = jnp.arange(v) == eos_token_id  # (v,)
    return jnp.where(blocked & is_eos, jnp.float32(_NEG_INF), logits)


def suppression_mask(ranges: tuple[tuple[int, int], ...], vocab: int) -> np.ndarray:
    """Static `(v,)` bool mask of the suppressed ids; ids >= vocab are ignored, as HF's `isin`."""
    mask = np.zeros((vocab,), np.bool_)
    for a, b in ranges:
        mask[a:b] = True
    return mask


def apply_suppression(logits: Float[Array, "b v"], ranges: tuple[tuple[int, int], ...]) -> Float[Array, "b v"]:
    """`SuppressTokensLogitsProcessor`: the ids in `ranges` are -inf (a compile-time constant mask)."""
    if not ranges:
        return logits
    mask = suppression_mask(ranges, logits.shape[-1])
    return jnp.where(mask, jnp.float32(_NEG_INF), logits)


# --------------------------------------------------------------------------------------------
# Warpers (only when sampling)
# --------------------------------------------------------------------------------------------


def apply_temperature(logits: Float[Array, "b v"], temperature: RowFloat) -> Float[Array, "b v"]:
    """`TemperatureLogitsWarper` (`scores / temperature`; at 1.0 exactly the scores)."""
    return _true_divide(logits, temperature)


def apply_top_k(logits: Float[Array, "b v"], top_k: RowInt, min_tokens_to_keep: int = 1) -> Float[Array, "b v"]:
    """`TopKLogitsWarper`: drop scores strictly below the k-th largest, so ties with the k-th
    value all survive (more than k tokens may remain). k per row (traced); 0 disables, as HF
    adds none then; k beyond the vocabulary keeps everything.

    The k-th largest value comes from `lax.top_k` over the `TOP_K_PARTIAL` largest when every
    row's k is within them (the reference's 50 is), else from a full sort: the same value
    either way (both keep duplicates), but XLA:CPU's sort is ≈30× slower than its top-k at a
    batch of 8 rows, and it ran 16 times a frame (benchmarks/RESULTS.md, "Sampling")."""
    b, v = logits.shape
    k = jnp.broadcast_to(jnp.asarray(top_k, jnp.int32), (b,))
    kk = jnp.clip(jnp.maximum(k, min_tokens_to_keep), 1, v)
    m = min(TOP_K_PARTIAL, v)

    def partial(x):
        largest = jax.lax.top_k(x, m)[0]  # b m, descending
        return jnp.take_along_axis(largest, jnp.minimum(kk, m)[:, None] - 1, axis=-1)

    def full(x):
        return jnp.take_along_axis(jnp.sort(x, axis=-1), (v - kk)[:, None], axis=-1)

    kth = jax.lax.cond(jnp.all((k <= 0) | (kk <= m)), partial, full, logits)  # b 1: the k-th largest
    return jnp.where((k > 0)[:, None] & (logits < kth), jnp.float32(_NEG_INF), logits)


def _two_sum(a: Array, b: Array) -> tuple[Array, Array]:
    """Knuth's TwoSum: `a + b == s + err` exactly (XLA does not reassociate floats)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


_DIGIT_BITS = 12  # p in [0, 1] is cut into 7 base-4096 digits: 84 bits of fixed point
_DIGITS = 7


def _cumsum_like_torch_cpu(p: Float[Array, "b v"]) -> Float[Array, "b v"]:
    """Prefix sums of probabilities, each correctly rounded to float32 — what `torch.cumsum` on a
    CPU float32 tensor returns (it accumulates in double and rounds each prefix once).

    Why: a float32 running sum drifts by ulps and flips `cum <= 1 - top_p` on exact boundaries
    (ten equal probabilities 0.1f with top_p 0.3: torch keeps 3, a float32 scan keeps 4). Here
    every p is split exactly into base-2^12 digits, the digits are summed as int32 (exact in any
    order, so XLA's fast blocked cumsum is fine), carries are propagated, and the fixed-point
    result is rounded to float32 once through a float-float (TwoSum) cascade. What is dropped —
    digits below 2^-84 and subnormal p, which XLA flushes — totals < v·2^-84 ≈ 2e-22 absolute, so
    the rounding agrees with torch's wherever a prefix sum exceeds ~1e-10 (below that a 1-in-1e3
    near-midpoint chance), far under any threshold `1 - top_p` a real setting produces.
    Cost: 7 int32 cumsums over (b, v) (timed in benchmarks/RESULTS.md, "Design measurements").
    """
    scale = float(1 << _DIGIT_BITS)
    digits, r = [], p
    for _ in range(_DIGITS):
        r = r * scale  # exact: a power of two
        d = jnp.floor(r)
        digits.append(d.astype(jnp.int32))
        r = r - d  # exact: the fraction of a float is a float
    sums = jnp.cumsum(jnp.stack(digits), axis=-1)  # (digits, b, v) int32, each < v·4096
    sums = [sums[k] for k in range(_DIGITS)]
    mask = (1 << _DIGIT_BITS) - 1
    for k in range(_DIGITS - 1, 0, -1):  # carry into the next more significant digit
        sums[k - 1] = sums[k - 1] + (sums[k] >> _DIGIT_BITS)
        sums[k] = sums[k] & mask
    # value = Σ_k S_k·2^(-12(k+1)), every term exact in float32; add smallest first, keeping the
    # rounding errors in `lo` so the result is rounded once.
    hi = sums[-1].astype(jnp.float32) * 2.0 ** (-_DIGIT_BITS * _DIGITS)
    lo = jnp.zeros_like(hi)
    for k in range(_DIGITS - 2, -1, -1):
        hi, err = _two_sum(sums[k].astype(jnp.float32) * 2.0 ** (-_DIGIT_BITS * (k + 1)), hi)
        lo = lo + err
    return hi + lo


def top_p_cut(top_p: float) -> np.float32:
    """The threshold torch compares cumulative probabilities with: `1 - top_p` in double, cast to
    float32 once (0 where top-p is off)."""
    return np.float32(1.0 - top_p) if top_p < 1.0 else np.float32(0.0)


def apply_top_p(logits: Float[Array, "b v"], cut: RowFloat, min_tokens_to_keep: int = 1) -> Float[Array, "b v"]:
    """`TopPLogitsWarper` given its threshold `cut = top_p_cut(top_p)` (per row, traced): sort
    ascending, softmax, cumsum; drop the tokens whose cumulative probability is `<= cut`, but
    always keep the `min_tokens_to_keep` largest. A cut of 0 (top_p = 1.0) changes nothing, as HF
    adds no warper then; when no row cuts, the sort is skipped at run time (`lax.cond`)."""
    b, v = logits.shape
    cut = _per_row(cut, b, jnp.float32)  # b 1

    def cut_rows(logits):
        iota = jax.lax.broadcasted_iota(jnp.int32, (b, v), 1)
        # One stable sort carries the ids along (HF: `torch.sort(scores, descending=False)`).
        sorted_logits, sorted_ids = jax.lax.sort((logits, iota), dimension=1, is_stable=True, num_keys=1)
        cumulative = _cumsum_like_torch_cpu(jax.nn.softmax(sorted_logits, axis=-1))  # (b, v) ascending
        drop_sorted = (cumulative <= cut) & (cut > 0)
        keep_tail = jnp.arange(v) >= v - min_tokens_to_keep  # (v,) the largest entries
        drop_sorted = drop_sorted & ~keep_tail
        # Scatter back to vocabulary order (a permutation: every slot written once).
        drop = jnp.zeros((b, v), jnp.bool_).at[jnp.arange(b)[:, None], sorted_ids].set(drop_sorted)
        return jnp.where(drop, jnp.float32(_NEG_INF), logits)

    return jax.lax.cond(jnp.any(cut > 0), cut_rows, lambda x: x, logits)


def warp(logits: Float[Array, "b v"], values: SamplerValues) -> Float[Array, "b v"]:
    """The warpers in HF's order, each row with its own values (meaningful for sampling rows)."""
    logits = apply_temperature(logits, values.temperature)
    logits = apply_top_k(logits, values.top_k)
    return apply_top_p(logits, values.top_p_cut)


def row_keys(key: PRNGKey, rows: int) -> PRNGKey:
    """Independent per-row keys from one key (row i's key depends only on `key` and i)."""
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(rows))


def pick(
    scores: Float[Array, "b v"], keys: PRNGKey | None, values: SamplerValues, sample: bool = True
) -> Int[Array, " b"]:
    """Final choice per row: a categorical draw of the warped scores (HF: softmax + multinomial;
    here Gumbel-max, the same distribution, -inf never drawn) with the row's own key, or argmax
    of the processed scores (first max on ties, as `torch.argmax`) for rows that do not sample.
    `sample=False` (static: no row samples) compiles argmax only."""
    greedy = jnp.argmax(scores, axis=-1).astype(jnp.int32)
    if not sample:
        return greedy
    if keys is None:
        raise ValueError("sampling needs PRNG keys, one per row (got keys=None)")
    drawn = jax.vmap(lambda k, s: jax.random.categorical(k, s))(keys, warp(scores, values)).astype(jnp.int32)
    return jnp.where(values.do_sample, drawn, greedy)


# --------------------------------------------------------------------------------------------
# The two pipelines
# --------------------------------------------------------------------------------------------


def talker_scores(
    logits: Float[Array, "b v"],
    seen: Bool[Array, "b v"],
    num_generated: Int[Array, ""] | Int[Array, " b"] | int,
    values: SamplingValues,
    program: SamplingProgram,
) -> Float[Array, "b v"]:
    """The talker's processed scores (penalty, min new tokens, suppression), fp32; the warpers
    apply in `pick` for the rows that sample."""
    scores = logits.astype(jnp.float32)  # HF upcasts the last-position logits before processing
    scores = apply_repetition_penalty(scores, seen, values.repetition_penalty)
    scores = apply_min_new_tokens(scores, num_generated, values.min_new_tokens, program.eos_token_id)
    return apply_suppression(scores, program.suppress)


def sample_talker(
    logits: Float[Array, "b v"],
    seen: Bool[Array, "b v"],
    num_generated: Int[Array, ""] | Int[Array, " b"] | int,
    keys: PRNGKey | None,
    values: SamplingValues,
    program: SamplingProgram,
) -> Int[Array, " b"]:
    """Codebook 0 for this step. Follow with `seen = mark_seen(seen, tokens)`."""
    scores = talker_scores(logits, seen, num_generated, values, program)
    return pick(scores, keys, values.talker, program.talker_sample)


def sample_subtalker(
    logits: Float[Array, "b v"], keys: PRNGKey | None, values: SamplerValues, sample: bool = True
) -> Int[Array, " b"]:
    """One residual codebook token per row: no penalty, suppression or min length; warpers only."""
    return pick(logits.astype(jnp.float32), keys, values, sample)


__all__ = [
    "SUPPRESSED_TAIL",
    "TALKER_MIN_NEW_TOKENS",
    "SamplerConfig",
    "SamplerValues",
    "SamplingConfig",
    "SamplingProgram",
    "SamplingValues",
    "TalkerSamplingConfig",
    "apply_min_new_tokens",
    "apply_repetition_penalty",
    "apply_suppression",
    "apply_temperature",
    "apply_top_k",
    "apply_top_p",
    "init_seen",
    "mark_seen",
    "pick",
    "row_keys",
    "sample_subtalker",
    "sample_talker",
    "suppress_ranges",
    "suppression_mask",
    "talker_scores",
    "top_p_cut",
    "warp",
]
