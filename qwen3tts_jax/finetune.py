"""Fine-tuning the talker and the code predictor: the loss, a jitted AdamW step, checkpoints.

Mirrors the training objective of the official recipe (QwenLM/Qwen3-TTS `finetuning/sft_12hz.py`
with qwen-tts 0.1.1's `Qwen3TTSTalkerForConditionalGeneration.forward(labels=…)`,
`forward_sub_talker_finetune` and `Qwen3TTSTalkerCodePredictorModelForConditionalGeneration.forward_finetune`):

* talker: `transformers.ForCausalLMLoss` on the codec_head logits — labels shifted by one
  (logits at position i score the label at i+1), cross-entropy in fp32, ignore_index -100, mean
  over the valid targets of the batch (c0 of every frame and the EOS; see `train_data`);
* sub-talker, teacher-forced per frame: input `[h_{p-1}, C(c0), E_0(c1), …, E_13(c14)]` where
  `h_{p-1}` is the talker's final-norm hidden at the position *before* frame p (the one that
  predicted its c0, i.e. generation's `past_hidden`, not detached); logits `lm_head[k](h[:, k+1])`;
  cross-entropy mean over frames × codebooks;
* total = talker + 0.3 · sub-talker (the recipe's weighting, `TrainConfig.subtalker_weight`);
* AdamW (torch defaults as the recipe: β 0.9/0.999, ε 1e-8, weight decay 0.01 on every trained
  tensor), global-norm clipping at 1.0 — here with a warm-up + cosine schedule, optional gradient
  accumulation (the recipe accumulates 4) and optional freezing by parameter-path regex.

Deliberate, documented difference (`TrainConfig.subtalker_label_shift`): qwen-tts 0.1.1 passes the
15 codebook labels of `forward_sub_talker_finetune` through `ForCausalLMLoss`, which shifts them
once more, so head k at position k+1 is scored against codebook k+2 (14 terms; head 14 is never
trained) while generation uses head k at position k+1 for codebook k+1. That contradicts the
generation contract (QwenLM/Qwen3-TTS issue #371, PR #278; ms-swift fixed the same). By default
we train the generation-consistent alignment (head k ↔ codebook k+1, all 15 terms — PR #278's
`shift_labels`); `subtalker_label_shift=True` reproduces 0.1.1 exactly. Both are tested against
the reference. Likewise the talker hidden fed to the sub-talker is the one at p-1 (the fix of
issue #337), and the prompt uses `text_projection` (the inference path; architecture trap 16).

Everything is explicit and deterministic: `TrainState` (params, optimiser state, step) in, new
state out; no RNG (no dropout in this model family); data order from a seeded shuffle.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from qwen3tts_jax.atomic import atomic_path
from qwen3tts_jax.code_predictor import CodePredictor
from qwen3tts_jax.config import Policy, Qwen3TTSConfig
from qwen3tts_jax.nn.linear import precision
from qwen3tts_jax.nn.transformer import init_cache
from qwen3tts_jax.prompt import embed_tracks
from qwen3tts_jax.talker import Talker
from qwen3tts_jax.train_data import IGNORE_INDEX, TrainBatch
from qwen3tts_jax.typing import Array, Float, Int, pytree_dataclass

CHECKPOINT_FORMAT = "qwen3tts-jax-train-state"
CHECKPOINT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Defaults are the official recipe's where it has one."""

    learning_rate: float = 2e-5  # peak learning rate (the recipe's constant lr)
    warmup_steps: int = 0  # linear warm-up from 0 to the peak
    total_steps: int = 1000  # optimiser updates over which the cosine decays
    end_learning_rate_ratio: float = 0.0  # cosine floor as a fraction of the peak
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    max_grad_norm: float = 1.0  # global norm over the trained tensors; <= 0 disables clipping
    grad_accum_steps: int = 1  # micro-batches per update (gradients averaged, as accelerate does)
    subtalker_weight: float = 0.3
    subtalker_label_shift: bool = False  # True: qwen-tts 0.1.1's doubly shifted sub-talker labels
    freeze: tuple[str, ...] = ()  # regexes (re.search) on "/"-joined talker param paths, e.g. "^model/text_embedding"

    def __post_init__(self):
        if isinstance(self.freeze, (list, str)):
            raise ValueError(f"TrainConfig.freeze must be a tuple of regex strings, got {self.freeze!r}")
        for pattern in self.freeze:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"TrainConfig.freeze: bad regex {pattern!r} ({err})") from err
        if self.grad_accum_steps < 1 or self.total_steps < 1 or self.warmup_steps < 0:
            raise ValueError(
                f"TrainConfig: need grad_accum_steps >= 1, total_steps >= 1, warmup_steps >= 0 "
                f"(got {self.grad_accum_steps}, {self.total_steps}, {self.warmup_steps})"
            )

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"TrainConfig: unknown field(s) {unknown}")
        return cls(**{k: tuple(v) if k == "freeze" else v for k, v in d.items()})


@pytree_dataclass
class TrainState:
    params: Any  # the talker's param tree (code predictor included)
    opt_state: Any
    step: Any  # int32 scalar: micro-steps taken


# ------------------------------------------------------------------------------------------
# Parameter selection
# ------------------------------------------------------------------------------------------


def param_path(path) -> str:
    """A tree path as "model/layers_0/mlp/up_proj/weight"."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def frozen_mask(params, patterns: Iterable[str]):
    """A bool tree: True where a param path matches any freeze pattern."""
    regs = [re.compile(p) for p in patterns]
    return jax.tree_util.tree_map_with_path(lambda path, _: any(r.search(param_path(path)) for r in regs), params)


def _stop_frozen(params, frozen):
    return jax.tree.map(lambda p, f: jax.lax.stop_gradient(p) if f else p, params, frozen)


# ------------------------------------------------------------------------------------------
# The loss
# ------------------------------------------------------------------------------------------


def cross_entropy(logits: Float[Array, "... v"], labels: Int[Array, "*_"], valid) -> tuple[Array, Array]:
    """Σ of fp32 token cross-entropies over `valid`, and the count (`nn.functional.cross_entropy`
    with ignore_index, before its mean)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, jnp.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(valid, nll, 0.0)), jnp.sum(valid)


def _stacked(params, name: str, n: int) -> Float[Array, "k v x"]:
    """The 15 predictor embedding tables or heads as one array (one gather / one einsum compiles
    in a fraction of the time of 15 separate ops on XLA:CPU)."""
    if name == "codec_embedding":
        return jnp.stack([params["code_predictor"]["model"][f"codec_embedding_{j}"]["weight"] for j in range(n)])
    return jnp.stack([params["code_predictor"][f"lm_head_{j}"]["weight"] for j in range(n)])


def _residual_embeddings(params, codes: Int[Array, "... k"], dtype) -> Float[Array, "... k d"]:
    """Embedding j of codebook j+1 for each of the k = codes.shape[-1] residual codebooks."""
    k = codes.shape[-1]
    tables = _stacked(params, "codec_embedding", k)  # k V d
    return tables[jnp.arange(k), codes].astype(dtype)


def input_embeddings(talker: Talker, params, batch: TrainBatch) -> Float[Array, "b t d"]:
    """The talker input of every position: the generation prompt's embedding (`prompt.embed_tracks`)."""
    return embed_tracks(params, batch.tracks, talker.cfg, talker.policy)


def subtalker_logits(
    cfg: Qwen3TTSConfig, policy: Policy, params, past_hidden: Float[Array, "n d"], codes: Int[Array, "n q"]
) -> Float[Array, "n q-1 v"]:
    """Teacher-forced logits of all 15 residual codebooks of n frames (`forward_finetune`):
    input `[h, C(c0), E_0(c1), …, E_13(c14)]`, logits k = `lm_head[k](h[:, k+1])`, fp32. The same
    one teacher-forced form of the predictor (the parity tests check it against the reference's
    `forward_sub_talker_finetune`; generation runs the same stack step by step)."""
    predictor = CodePredictor(cfg.talker, policy)
    n, q = codes.shape
    dtype = policy.dtype
    c0 = jnp.take(params["model"]["codec_embedding"]["weight"], codes[:, 0], axis=0).astype(dtype)
    x = jnp.concatenate(
        [past_hidden[:, None].astype(dtype), c0[:, None], _residual_embeddings(params, codes[:, 1 : q - 1], dtype)],
        axis=1,
    )  # n q d
    cache = init_cache(cfg.talker.code_predictor.transformer, policy, n, q)
    hidden, _ = predictor.apply({"params": params["code_predictor"]}, x, jnp.ones((n, q), bool), cache)  # n q c
    heads = _stacked(params, "lm_head", q - 1)  # q-1 V c
    logits = jnp.einsum("nkc,kvc->nkv", hidden[:, 1:], heads.astype(hidden.dtype), precision=precision(hidden.dtype))
    return logits.astype(jnp.float32)


def losses(cfg: Qwen3TTSConfig, policy: Policy, train: TrainConfig, params, batch: TrainBatch) -> tuple[Array, dict]:
    """(total loss, {"talker", "subtalker", "tokens", "frames"}) of one batch."""
    talker = Talker(cfg.talker, policy)
    b, t, f = batch.shape
    x = input_embeddings(talker, params, batch)
    cache = init_cache(cfg.talker.transformer, policy, b, t)
    hidden, _ = talker.apply({"params": params}, x, batch.mask, cache)  # b t d, after the final norm
    logits = talker.apply({"params": params}, hidden, method=Talker.logits)  # b t V, fp32
    # ForCausalLMLoss: the label of position i+1 is scored by the logits of position i.
    labels = batch.labels[:, 1:]
    talker_sum, talker_n = cross_entropy(logits[:, :-1], labels, labels != IGNORE_INDEX)
    talker_loss = talker_sum / talker_n

    # Sub-talker on every frame slot (padding slots masked): the hidden before each frame.
    prev = jnp.take_along_axis(hidden, (batch.frame_pos - 1)[..., None], axis=1).reshape(b * f, -1)
    codes = batch.frame_codes.reshape(b * f, -1)  # n 16
    valid = batch.frame_valid.reshape(b * f)
    sub_logits = subtalker_logits(cfg, policy, params, prev, codes)  # n 15 V
    if train.subtalker_label_shift:  # qwen-tts 0.1.1: head k at position k+1 ↔ codebook k+2
        sub_logits, targets = sub_logits[:, :-1], codes[:, 2:]
    else:  # generation's alignment: head k at position k+1 ↔ codebook k+1
        targets = codes[:, 1:]
    sub_valid = jnp.broadcast_to(valid[:, None], targets.shape)
    sub_sum, sub_n = cross_entropy(sub_logits, targets, sub_valid)
    sub_loss = sub_sum / sub_n
    total = talker_loss + train.subtalker_weight * sub_loss
    return total, {"talker": talker_loss, "subtalker": sub_loss, "tokens": talker_n, "frames": jnp.sum(valid)}


# ------------------------------------------------------------------------------------------
# Optimiser and the jitted step
# ------------------------------------------------------------------------------------------


def schedule(train: TrainConfig) -> optax.Schedule:
    """Linear warm-up to the peak, then cosine decay to `end_learning_rate_ratio` × peak."""
    peak = train.learning_rate
    decay_steps = max(train.total_steps, train.warmup_steps + 1)
    return optax.warmup_cosine_decay_schedule(
        0.0 if train.warmup_steps else peak,
        peak,
        train.warmup_steps,
        decay_steps,
        end_value=peak * train.end_learning_rate_ratio,
    )


def make_optimizer(train: TrainConfig) -> optax.GradientTransformation:
    """clip(global norm) → AdamW(schedule) on trained params, zero updates (and no state) on frozen
    ones, wrapped in `optax.MultiSteps` when accumulating."""
    inner = [optax.clip_by_global_norm(train.max_grad_norm)] if train.max_grad_norm > 0 else []
    inner.append(optax.adamw(schedule(train), b1=train.b1, b2=train.b2, eps=train.eps, weight_decay=train.weight_decay))
    tx = optax.chain(*inner)
    if train.freeze:
        labels = lambda p: jax.tree.map(lambda f: "frozen" if f else "train", frozen_mask(p, train.freeze))
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
    if train.grad_accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=train.grad_accum_steps)
    return tx


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _loss(cfg: Qwen3TTSConfig, policy: Policy, train: TrainConfig, params, batch: TrainBatch):
    if train.freeze:  # no gradient is even computed for frozen tensors
        params = _stop_frozen(params, frozen_mask(params, train.freeze))
    return losses(cfg, policy, train, params, batch)


def _value_and_grad(cfg, policy, train, params, batch):
    (loss, aux), grads = jax.value_and_grad(_loss.__wrapped__, argnums=3, has_aux=True)(
        cfg, policy, train, params, batch
    )
    return loss, aux, grads


_grads = jax.jit(_value_and_grad, static_argnums=(0, 1, 2))


@functools.partial(jax.jit, static_argnums=(0, 1, 2), donate_argnums=(3,))
def _step(cfg: Qwen3TTSConfig, policy: Policy, train: TrainConfig, state: TrainState, batch: TrainBatch):
    loss, aux, grads = _value_and_grad(cfg, policy, train, state.params, batch)
    updates, opt_state = make_optimizer(train).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss,
        **aux,
        "grad_norm": optax.global_norm(grads),
        "learning_rate": schedule(train)(state.step // train.grad_accum_steps),
    }
    return TrainState(params, opt_state, state.step + 1), metrics


@dataclasses.dataclass(frozen=True)
class Trainer:
    """Static half of training: configs, policy and optimisation settings (hashable).

    `init(params)` → `TrainState`; `step(state, batch)` → `(state, metrics)` (jitted, the state
    donated: do not reuse the state passed in); `loss(params, batch)` → `(loss, parts)` and
    `grads(params, batch)` → `(loss, parts, grads)` for evaluation and tests. The jitted functions
    are module-level with the configs static, so trainers with equal settings share compilations;
    each batch shape (see the `train_data` buckets) compiles once.
    """

    cfg: Qwen3TTSConfig
    policy: Policy = Policy()
    train: TrainConfig = TrainConfig()

    @property
    def optimizer(self) -> optax.GradientTransformation:
        return make_optimizer(self.train)

    def init(self, params) -> TrainState:
        if "code_predictor" not in params or "model" not in params:
            raise ValueError(
                "Trainer.init: expected the talker's param tree (model.params['talker']), with model and "
                f"code_predictor; got keys {sorted(params)}"
            )
        # A copy: `step` donates the state, which must not take the caller's (the model's) arrays.
        params = jax.tree.map(lambda x: jnp.array(x, copy=True), params)
        return TrainState(params, self.optimizer.init(params), jnp.zeros((), jnp.int32))

    def step(self, state: TrainState, batch: TrainBatch) -> tuple[TrainState, dict]:
        return _step(self.cfg, self.policy, self.train, state, batch)

    def loss(self, params, batch: TrainBatch) -> tuple[Array, dict]:
        return _loss(self.cfg, self.policy, self.train, params, batch)

    def grads(self, params, batch: TrainBatch):
        return _grads(self.cfg, self.policy, self.train, params, batch)

    def learning_rate(self, step: int) -> float:
        return float(schedule(self.train)(step // self.train.grad_accum_steps))


def with_talker_params(model, talker_params):
    """A `Qwen3TTSModel` sharing everything with `model` but the talker params (to generate with
    fine-tuned weights)."""
    params = {**model.params, "talker": model.placement.model_params({"talker": talker_params}, model.config)["talker"]}
    return type(model)(
        model.config,
        params,
        model.text_tokenizer,
        model.speech_tokenizer,
        model.generation_config,
        model.policy,
        model.path,
        model.placement,
    )


# ------------------------------------------------------------------------------------------
# Checkpoints: safetensors (every leaf by its tree path) + a JSON manifest, written atomically
# ------------------------------------------------------------------------------------------


def _flat(tree, prefix: str) -> dict[str, Any]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {prefix + jax.tree_util.keystr(path): leaf for path, leaf in leaves}


def _to_storable(x) -> tuple[np.ndarray, str]:
    a = np.asarray(jax.device_get(x))
    dtype = str(a.dtype)
    if dtype == "bfloat16":  # safetensors' numpy API has no bfloat16: store the bits
        a = a.view(np.uint16)
    return np.ascontiguousarray(a), dtype


def save_checkpoint(
    path: str | os.PathLike, state: TrainState, train: TrainConfig | None = None, extra: dict | None = None
) -> Path:
    """Write `state` to folder `path` (state.safetensors + train_state.json). The folder appears
    complete or not at all: written beside it, then renamed into place (replacing an old one)."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {**_flat(state.params, "params"), **_flat(state.opt_state, "opt_state")}
    tensors, dtypes, shapes = {}, {}, {}
    for k, v in flat.items():
        tensors[k], dtypes[k] = _to_storable(v)
        shapes[k] = list(np.shape(v))  # the contiguous copy of a 0-d array is (1,)
    manifest = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "step": int(state.step),
        "dtypes": dtypes,
        "shapes": shapes,
        "train_config": None if train is None else dataclasses.asdict(train),
        "extra": extra or {},
    }
    with atomic_path(path, folder=True) as tmp:
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "train_state.json").write_text(json.dumps(manifest, indent=1))
    return path


def restore_checkpoint(path: str | os.PathLike, template: TrainState) -> tuple[TrainState, dict]:
    """Read a checkpoint into the structure of `template` (e.g. `trainer.init(params)`): every
    leaf must be present with the template's shape. Returns (state, manifest)."""
    from safetensors.numpy import load_file

    path = Path(path)
    manifest_path, tensors_path = path / "train_state.json", path / "state.safetensors"
    if not manifest_path.is_file() or not tensors_path.is_file():
        raise FileNotFoundError(f"{path}: not a training checkpoint (need train_state.json and state.safetensors)")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != CHECKPOINT_FORMAT or manifest.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{manifest_path}: format {manifest.get('format')!r} v{manifest.get('version')!r}, "
            f"expected {CHECKPOINT_FORMAT!r} v{CHECKPOINT_VERSION}"
        )
    stored = load_file(str(tensors_path))
    dtypes, shapes = manifest["dtypes"], manifest["shapes"]

    def fill(prefix: str, tree):
        leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
        out = []
        for kpath, leaf in leaves:
            key = prefix + jax.tree_util.keystr(kpath)
            if key not in stored:
                raise ValueError(
                    f"{tensors_path}: missing {key!r} (optimiser or freeze settings differ from the checkpoint's?)"
                )
            a = stored.pop(key).reshape(shapes[key])
            if dtypes.get(key) == "bfloat16":
                a = a.view(jnp.bfloat16)
            if a.shape != tuple(np.shape(leaf)):
                raise ValueError(f"{tensors_path}: {key!r} has shape {a.shape}, expected {tuple(np.shape(leaf))}")
            out.append(jnp.asarray(a, dtype=jnp.asarray(leaf).dtype))
        return jax.tree_util.tree_unflatten(treedef, out)

    params = fill("params", template.params)
    opt_state = fill("opt_state", template.opt_state)
    if stored:
        raise ValueError(
            f"{tensors_path}: unexpected tensors {sorted(stored)[:5]} (optimiser or freeze settings differ?)"
        )
    return TrainState(params, opt_state, jnp.asarray(manifest["step"], jnp.int32)), manifest
