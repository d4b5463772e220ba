"""Tests for `qwen3tts_jax.sampling` against HF's logits processors (transformers 4.57.3).

The HF chain is built by `GenerationMixin._get_logits_processor` itself, from the same kwargs the
reference's `generate` passes, so the processor *order* is tested too, not only each processor.
Scores must match to 1e-6 on finite entries with identical -inf masks; the one allowed exception
is top-p on rows with ties straddling the cut, where HF's unstable `torch.sort` decides.
"""

from __future__ import annotations

import dataclasses
import types
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import Array, Bool, Int

from qwen3tts_jax import sampling as S
from qwen3tts_jax.config import GenerationConfig

VOCAB, EOS = 3072, 2150  # released talker codec vocabulary and codec_eos_token_id
SUB_VOCAB = 2048
TOL = 1e-6
ROWS = 4  # rows per logits kind

# (do_sample, temperature, top_k, top_p, repetition_penalty)
TALKER_SETTINGS = [
    (False, 0.9, 50, 1.0, 1.05),  # greedy: processors only
    (False, 1.0, 0, 1.0, 1.0),  # greedy, no penalty
    (True, 0.9, 50, 1.0, 1.05),  # generation_config.json as released
    (True, 0.7, 1, 1.0, 1.05),
    (True, 1.0, 5, 0.9, 1.3),
    (True, 1.3, 0, 0.3, 1.05),
    (True, 0.5, 50, 0.9, 2.0),
    (True, 0.9, 0, 1.0, 1.0),
]
SUB_SETTINGS = [
    (False, 0.9, 50, 1.0),
    (True, 0.9, 50, 1.0),
    (True, 0.7, 5, 0.9),
    (True, 1.0, 1, 0.3),
    (True, 1.2, 0, 0.9),
]
STEPS = (0, 1, 2, 7)
HIST = 8  # fixed history buffer: one compile per config, the step count is traced


# ------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------


def logits_batch(vocab: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of several kinds, and which rows have ties (where top-p may legitimately differ)."""
    rng = np.random.default_rng(seed)
    normal = rng.standard_normal((ROWS, vocab)) * 3
    large = rng.standard_normal((ROWS, vocab)) * 20  # exercises exact division (ulps ~2e-6)
    ties = rng.integers(-3, 4, (ROWS, vocab)).astype(np.float64)  # 7 distinct values
    with_inf = rng.standard_normal((ROWS, vocab)) * 3
    with_inf[rng.random((ROWS, vocab)) < 0.3] = -np.inf
    peaked = rng.standard_normal((ROWS, vocab))
    peaked[np.arange(ROWS), rng.integers(0, 40, ROWS)] += 40.0  # also on ids the history repeats
    peaked[:, EOS % vocab] += 30.0  # EOS nearly certain once allowed
    flat = np.zeros((ROWS, vocab))
    flat[1] = 1.5  # all-equal rows at a couple of levels
    flat[2, :10] = 0.5
    kinds = [normal, large, ties, with_inf, peaked, flat]
    tie_rows = np.concatenate([np.full(ROWS, k is ties or k is flat) for k in kinds])
    return np.concatenate(kinds).astype(np.float32), tie_rows


def history(batch: int, seed: int = 1) -> np.ndarray:
    """Codebook-0 histories with repeats (ids drawn from a small range) that overlap the peaks."""
    return np.random.default_rng(seed).integers(0, 40, (batch, HIST)).astype(np.int32)


def talker_cfg(do_sample, temperature, top_k, top_p, penalty, vocab=VOCAB, eos=EOS, tail=1024):
    gen = GenerationConfig(
        do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=penalty
    )
    return S.SamplingConfig.from_generation_config(gen, vocab_size=vocab, eos_token_id=eos, suppressed_tail=tail)


def hf_chain(**kwargs):
    """HF's processor list exactly as `generate` builds it for a prompt given as embeddings."""
    import torch
    from transformers import GenerationConfig as HFGen
    from transformers.generation.utils import GenerationMixin

    class _Gen(GenerationMixin):
        pass

    from transformers.utils import logging as hf_logging

    eos = kwargs.get("eos_token_id")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # greedy + temperature/top_k: "flags not valid" notices
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gc = HFGen(**kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    gc._eos_token_tensor = None if eos is None else torch.tensor([eos])  # `_prepare_special_tokens`
    return _Gen()._get_logits_processor(gc, input_ids_seq_length=0, encoder_input_ids=None, device="cpu")


def hf_talker_chain(do_sample, temperature, top_k, top_p, penalty, vocab=VOCAB, eos=EOS):
    # The kwargs of `Qwen3TTSForConditionalGeneration.generate`'s `talker_kwargs`.
    return hf_chain(
        do_sample=do_sample,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=penalty,
        min_new_tokens=2,
        eos_token_id=eos,
        suppress_tokens=[i for i in range(vocab - 1024, vocab) if i != eos],
    )


def run_hf(chain, input_ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
    import torch

    scores = torch.from_numpy(logits.copy())
    return chain(torch.from_numpy(input_ids.astype(np.int64)), scores).numpy()


def assert_scores_match(ours, ref, tie_rows, what: str, top_p_active: bool) -> None:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert not np.isnan(ours).any() and not np.isnan(ref).any(), what
    ours_inf, ref_inf = np.isneginf(ours), np.isneginf(ref)
    both = ~ours_inf & ~ref_inf
    err = float(np.max(np.abs(ours[both] - ref[both]))) if both.any() else 0.0
    assert err <= TOL, f"{what}: max abs err on finite entries {err:.3e}"
    for r in np.nonzero((ours_inf != ref_inf).any(-1))[0]:
        # Only top-p on a row with ties may choose different members of the tied class.
        assert top_p_active and tie_rows[r], f"{what}: -inf masks differ in row {r}"
        np.testing.assert_allclose(
            np.sort(ours[r][~ours_inf[r]]),
            np.sort(ref[r][~ref_inf[r]]),
            atol=TOL,
            err_msg=f"{what}: row {r} keeps a different multiset of scores",
        )


def _hf_scores(processed, values: S.SamplerValues):
    """HF's `next_token_scores`: the processed scores, warped on the rows that sample."""
    return jnp.where(values.do_sample[:, None], S.warp(processed, values), processed)


def _full_talker_scores(logits, seen, n, values, program):
    return _hf_scores(S.talker_scores(logits, seen, n, values, program), values.talker)


# Jitted once per module (op-by-op eager dispatch compiles every primitive and is slower). The
# settings go in as traced per-row values: one compile serves every setting.
_talker_scores = jax.jit(_full_talker_scores, static_argnames="program")
_subtalker_scores = jax.jit(lambda x, values: _hf_scores(x.astype(jnp.float32), values))
_sample_talker = jax.jit(S.sample_talker, static_argnames="program")
_sample_subtalker = jax.jit(S.sample_subtalker, static_argnames="sample")


def seen_from_tokens(  # the loop carries `S.mark_seen`; this rebuilds it from a history
    history: Int[Array, "b t"], length: Int[Array, ""] | Int[Array, " b"] | int, vocab: int
) -> Bool[Array, "b v"]:
    """The seen mask of the first `length` tokens of each row: the twin of carrying `mark_seen`
    through the loop, for callers that keep a token history instead (`length` may be traced and
    per row, `vocab` is static). O(t) per call, so prefer `mark_seen` inside the loop."""
    b, t = history.shape
    length = jnp.asarray(length)
    length = jnp.reshape(length, length.shape + (1,))  # () -> (1,), (b,) -> (b, 1)
    valid = jnp.arange(t) < length  # (b | 1, t) positions already generated
    # Invalid slots scatter into a dummy column `vocab`, dropped afterwards.
    ids = jnp.where(valid, history, vocab)  # (b, t)
    seen = jnp.zeros((b, vocab + 1), jnp.bool_).at[jnp.arange(b)[:, None], ids].set(True)
    return seen[:, :vocab]


_seen_from_tokens = jax.jit(seen_from_tokens, static_argnames="vocab")
_mark_seen = jax.jit(S.mark_seen)


# ------------------------------------------------------------------------------------------------
# Parity with HF
# ------------------------------------------------------------------------------------------------


@pytest.mark.reference
@pytest.mark.parametrize("setting", TALKER_SETTINGS, ids=lambda s: "-".join(map(str, s)))
def test_talker_scores_match_hf(setting, torch_threads):
    logits, tie_rows = logits_batch(VOCAB)
    hist = history(len(logits))
    cfg = talker_cfg(*setting)
    chain = hf_talker_chain(*setting)
    for step in STEPS:
        seen = _seen_from_tokens(jnp.asarray(hist), jnp.int32(step), vocab=VOCAB)
        values = cfg.values(len(logits))
        ours = _talker_scores(jnp.asarray(logits), seen, jnp.int32(step), values, program=cfg.program())
        ref = run_hf(chain, hist[:, :step], logits)
        what = f"talker {setting} step {step}"
        assert_scores_match(ours, ref, tie_rows, what, top_p_active=setting[0] and setting[3] < 1.0)
        # EOS stays blocked for exactly the first two tokens, then the peaked rows pick it.
        assert np.isneginf(np.asarray(ours)[:, EOS]).all() == (step < 2), what
        if not setting[0]:  # greedy: the very same pick (first max on ties, as torch.argmax)
            picks = S.pick(ours, None, values.talker, sample=False)
            np.testing.assert_array_equal(np.asarray(picks), ref.argmax(-1), err_msg=what)


@pytest.mark.reference
@pytest.mark.parametrize("setting", SUB_SETTINGS, ids=lambda s: "-".join(map(str, s)))
def test_subtalker_scores_match_hf(setting, torch_threads):
    logits, tie_rows = logits_batch(SUB_VOCAB, seed=3)
    do_sample, temperature, top_k, top_p = setting
    cfg = S.SamplerConfig(do_sample, temperature, top_k, top_p)
    # What `code_predictor.generate` gets: the four switches, no EOS, no penalty.
    chain = hf_chain(do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p)
    ours = _subtalker_scores(jnp.asarray(logits), cfg.values(len(logits)))
    ref = run_hf(chain, np.zeros((len(logits), 0), np.int64), logits)
    assert_scores_match(ours, ref, tie_rows, f"subtalker {setting}", top_p_active=do_sample and top_p < 1.0)
    if not do_sample:
        picks = _sample_subtalker(jnp.asarray(logits), None, cfg.values(len(logits)), sample=False)
        np.testing.assert_array_equal(np.asarray(picks), ref.argmax(-1))


@pytest.mark.reference
def test_individual_processors_match_hf(torch_threads):
    """Each piece on its own, so a failure above points at one processor."""
    import torch
    from transformers.generation import logits_process as lp

    logits, tie_rows = logits_batch(VOCAB, seed=5)
    hist = history(len(logits))
    t_logits, t_hist = torch.from_numpy(logits), torch.from_numpy(hist.astype(np.int64))
    ranges = S.suppress_ranges(VOCAB - 1024, VOCAB, (EOS,))
    top_ks, top_ps = (1, 5, 50, VOCAB + 10), (0.3, 0.9, 0.999)

    @jax.jit
    def ours_all(x, seen):  # one compile for every case
        out = {
            "penalty 1.05": S.apply_repetition_penalty(x, seen, 1.05),
            "penalty 0.5": S.apply_repetition_penalty(x, seen, 0.5),
            "suppress": S.apply_suppression(x, ranges),
            "temperature 0.9": S.apply_temperature(x, 0.9),
        }
        out |= {f"top_k {k}": S.apply_top_k(x, k) for k in top_ks}
        out |= {f"top_p {p}": S.apply_top_p(x, S.top_p_cut(p)) for p in top_ps}
        return out | {f"min_new_tokens step {n}": S.apply_min_new_tokens(x, n, 2, EOS) for n in (0, 1, 2)}

    ours = ours_all(jnp.asarray(logits), _seen_from_tokens(jnp.asarray(hist), HIST, vocab=VOCAB))
    refs = {
        "penalty 1.05": lp.RepetitionPenaltyLogitsProcessor(1.05)(t_hist, t_logits.clone()),
        "penalty 0.5": lp.RepetitionPenaltyLogitsProcessor(0.5)(t_hist, t_logits.clone()),
        "suppress": lp.SuppressTokensLogitsProcessor(S.TalkerSamplingConfig(suppress=ranges).suppressed_ids)(
            t_hist, t_logits
        ),
        "temperature 0.9": lp.TemperatureLogitsWarper(0.9)(t_hist, t_logits),
    }
    refs |= {f"top_k {k}": lp.TopKLogitsWarper(k)(t_hist, t_logits) for k in top_ks}
    refs |= {f"top_p {p}": lp.TopPLogitsWarper(p)(t_hist, t_logits) for p in top_ps}
    for n in (0, 1, 2):
        refs[f"min_new_tokens step {n}"] = lp.MinNewTokensLengthLogitsProcessor(0, 2, EOS)(t_hist[:, :n], t_logits)
    assert refs.keys() == ours.keys()
    for what, ref in refs.items():
        assert_scores_match(ours[what], ref.numpy(), tie_rows, what, top_p_active=what.startswith("top_p"))


@pytest.mark.reference
def test_greedy_loop_matches_hf(torch_threads):
    """A jitted `lax.while_loop` with a traced step counter and a carried seen mask picks the same
    tokens as HF's processors replayed over a growing `input_ids` (penalty flips picks, EOS is held
    back for two steps)."""
    steps, b = 12, 3
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((steps, b, VOCAB)).astype(np.float32)
    logits[:, :, 10:14] += 6.0 + 0.01 * np.arange(4)  # near-tied favourites: the penalty rotates them
    logits[:3, :, EOS] += 50.0  # EOS wins unless blocked by min_new_tokens (steps 0, 1)
    logits[:, :, VOCAB - 5] += 80.0  # a suppressed id that would otherwise always win
    cfg = talker_cfg(False, 1.0, 0, 1.0, 1.05)

    @jax.jit
    def run(all_logits):
        def body(state):
            t, seen, out = state
            tok = S.sample_talker(all_logits[t], seen, t, None, cfg.values(b), cfg.program())
            return t + 1, S.mark_seen(seen, tok), out.at[:, t].set(tok)

        init = (jnp.int32(0), S.init_seen(b, VOCAB), jnp.zeros((b, steps), jnp.int32))
        return jax.lax.while_loop(lambda s: s[0] < steps, body, init)[2]

    ours = np.asarray(run(jnp.asarray(logits)))
    chain = hf_talker_chain(False, 1.0, 0, 1.0, 1.05)
    ids = np.zeros((b, 0), np.int64)
    for t in range(steps):
        ids = np.concatenate([ids, run_hf(chain, ids, logits[t]).argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(ours, ids)
    assert (ours[:, :2] != EOS).all() and (ours[:, 2] == EOS).all()
    assert len(set(ours[0, 3:].tolist())) > 1  # the penalty did change the favourite


@pytest.mark.reference
def test_sampled_scan_scores_match_hf(torch_threads):
    """Under `lax.scan` with sampling, each step's scores equal HF's given the same history."""
    steps, b = 6, 4
    rng = np.random.default_rng(11)
    logits = (rng.standard_normal((steps, b, VOCAB)) * 4).astype(np.float32)
    setting = (True, 0.9, 50, 0.9, 1.05)
    cfg = talker_cfg(*setting)

    @jax.jit
    def run(all_logits, key):
        def body(carry, xs):
            seen, t = carry
            step_logits, k = xs
            values = cfg.values(b)
            processed = S.talker_scores(step_logits, seen, t, values, cfg.program())
            tok = S.pick(processed, S.row_keys(k, b), values.talker)
            return (S.mark_seen(seen, tok), t + 1), (_hf_scores(processed, values.talker), tok)

        keys = jax.random.split(key, steps)
        return jax.lax.scan(body, (S.init_seen(b, VOCAB), jnp.int32(0)), (all_logits, keys))[1]

    scores, toks = map(np.asarray, run(jnp.asarray(logits), jax.random.key(0)))
    toks = toks.T  # (b, steps), like HF's input_ids
    chain = hf_talker_chain(*setting)
    for t in range(steps):
        ref = run_hf(chain, toks[:, :t], logits[t])
        assert_scores_match(scores[t], ref, np.zeros(b, bool), f"scan step {t}", top_p_active=True)
        assert np.isfinite(scores[t][np.arange(b), toks[:, t]]).all()  # never draws a removed id


# ------------------------------------------------------------------------------------------------
# Sampling behaviour (JAX only)
# ------------------------------------------------------------------------------------------------


def test_same_key_same_sample_and_keys_differ():
    cfg = S.SamplerConfig(True, 1.0, 50, 1.0)
    logits = jnp.zeros((32, SUB_VOCAB))  # flat: 50+ equally likely ids per row
    v = cfg.values(32)
    a = _sample_subtalker(logits, S.row_keys(jax.random.key(1), 32), v)
    b = _sample_subtalker(logits, S.row_keys(jax.random.key(1), 32), v)
    c = _sample_subtalker(logits, S.row_keys(jax.random.key(2), 32), v)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert (np.asarray(a) != np.asarray(c)).any()
    assert len(set(np.asarray(a).tolist())) > 5  # rows draw independently, each with its own key
    # A row's draw depends on its own key only: the same key in another batch draws the same.
    solo = _sample_subtalker(logits[:1], S.row_keys(jax.random.key(1), 32)[3:4], cfg.values(1))
    assert int(solo[0]) == int(a[3])
    assert a.dtype == jnp.int32 and a.shape == (32,)


@pytest.mark.parametrize("pipeline", ["talker", "subtalker"])
def test_empirical_distribution_matches_processed_softmax(pipeline):
    """Many draws (fixed key: deterministic) against softmax of the processed scores: no draw of a
    removed id, total-variation distance and a chi-square statistic within loose bounds."""
    vocab, n, m = 96, 40_000, 256
    rng = np.random.default_rng(2)
    row = (rng.standard_normal(vocab) * 2).astype(np.float32)
    key = jax.random.key(1234)
    if pipeline == "talker":  # penalty, suppression (ids 64..95 except EOS 70) and all warpers
        cfg = talker_cfg(True, 0.8, 20, 0.95, 1.3, vocab=vocab, eos=70, tail=32)
        row[70] = 4.0
        seen = _mark_seen(S.init_seen(1, vocab), jnp.array([int(np.argmax(row))]))
        processed = S.talker_scores(jnp.asarray(row)[None], seen, 5, cfg.values(1), cfg.program())
        few = _sample_talker(
            jnp.broadcast_to(row, (m, vocab)),
            jnp.broadcast_to(seen, (m, vocab)),
            5,
            S.row_keys(key, m),
            cfg.values(m),
            program=cfg.program(),
        )
        sampler = cfg.talker.sampler
    else:
        sampler = S.SamplerConfig(True, 1.2, 30, 0.9)
        processed = jnp.asarray(row)[None]
        few = _sample_subtalker(jnp.broadcast_to(row, (m, vocab)), S.row_keys(key, m), sampler.values(m))
    scores = _hf_scores(processed, sampler.values(1))
    # The full pipeline is `pick` of the processed scores: check that once, then draw many from
    # `pick` alone (each row with its own key).
    pick = jax.jit(S.pick)
    np.testing.assert_array_equal(
        np.asarray(few),
        np.asarray(pick(jnp.broadcast_to(processed, (m, vocab)), S.row_keys(key, m), sampler.values(m))),
    )
    draws = pick(jnp.broadcast_to(processed, (n, vocab)), S.row_keys(key, n), sampler.values(n))
    scores = np.asarray(scores)[0]
    p = np.exp(scores - scores.max())
    p /= p.sum()
    counts = np.bincount(np.asarray(draws), minlength=vocab)
    assert counts[p == 0].sum() == 0, "drew a filtered token"
    support = p > 0
    assert 3 < support.sum() < vocab  # the test exercises both filtering and randomness
    tv = 0.5 * np.abs(counts / n - p).sum()
    chi2 = float((((counts - n * p) ** 2)[support] / (n * p[support])).sum())
    df = int(support.sum()) - 1
    print(f"[stats] {pipeline}: TV {tv:.4f}, chi2 {chi2:.1f} (df {df})")
    assert tv < 0.02
    assert chi2 < df + 6 * np.sqrt(2 * df)  # ~6 sigma; the key is fixed, so this never flakes


def test_top_k_keeps_all_ties_at_kth_value():
    x = jnp.array([[3.0, 1.0, 2.0, 2.0, 2.0, -jnp.inf, 0.0]])
    out = np.asarray(S.apply_top_k(x, 2))
    np.testing.assert_array_equal(np.isfinite(out[0]), [True, False, True, True, True, False, False])
    # k beyond the finite entries: threshold is -inf, nothing more is removed
    np.testing.assert_array_equal(np.asarray(S.apply_top_k(x, 6)), np.asarray(x))


def test_top_k_partial_and_full_sort_paths_give_the_same_threshold():
    """`apply_top_k` takes the k-th largest from `lax.top_k` when every row's k is within
    `TOP_K_PARTIAL`, else from a full sort: each row keeps what the sorted threshold keeps, on
    scores with many ties (integer-valued) and -inf entries, whichever path the batch takes."""
    v = 700
    rng = np.random.default_rng(11)
    x = rng.integers(-40, 40, size=(7, v)).astype(np.float32)
    x[:, ::9] = -np.inf
    m = S.TOP_K_PARTIAL
    ks = np.array([1, 50, m, 0, m + 1, 400, v + 5], np.int32)

    def expected(row, k):
        if k == 0:
            return row
        kth = np.sort(row)[v - min(k, v)]
        return np.where(row < kth, -np.inf, row)

    top_k = jax.jit(S.apply_top_k)
    for rows in (slice(0, 4), slice(0, 7), slice(4, 7)):  # partial path, mixed (full), full
        out = np.asarray(top_k(jnp.asarray(x[rows]), jnp.asarray(ks[rows])))
        for r, (row, k) in enumerate(zip(x[rows], ks[rows])):
            np.testing.assert_array_equal(out[r], expected(row, k), err_msg=f"rows {rows}, k={k}")


def test_top_p_without_a_cut_is_the_identity_and_cuts_only_its_rows():
    x = jax.random.normal(jax.random.PRNGKey(2), (3, 300))
    top_p = jax.jit(S.apply_top_p)
    np.testing.assert_array_equal(np.asarray(top_p(x, jnp.zeros(3, jnp.float32))), np.asarray(x))
    cut = jnp.array([0.0, S.top_p_cut(0.5), 0.0], jnp.float32)
    out = np.asarray(top_p(x, cut))
    np.testing.assert_array_equal(out[[0, 2]], np.asarray(x)[[0, 2]])
    np.testing.assert_array_equal(out[1], np.asarray(top_p(x[1:2], cut[1:2]))[0])
    assert 0 < np.isfinite(out[1]).sum() < 300


def test_top_p_always_keeps_the_best_token():
    x = jnp.array([[0.0, 10.0, 1.0], [5.0, 5.0, 5.0]])
    out = np.asarray(jax.jit(S.apply_top_p)(x, S.top_p_cut(0.01)))
    np.testing.assert_array_equal(np.isfinite(out), [[False, True, False], [False, False, True]])


def test_seen_mask_twins_agree():
    """Carrying `mark_seen` through steps == rebuilding from a token history of traced length."""
    hist = jnp.asarray(history(5))
    seen = S.init_seen(5, 64)
    for t in range(HIST + 1):
        np.testing.assert_array_equal(np.asarray(seen), np.asarray(_seen_from_tokens(hist, t, vocab=64)))
        if t < HIST:
            seen = _mark_seen(seen, hist[:, t])
    per_row = _seen_from_tokens(hist, jnp.array([0, 1, 2, 3, 8]), vocab=64)
    assert np.asarray(per_row).sum(-1)[0] == 0 and np.asarray(per_row)[1, hist[1, 0]]


def test_min_new_tokens_per_row_counter():
    x = jnp.zeros((3, 8))
    out = np.asarray(S.apply_min_new_tokens(x, jnp.array([0, 1, 2]), 2, 5))
    np.testing.assert_array_equal(np.isneginf(out[:, 5]), [True, True, False])
    assert np.isfinite(np.delete(out, 5, axis=1)).all()


def test_bf16_logits_are_processed_in_fp32():
    x = jnp.ones((2, 16), jnp.bfloat16)
    cfg = talker_cfg(True, 0.9, 5, 0.9, 1.05, vocab=16, eos=3, tail=4)
    f = partial(_full_talker_scores, values=cfg.values(2), program=cfg.program())
    assert jax.eval_shape(f, x, S.init_seen(2, 16), 0).dtype == jnp.float32
    assert (
        jax.eval_shape(partial(_hf_scores, values=cfg.subtalker.values(2)), x.astype(jnp.float32)).dtype == jnp.float32
    )


# ------------------------------------------------------------------------------------------------
# Configs
# ------------------------------------------------------------------------------------------------


def test_from_generation_config_as_reference():
    cfg = S.SamplingConfig.from_configs(
        GenerationConfig(), types.SimpleNamespace(vocab_size=VOCAB, codec_eos_token_id=EOS)
    )
    t = cfg.talker
    assert t.sampler == S.SamplerConfig(do_sample=True, temperature=0.9, top_k=50, top_p=1.0)
    assert (t.repetition_penalty, t.min_new_tokens, t.eos_token_id) == (1.05, 2, EOS)
    # The reference's list comprehension, verbatim in meaning.
    assert t.suppressed_ids == tuple(i for i in range(VOCAB - 1024, VOCAB) if i not in (EOS,))
    assert t.suppress == ((2048, 2150), (2151, 3072))
    assert cfg.subtalker == S.SamplerConfig(True, 0.9, 50, 1.0)
    gen = dataclasses.replace(GenerationConfig(), subtalker_dosample=False, subtalker_top_k=7)
    assert S.SamplingConfig.from_generation_config(gen, vocab_size=VOCAB, eos_token_id=EOS).subtalker.top_k == 7


def test_configs_are_hashable_and_values_are_traced():
    a = talker_cfg(True, 0.9, 50, 1.0, 1.05)
    b = talker_cfg(True, 0.9, 50, 1.0, 1.05)
    assert a == b and hash(a) == hash(b) and hash(a.program()) == hash(b.program())
    assert S.SamplerConfig(True, 1, 0, 1) == S.SamplerConfig(True, 1.0, 0, 1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.talker.min_new_tokens = 3  # type: ignore[misc]
    traces = []

    def scores(x, values, program):
        traces.append(program)
        return _full_talker_scores(x, S.init_seen(1, VOCAB), 0, values, program)

    f = jax.jit(scores, static_argnames="program")
    x = jnp.zeros((1, VOCAB))
    for setting in [
        (True, 0.9, 50, 1.0, 1.05),
        (True, 0.7, 5, 0.9, 1.3),
        (True, 1.2, 0, 0.5, 1.0),
        (True, 0.3, 1, 0.99, 2.0),
    ]:
        cfg = talker_cfg(*setting)
        f(x, cfg.values(1), program=cfg.program())
    assert len(traces) == 1  # new sampling values are traced, not a new program
    greedy = talker_cfg(False, 0.9, 50, 1.0, 1.05)
    assert greedy.program() != a.program() and a.program().covers(greedy.program())
    assert not greedy.program().covers(a.program())


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("temperature", 0.0, "temperature must be > 0 when sampling"),
        ("temperature", -1.0, "temperature"),
        ("top_p", 0.0, r"top_p must be in \(0, 1\]"),
        ("top_p", 1.5, "top_p"),
        ("top_k", -1, "top_k must be an int >= 0"),
        ("top_k", 2.5, "top_k"),
        ("repetition_penalty", 0.0, "repetition_penalty must be"),
        ("subtalker_temperature", 0.0, "subtalker_temperature must be > 0"),
        ("subtalker_top_p", 0.0, "subtalker_top_p"),
        ("subtalker_top_k", -3, "subtalker_top_k"),
        ("subtalker_dosample", "yes", "subtalker_dosample must be a bool"),  # the keyword as spelled
        ("subtalker_temperature", -2.0, r"set subtalker_dosample=False"),
    ],
)
def test_validation_names_the_argument(field, value, match):
    gen = dataclasses.replace(GenerationConfig(), **{field: value})
    with pytest.raises(ValueError, match=match):
        S.SamplingConfig.from_generation_config(gen, vocab_size=VOCAB, eos_token_id=EOS)


def test_validation_other_cases():
    S.SamplerConfig(do_sample=False, temperature=0.0)  # greedy ignores temperature, as HF
    with pytest.raises(ValueError, match="eos_token_id"):
        S.SamplingConfig.from_generation_config(GenerationConfig(), vocab_size=VOCAB, eos_token_id=VOCAB)
    with pytest.raises(ValueError, match="min_new_tokens=2 needs an eos_token_id"):
        S.TalkerSamplingConfig(min_new_tokens=2)
    with pytest.raises(ValueError, match="suppress range"):
        S.TalkerSamplingConfig(suppress=((5, 5),))
    with pytest.raises(ValueError, match="PRNG key"):
        S.pick(jnp.zeros((1, 4)), None, S.SamplerConfig(True).values(1))
    assert S.suppress_ranges(0, 10, (0, 3, 9, 42)) == ((1, 3), (4, 9))
