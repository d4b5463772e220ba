"""Fine-tuning: the training layout, loss and gradients vs the reference, a training run, checkpoints.

The reference loss is built from the official pieces: the talker's `forward(inputs_embeds, labels)`
(transformers `ForCausalLMLoss`) on the same input embeddings, computed with the reference's own
modules, and `forward_sub_talker_finetune` on the talker hidden before each frame, combined as
`sft_12hz.py` does (talker + 0.3 · sub-talker).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_close

from qwen3tts_jax.config import Policy, Qwen3TTSConfig
from qwen3tts_jax.finetune import TrainConfig, Trainer, input_embeddings, restore_checkpoint, save_checkpoint
from qwen3tts_jax.prompt import codebook_tables, embed_prompts, sum_codebook_embeddings
from qwen3tts_jax.talker import Talker
from qwen3tts_jax.train_data import IGNORE_INDEX, TrainExample, example_layout, iterate_batches, make_batch
from qwen3tts_jax.weights import flax_path, load_model_params

ROLE, TAIL = (151644, 77091, 198), (151645, 198, 151644, 77091, 198)


def _text(*ids: int) -> tuple[int, ...]:
    return ROLE + tuple(ids) + TAIL


def _instruct(*ids: int) -> tuple[int, ...]:
    return (151644, 872, 198, *ids, 151645, 198)


def _examples(cfg: Qwen3TTSConfig, seed: int = 0, frames: tuple[int, int] = (5, 9)) -> list[TrainExample]:
    """Two rows of different lengths in the voice modes of the model type."""
    rng = np.random.default_rng(seed)
    codes = [rng.integers(0, 2048, (n, 16)) for n in frames]
    d = cfg.talker.transformer.hidden_size
    if cfg.tts_model_type == "base":  # x-vector in the speaker slot (the official recipe's voice)
        return [
            TrainExample(_text(9707, 11, 1879), codes[0], "auto", speaker_embedding=rng.normal(size=d)),
            TrainExample(_text(40, 1079, 264, 1273, 13, 88), codes[1], "english", speaker_embedding=rng.normal(size=d)),
        ]
    if cfg.tts_model_type == "custom_voice":  # preset speakers, a dialect override, an instruct
        return [
            TrainExample(_text(9707, 11, 1879), codes[0], "auto", speaker="dylan"),
            TrainExample(
                _text(40, 1079, 264, 1273, 13, 88),
                codes[1],
                "english",
                speaker="serena",
                instruct_ids=_instruct(2610, 374, 6247),
            ),
        ]
    return [
        TrainExample(_text(9707, 11), codes[0], "chinese", instruct_ids=_instruct(2610, 374)),
        TrainExample(_text(40, 1079, 264, 1273), codes[1], "auto", instruct_ids=_instruct(6247, 1273, 12)),
    ]


def _load(tiny_model, name):
    ref, folder = tiny_model(name)
    cfg = Qwen3TTSConfig.from_model_dir(folder)
    return ref, cfg, load_model_params(folder, cfg)["talker"]


# ------------------------------------------------------------------------------------------
# The layout is the inference prompt (non-streaming) with the target frames appended
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["base-0b6-gqa", "custom-1b7-gqa"])
def test_layout_is_the_inference_prompt_plus_frames(tiny_model, name):
    """Training embeds, through the one builder and embedding, the prompt generation prefills
    (non-streaming), then each target frame the way the frame step feeds it back (tts_pad + the
    16 codebook embeddings), then tts_pad + C(EOS)."""
    _, cfg, params = _load(tiny_model, name)
    policy = Policy()
    examples = _examples(cfg)
    batch = make_batch(cfg, examples)
    embed = jax.jit(lambda p, b: input_embeddings(Talker(cfg.talker, policy), p, b))
    x = np.asarray(embed(params, jax.tree.map(jnp.asarray, batch)))
    talker = Talker(cfg.talker, policy)
    t_pad = np.asarray(talker.apply({"params": params}, jnp.array([[cfg.tts_pad_token_id]]), method=Talker.embed_text))[
        0, 0
    ]
    tables = codebook_tables(params, cfg.talker.num_code_groups)
    for row, ex in enumerate(examples):
        lay = example_layout(cfg, ex)
        prompt, mask = embed_prompts(params, cfg, policy, [ex.request()], step=1)
        assert lay.frame_start == prompt.shape[1] and mask.all()
        frames = np.asarray(sum_codebook_embeddings(tables, jnp.asarray(ex.codes), policy.dtype)) + t_pad
        eos = np.asarray(tables[0][cfg.talker.codec_eos_token_id]) + t_pad
        want = np.concatenate([prompt[0], frames, eos[None]])
        assert_close(x[row, : lay.length], want, 1e-5, f"train layout == inference prompt + frames [{name}, row {row}]")
        assert not batch.mask[row, lay.length :].any() and (batch.labels[row, lay.length :] == IGNORE_INDEX).all()
        # Labels: c0 of every frame at its own position, then EOS; nothing on the prompt.
        labels = batch.labels[row]
        np.testing.assert_array_equal(labels[: lay.frame_start], IGNORE_INDEX)
        np.testing.assert_array_equal(labels[lay.frame_start : lay.length - 1], ex.codes[:, 0])
        assert labels[lay.length - 1] == cfg.talker.codec_eos_token_id


def test_official_layout_positions():
    """The recipe's `collate_fn` layout (language auto, x-vector at position 6) position by position."""
    from qwen3tts_jax import presets

    cfg = Qwen3TTSConfig.from_dict(presets.model_config("base", "tiny"), "tiny base")
    t = cfg.talker
    text = (9707, 11, 1879)
    codes = np.arange(4 * 16).reshape(4, 16)
    lay = example_layout(cfg, TrainExample(_text(*text), codes, speaker_embedding=np.zeros(t.transformer.hidden_size)))
    n = len(text)
    pad, bos, eos = cfg.tts_pad_token_id, cfg.tts_bos_token_id, cfg.tts_eos_token_id
    np.testing.assert_array_equal(lay.text_ids, [*ROLE, pad, pad, pad, pad, bos, *text, eos] + [pad] * (1 + 4 + 1))
    assert lay.text_on.all()
    want_codec = [t.codec_nothink_id, t.codec_think_bos_id, t.codec_think_eos_id, 0, t.codec_pad_id] + [
        t.codec_pad_id
    ] * (n + 1)
    want_codec += [t.codec_bos_id, *codes[:, 0], t.codec_eos_token_id]
    np.testing.assert_array_equal(lay.codec_ids[3:], want_codec)
    assert not lay.codec_on[:3].any() and not lay.codec_on[6] and lay.codec_on[3:6].all() and lay.codec_on[7:].all()
    assert np.flatnonzero(lay.spk_on).tolist() == [6]
    assert lay.frame_start == 8 + n + 2  # dataset.py: 8 + text_ids_len - 1 with text_ids_len = 3 + n
    np.testing.assert_array_equal(lay.res_codes[lay.frame_start : lay.frame_start + 4], codes[:, 1:])


def test_bad_examples_are_refused():
    from qwen3tts_jax import presets

    cfg = Qwen3TTSConfig.from_dict(presets.model_config("custom_voice", "tiny"), "tiny")
    good = np.zeros((3, 16), np.int64)
    with pytest.raises(ValueError, match="codes"):
        example_layout(cfg, TrainExample(_text(5), np.zeros((3, 8))))
    with pytest.raises(ValueError, match="values"):
        example_layout(cfg, TrainExample(_text(5), good + 2048))
    with pytest.raises(ValueError, match="speaker"):
        example_layout(cfg, TrainExample(_text(5), good, speaker="nobody"))
    with pytest.raises(ValueError, match="regex"):
        TrainConfig(freeze=("(",))


# ------------------------------------------------------------------------------------------
# Loss and gradients vs the reference
# ------------------------------------------------------------------------------------------


def _reference_loss(ref, batch, label_shift: bool):
    """The official objective on the same batch, with the reference's modules (autograd on)."""
    import torch
    import torch.nn.functional as F

    talker = ref.talker
    tb = {k: torch.from_numpy(np.asarray(v)) for k, v in vars(batch).items()}
    x = talker.text_projection(talker.model.text_embedding(tb["text_ids"].long())) * tb["text_on"][..., None]
    x = x + talker.model.codec_embedding(tb["codec_ids"].long()) * tb["codec_on"][..., None]
    x = x + tb["speaker"][:, None, :] * tb["spk_on"][..., None]
    tables = talker.code_predictor.get_input_embeddings()
    for j in range(15):
        x = x + tables[j](tb["res_codes"][..., j].long()) * tb["res_on"][..., None]
    out = talker(
        inputs_embeds=x, attention_mask=tb["mask"].long(), labels=tb["labels"].long(), output_hidden_states=True
    )
    hidden = out.hidden_states[0][-1]  # after the final norm
    valid = tb["frame_valid"]
    rows = torch.arange(valid.shape[0])[:, None].expand_as(valid)[valid]
    prev = hidden[rows, tb["frame_pos"][valid] - 1]  # the hidden that predicted each frame's c0
    codes = tb["frame_codes"][valid].long()
    sub_logits, sub_loss = talker.forward_sub_talker_finetune(codes, prev)
    if not label_shift:  # the generation-consistent alignment (QwenLM/Qwen3-TTS PR #278)
        sub_loss = F.cross_entropy(sub_logits.reshape(-1, sub_logits.shape[-1]).float(), codes[:, 1:].reshape(-1))
    return out.loss + 0.3 * sub_loss, out.loss, sub_loss


@pytest.mark.reference
@pytest.mark.parametrize(
    "name, frames",
    [
        ("base-0b6-gqa", (5, 9)),
        ("custom-1b7-gqa", (5, 9)),
        # Rows longer than `Policy.attention_block` (64): such a prefill once took the blocked
        # decode attention, whose traced loop has no reverse-mode derivative (training failed).
        ("base-0b6-gqa", (60, 75)),
    ],
)
@pytest.mark.slow
def test_loss_and_grads_match_reference(tiny_model, torch_threads, name, frames):
    ref, cfg, params = _load(tiny_model, name)
    batch = make_batch(cfg, _examples(cfg, frames=frames), length_bucket=16, frame_bucket=16)
    assert (batch.mask.shape[1] > Policy().attention_block) == (frames[0] > 16)
    trainer = Trainer(cfg, Policy(), TrainConfig())
    loss, parts, grads = trainer.grads(params, jax.tree.map(jnp.asarray, batch))
    ref.zero_grad()
    want, want_talker, want_sub = _reference_loss(ref, batch, label_shift=False)
    want.backward()
    assert_close(parts["talker"], want_talker.item(), 1e-4, f"talker loss [{name}]")
    assert_close(parts["subtalker"], want_sub.item(), 1e-4, f"sub-talker loss [{name}]")
    assert_close(loss, want.item(), 1e-4, f"total loss [{name}]")
    worst, worst_name, n = 0.0, "", 0
    for pname, p in ref.talker.named_parameters():
        g = grads
        for k in flax_path(pname):
            g = g[k]
        scale = float(p.grad.abs().max())
        assert scale > 0, f"{pname}: no gradient in the reference"
        err = float(np.max(np.abs(np.asarray(g, np.float64) - p.grad.double().numpy()))) / scale
        if err > worst:
            worst, worst_name = err, pname
        n += 1
        assert err <= 1e-4, f"grad {pname}: relative err {err:.3e} > 1e-4"
    print(
        f"[parity] grads of all {n} talker tensors [{name}]: worst relative err {worst:.3e} ({worst_name}) (tol 1e-04)"
    )


@pytest.mark.reference
def test_loss_with_reference_label_shift_matches_forward_sub_talker_finetune(tiny_model, torch_threads):
    """`subtalker_label_shift=True` is qwen-tts 0.1.1's `forward_sub_talker_finetune` loss exactly."""
    import torch

    ref, cfg, params = _load(tiny_model, "base-0b6-gqa")
    batch = make_batch(cfg, _examples(cfg, seed=1), length_bucket=16, frame_bucket=16)
    loss, parts = Trainer(cfg, Policy(), TrainConfig(subtalker_label_shift=True)).loss(
        params, jax.tree.map(jnp.asarray, batch)
    )
    with torch.no_grad():
        want, want_talker, want_sub = _reference_loss(ref, batch, label_shift=True)
    assert_close(parts["subtalker"], want_sub.item(), 1e-4, "sub-talker loss, 0.1.1 label shift")
    assert_close(loss, want.item(), 1e-4, "total loss, 0.1.1 label shift")


def test_loss_scanned_equals_unrolled(tiny_model):
    """The same loss whichever layer layout the params use (`Policy.scan_layers`)."""
    from qwen3tts_jax.weights import layout_model_params

    _, folder = tiny_model("custom-1b7-gqa")
    cfg = Qwen3TTSConfig.from_model_dir(folder)
    full = load_model_params(folder, cfg)
    batch = jax.tree.map(jnp.asarray, make_batch(cfg, _examples(cfg), length_bucket=16, frame_bucket=16))
    unrolled, parts = Trainer(cfg, Policy(), TrainConfig()).loss(full["talker"], batch)
    stacked = layout_model_params(full, cfg, scan_layers=True)["talker"]
    scanned, parts_s = Trainer(cfg, Policy(scan_layers=True), TrainConfig()).loss(stacked, batch)
    assert_close(scanned, unrolled, 1e-5, "loss scanned == unrolled")
    assert_close(parts_s["subtalker"], parts["subtalker"], 1e-5, "sub-talker loss scanned == unrolled")


# ------------------------------------------------------------------------------------------
# The optimiser: freezing, clipping over trained tensors only, accumulation, schedule
# ------------------------------------------------------------------------------------------


def _toy():
    params = {
        "model": {"text_embedding": {"weight": jnp.ones((4, 3))}, "norm": {"weight": jnp.full((3,), 2.0)}},
        "codec_head": {"weight": jnp.full((2, 3), -1.0)},
    }
    grads = [
        jax.tree.map(lambda x, s=s: jnp.full_like(x, s) * jnp.arange(x.size).reshape(x.shape), params)
        for s in (3.0, -1.0)
    ]
    return params, grads


def test_freezing_clips_and_updates_only_trained_tensors():
    import optax

    from qwen3tts_jax.finetune import make_optimizer

    params, (g, _) = _toy()
    train = TrainConfig(learning_rate=0.1, total_steps=10, max_grad_norm=1.0, freeze=("^model/text_embedding",))
    tx = make_optimizer(train)
    updates, _ = tx.update(g, tx.init(params), params)
    np.testing.assert_array_equal(updates["model"]["text_embedding"]["weight"], 0.0)
    # The trained part gets exactly chain(clip, adamw) of the trained subtree: the norm ignores frozen grads.
    sub = lambda t: {"norm": t["model"]["norm"], "codec_head": t["codec_head"]}
    want_tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(0.1, weight_decay=0.01))
    want, _ = want_tx.update(sub(g), want_tx.init(sub(params)), sub(params))
    for a, b in zip(jax.tree.leaves(sub(updates)), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_gradient_accumulation_averages_micro_batches():
    from qwen3tts_jax.finetune import make_optimizer

    params, (g1, g2) = _toy()
    tx1 = make_optimizer(TrainConfig(learning_rate=0.1, total_steps=10))
    want, _ = tx1.update(jax.tree.map(lambda a, b: (a + b) / 2, g1, g2), tx1.init(params), params)
    tx2 = make_optimizer(TrainConfig(learning_rate=0.1, total_steps=10, grad_accum_steps=2))
    state = tx2.init(params)
    first, state = tx2.update(g1, state, params)
    assert all(float(jnp.abs(u).max()) == 0 for u in jax.tree.leaves(first))
    second, _ = tx2.update(g2, state, params)
    for a, b in zip(jax.tree.leaves(second), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_schedule_warmup_then_cosine():
    from qwen3tts_jax.finetune import schedule

    lr = schedule(TrainConfig(learning_rate=1.0, warmup_steps=4, total_steps=12, end_learning_rate_ratio=0.1))
    assert float(lr(0)) == 0.0 and abs(float(lr(2)) - 0.5) < 1e-6 and abs(float(lr(4)) - 1.0) < 1e-6
    assert abs(float(lr(12)) - 0.1) < 1e-6 and float(lr(8)) < 1.0
    assert float(schedule(TrainConfig(learning_rate=1.0, total_steps=5))(0)) == 1.0  # no warm-up: peak at once


# ------------------------------------------------------------------------------------------
# Training: a short run on a synthetic set encoded by our own codec, checkpoints
# ------------------------------------------------------------------------------------------

SR = 24000
TONES = [(220, 0.45), (330, 0.6), (440, 0.35), (550, 0.55)]  # (Hz, seconds): 4..8 frames


def _tone(f0: float, secs: float) -> np.ndarray:
    t = np.arange(int(SR * secs)) / SR
    return (0.5 * np.sin(2 * np.pi * f0 * t * (1 + 0.5 * t))).astype(np.float32)


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """random:tiny + four (audio, text) pairs → codes by our encoder → 200 steps."""
    from qwen3tts_jax import Qwen3TTSModel
    from qwen3tts_jax.train_data import examples_from_audio

    model = Qwen3TTSModel.from_pretrained("random:tiny", seed=0)
    items = [
        dict(audio=(_tone(f, s), SR), text=txt, speaker=spk, language="english")
        for (f, s), txt, spk in zip(TONES, ["one", "two words", "three", "four more"], ["ryan", "serena"] * 2)
    ]
    examples = examples_from_audio(model, items)
    steps = 200
    train = TrainConfig(learning_rate=2e-3, warmup_steps=20, total_steps=steps, freeze=("^model/text_embedding",))
    trainer = Trainer(model.config, model.policy, train)
    state = trainer.init(model.params["talker"])
    # Every example fits one (32 positions, 8 frames) bucket: one batch shape, one compile.
    assert (
        max(example_layout(model.config, e).length for e in examples) <= 32 and max(len(e.codes) for e in examples) <= 8
    )
    batches = iterate_batches(model.config, examples, batch_size=2, seed=0, length_bucket=32, frame_bucket=8)
    history, t0 = [], time.perf_counter()
    for _ in range(steps):
        state, metrics = trainer.step(state, next(batches))
        history.append({k: float(v) for k, v in metrics.items()})
    elapsed = time.perf_counter() - t0
    return dict(
        model=model,
        examples=examples,
        trainer=trainer,
        state=state,
        batches=batches,
        history=history,
        elapsed=elapsed,
        tmp=tmp_path_factory.mktemp("finetune"),
    )


@pytest.mark.slow
def test_examples_come_from_our_encoder(synthetic_run):
    model, examples = synthetic_run["model"], synthetic_run["examples"]
    # One batched encode, as examples_from_audio does (a batch pads the shorter clips, which
    # changes their last frame exactly as in the reference's batched encode).
    codes = model.speech_tokenizer.encode([(_tone(f, s), SR) for f, s in TONES]).audio_codes
    for ex, c in zip(examples, codes):
        np.testing.assert_array_equal(ex.codes, c)
    assert examples[1].text_ids == model.text_tokenizer.assistant_text_ids("two words").input_ids


def test_training_drives_the_loss_down(synthetic_run):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = synthetic_run["history"]
    loss = np.array([h["loss"] for h in hist])
    assert np.isfinite(loss).all()
    windows = loss.reshape(10, -1).mean(axis=1)
    print(
        f"[finetune] 200 steps in {synthetic_run['elapsed']:.1f} s (incl. compile); window means {np.round(windows, 3)}"
    )
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(loss, lw=0.8, label="loss")
    ax.plot([h["talker"] for h in hist], lw=0.8, label="talker")
    ax.plot([h["subtalker"] for h in hist], lw=0.8, label="sub-talker")
    ax.set_xlabel("step")
    ax.legend()
    path = synthetic_run["tmp"] / "loss.png"
    fig.savefig(path)
    plt.close(fig)
    assert path.stat().st_size > 0
    assert windows[-1] < 0.5 * windows[0], (
        f"loss did not come down: first window {windows[0]:.3f}, last {windows[-1]:.3f}"
    )
    # Monotone on average: each 20-step window mean at most 2% above the one before.
    assert (windows[1:] <= windows[:-1] * 1.02).all(), f"window means not decreasing: {windows}"
    # The schedule: warm-up then cosine to zero.
    lr = [h["learning_rate"] for h in hist]
    assert lr[0] == 0.0 and abs(max(lr) - 2e-3) < 1e-9 and lr[-1] < 1e-5


def test_frozen_params_do_not_move(synthetic_run):
    model, state = synthetic_run["model"], synthetic_run["state"]
    before, after = model.params["talker"], state.params
    np.testing.assert_array_equal(
        after["model"]["text_embedding"]["weight"], before["model"]["text_embedding"]["weight"]
    )
    assert not np.array_equal(after["codec_head"]["weight"], before["codec_head"]["weight"])
    assert not np.array_equal(
        after["code_predictor"]["lm_head_14"]["weight"], before["code_predictor"]["lm_head_14"]["weight"]
    )
    # No optimiser state for the frozen table (the biggest tensor of the model).
    big = max(np.size(x) for x in jax.tree.leaves(state.opt_state))
    assert big < np.size(before["model"]["text_embedding"]["weight"])


def test_save_restore_continue_is_identical(synthetic_run):
    trainer, state, batches, tmp = (synthetic_run[k] for k in ("trainer", "state", "batches", "tmp"))
    path = save_checkpoint(tmp / "ckpt", state, trainer.train, extra={"note": "test"})
    save_checkpoint(tmp / "ckpt", state, trainer.train)  # overwriting in place is atomic too
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith(".")) == []
    batch = next(batches)
    template = trainer.init(synthetic_run["model"].params["talker"])
    restored, manifest = restore_checkpoint(path, template)
    assert manifest["step"] == 200 and TrainConfig.from_dict(manifest["train_config"]) == trainer.train
    assert int(restored.step) == int(state.step)
    ref_state, ref_metrics = trainer.step(jax.tree.map(jnp.copy, state), batch)
    new_state, new_metrics = trainer.step(restored, batch)
    assert float(new_metrics["loss"]) == float(ref_metrics["loss"])
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(ref_state)):
        np.testing.assert_array_equal(a, b)
    synthetic_run["state"] = ref_state  # the original was donated to nobody: keep a live copy
    with pytest.raises(ValueError, match="missing|unexpected"):
        other = Trainer(trainer.cfg, trainer.policy, TrainConfig(total_steps=200))  # no freeze: more state
        restore_checkpoint(path, other.init(synthetic_run["model"].params["talker"]))
