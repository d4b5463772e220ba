"""Sharded inference (`qwen3tts_jax/sharding.py`): the logical-axis table and mesh rules in
process; then, in subprocesses (the device count is fixed when JAX starts, and the rest of the
suite keeps one device), a tiny model on 8 virtual CPU devices under meshes 1×1, 8×1, 4×2, 2×4
against the one-device run, and a two-process run (`jax.distributed`, gloo CPU collectives).

Contract: greedy codes identical to one device, waveforms within 1e-4 (the split reductions sum
in another order), params split as the table says (per-device bytes = total / model size for
the split groups), each process reading only its own slices of the safetensors files.

The subprocess workers are this file run as a script: `python tests/test_sharding.py mesh|host ...`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
# "jax.make_mesh" is `jax.make_mesh((4, 2), ("data", "model"))` as JAX users make it (Explicit axes).
MESHES = ("data=1,model=1", "data=8", "data=4,model=2", "data=2,model=4", "jax.make_mesh")
# Runs use scanned layer stacks (the GPU/TPU policy) except these, which run the CPU policy's
# unrolled stacks; scanned and unrolled decoding give identical codes (tests/test_generate.py).
UNROLLED = ("data=4,model=2",)
TEXTS = (
    "Hello there.",
    "Second one!",
    "A third, longer text.",
    "four",
    "Fifth item here.",
    "six, six",
    "Seven is a good number.",
    "eight",
)
SPEAKERS = ("ryan", "serena", "eric", "aiden", "vivian", "dylan", "sohee", "uncle_fu")
MAX_NEW_TOKENS = 8
# Runs that also check a request held for its compile with one coming in behind it (`_held_behind`),
# and codec pushes after `CodecSlots.compile()` (`_codec_pushes_after_compile`).
CHECKED_RUNS = ("baseline", "jax.make_mesh")
WAV_TOL = 1e-4
# The talker's stacked KV cache (layers, batch 8, slots, kv_heads 2, head_dim): batch over data,
# kv heads over model only where 2 heads divide it.
KV_CACHE_SPECS = {
    "data=1,model=1": "P()",
    "data=8": "P(None, 'data')",
    "data=4,model=2": "P(None, 'data', None, 'model')",
    "data=2,model=4": "P(None, 'data')",
    "jax.make_mesh": "P(None, 'data', None, 'model')",
}


# --------------------------------------------------------------------------------------------
# Fixtures shared with the workers
# --------------------------------------------------------------------------------------------


def write_tiny_folder(folder: Path, seed: int = 0) -> Path:
    """A `random:tiny`-shaped CustomVoice model folder in the released layout (config.json,
    generation_config.json, model.safetensors, tokenizer files, speech_tokenizer/)."""
    from safetensors.numpy import save_file

    from qwen3tts_jax import presets
    from qwen3tts_jax.codec.config import Qwen3TTSTokenizerV2Config
    from qwen3tts_jax.codec.weights import codec_entries
    from qwen3tts_jax.config import Qwen3TTSConfig
    from qwen3tts_jax.random_model import byte_level_tokenizer_dir, random_tree
    from qwen3tts_jax.weights import model_entries

    def tensors(entries, tree):
        out = {}
        for e in entries:
            node = tree
            for name in e.target:
                node = node[name]
            out[e.key] = np.asarray(node)
        return out

    folder.mkdir(parents=True, exist_ok=True)
    byte_level_tokenizer_dir(folder)
    cfg_dict = {**presets.model_config("custom_voice", "tiny"), "transformers_version": "4.57.3"}
    cfg = Qwen3TTSConfig.from_dict(cfg_dict)
    (folder / "config.json").write_text(json.dumps(cfg_dict))
    (folder / "generation_config.json").write_text(json.dumps(presets.GENERATION_CONFIG))
    entries = model_entries(cfg)
    save_file(tensors(entries, random_tree(entries, seed)), str(folder / "model.safetensors"))
    st = folder / "speech_tokenizer"
    st.mkdir(exist_ok=True)
    codec_dict = presets.tokenizer_config(tiny=True)
    centries = codec_entries(Qwen3TTSTokenizerV2Config.from_dict(codec_dict))
    (st / "config.json").write_text(json.dumps(codec_dict))
    save_file(tensors(centries, random_tree(centries, seed + 1)), str(st / "model.safetensors"))
    return folder


def _synthesize(model, checks: bool = False) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """The 8 texts in one 8-slot run, then text 0 alone in an idle 8-slot engine: its advances
    step only a bucket of rows (1 on one device, the data-axis size on a mesh) through the
    row-slicing path, and must give the codes it gives in the full batch. Then texts 1-3 in
    another idle engine: three newcomers packed into packs that do not split evenly over the
    data axis (`prompt.pack_tracks`), again their codes in the full batch. `checks`: also
    `_held_behind` and `_codec_pushes_after_compile`."""
    from qwen3tts_jax.engine import EngineShape

    prompts = model.custom_voice_prompts(list(TEXTS), list(SPEAKERS), None, None, True)
    kw = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=MAX_NEW_TOKENS)
    requests = model.requests(prompts, **kw)
    results = model.run(requests)
    engine = model.engine(EngineShape.fit(requests, model.config, model.placement))
    (alone,) = engine.run(model.requests(prompts[:1], audio=False, **kw))
    extra = {"alone": alone.codes, "rows_stepped": sorted(engine.rows_stepped)}
    trio = model.engine(EngineShape.fit(requests, model.config, model.placement))
    for i, r in enumerate(trio.run(model.requests(prompts[1:4], audio=False, **kw))):
        extra[f"trio_{i}"] = r.codes
    if checks:
        extra.update(_held_behind(model, prompts, kw, EngineShape.fit(requests, model.config, model.placement)))
        extra["codec_pushes_compiled"] = _codec_pushes_after_compile(model)
    return [r.codes for r in results], [r.audio for r in results], extra


def _codec_pushes_after_compile(model) -> list[int]:
    """Programs compiled by each of four pushes of uneven rows and lengths into a `CodecSlots`
    (the model's codec, on its placement) after `compile()` compiled every push shape ahead."""
    from qwen3tts_jax.codec.slots import CodecSlots
    from qwen3tts_jax.compile_cache import CompileCounter

    tok = model.speech_tokenizer
    slots = CodecSlots(tok.prepared_decoder_params(), tok.config.decoder, tok.policy, 4, prepared=True, max_piece=4)
    slots.compile()
    rng, out = np.random.default_rng(0), []
    for row in range(3):
        slots.start(row)
    for ks in ({0: 1, 1: 1}, {0: 2, 1: 3, 2: 1}, {0: 4, 2: 4}, {1: 1, 2: 2}):
        counter = CompileCounter()
        slots.push(
            {
                row: rng.integers(0, tok.config.decoder.codebook_size, (k, tok.config.decoder.num_quantizers))
                for row, k in ks.items()
            }
        )
        out.append(counter.stats().programs)
    return out


# Text HELD's admission alone is compiled by no run before `_held_behind` (its prompt bucket
# differs from text 0's); text 0's alone is (the "alone" engine).
HELD = 6


def _held_behind(model, prompts, kw, shape) -> dict:
    """`Engine.background_compile` with skip-ahead, stepped by hand: text 0 runs; text HELD arrives
    and is held while its admission compiles on the compiler thread; a copy of text 0 arriving
    behind it, whose programs exist (the "alone" and "trio" engines compiled them, same shape and
    sampling), comes in meanwhile on row 2, a row the held request does not keep. Returns what
    was seen (compiling count and row 2's request after that step) and the three results' codes."""
    from qwen3tts_jax.engine import Engine

    a, b, c = model.requests([prompts[0], prompts[HELD], prompts[0]], audio=False, **kw)
    engine = Engine(model, shape, advance_frames=1, background_compile=True)
    handles = [engine.submit(a)]
    engine.step()
    handles.append(engine.submit(b))
    engine.step()
    held = engine.compiling
    handles.append(engine.submit(c))
    engine.step()  # milliseconds, against the held admission's compile (seconds)
    seen = [held, engine.compiling, int(engine.slot_requests[2] == handles[2].id)]
    for h in handles:
        while not h.done:
            engine.step()
    return {"held_seen": seen, **{f"held_{i}": h.result().codes for i, h in enumerate(handles)}}


def _save(path: Path, codes, wavs, **extra) -> None:
    np.savez(
        path,
        **{f"codes_{i}": c for i, c in enumerate(codes)},
        **{f"wav_{i}": w for i, w in enumerate(wavs)},
        **{k: np.asarray(v) for k, v in extra.items()},
    )


def _load(path: Path) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    z = np.load(path)
    n = len([k for k in z.files if k.startswith("codes_")])
    extra = {k: z[k] for k in z.files if not k.startswith(("codes_", "wav_"))}
    return [z[f"codes_{i}"] for i in range(n)], [z[f"wav_{i}"] for i in range(n)], extra


# --------------------------------------------------------------------------------------------
# Workers (run as `python tests/test_sharding.py ...`)
# --------------------------------------------------------------------------------------------


def _group_bytes(params: dict, pattern: str) -> tuple[int, int]:
    """(bytes on the first device, total bytes) of the leaves whose path matches `pattern`."""
    import re

    import jax

    from qwen3tts_jax.sharding import path_str

    first = jax.devices()[0]
    on_first = total = 0
    for kp, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if re.fullmatch(pattern, path_str(kp)):
            total += leaf.nbytes
            on_first += sum(s.data.nbytes for s in leaf.addressable_shards if s.device == first)
    return on_first, total


GROUPS = {
    "talker_q_o_mlp": r"talker/.*/(q_proj|o_proj|gate_proj|up_proj|down_proj)/weight",
    "talker_k_v": r"talker/.*/(k_proj|v_proj)/weight",
    "vocab_tables": (
        r"talker/(model/(codec|text)_embedding|codec_head|code_predictor/(lm_head_\d+|model/codec_embedding_\d+))"
        r"/weight"
    ),
    "codec_residual_convs": r"decoder/decoder_\d+/block_[234]/conv[12]/conv/weight",
    "codec_mlp": r"decoder/(upsample_\d+_1/pwconv[12]|pre_transformer/layers_\d+/mlp/\w+)/weight",
    "talker_all": r"talker/.*",
    "codec_decoder_all": r"decoder/.*",
}


def _spec_mismatches(params: dict, mesh) -> list[str]:
    """Leaves whose first-device bytes differ from what their table PartitionSpec implies."""
    import jax

    from qwen3tts_jax.sharding import path_str

    first, bad = jax.devices()[0], []
    for kp, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        spec = leaf.sharding.spec
        parts = int(np.prod([dict(mesh.shape)[a] for a in spec if a is not None] or [1]))
        got = sum(s.data.nbytes for s in leaf.addressable_shards if s.device == first)
        if got * parts != leaf.nbytes:
            bad.append(f"{path_str(kp)}: {got} B on device 0, spec {spec} of {leaf.nbytes} B")
    return bad


def mesh_worker(folder: str, out_dir: str, runs: str) -> None:
    """8 devices: each of `runs` (";"-separated: "baseline" = no mesh, or a mesh spec) loads the
    folder, synthesizes, and writes `<run>.npz` (codes, waveforms) and `<run>.json` (timing, bytes)."""
    import jax

    from qwen3tts_jax import Qwen3TTSModel

    assert jax.device_count() == 8, jax.devices()
    for run in runs.split(";"):
        t = time.perf_counter()
        mesh = {"baseline": None, "jax.make_mesh": "jax"}.get(run, run)
        if mesh == "jax":
            mesh = jax.make_mesh((4, 2), ("data", "model"))  # JAX's default axis type: Explicit
        m = Qwen3TTSModel.from_pretrained(folder, scan_layers=run not in UNROLLED, mesh=mesh)
        codes, wavs, extra = _synthesize(m, checks=run in CHECKED_RUNS)
        _save(Path(out_dir) / f"{run}.npz", codes, wavs, **extra)
        info: dict = {"seconds": time.perf_counter() - t}
        if m.mesh is not None:
            params = {"talker": m.params["talker"], "decoder": m.speech_tokenizer.params["decoder"]}
            info.update(
                model=int(dict(m.mesh.shape)["model"]),
                groups={k: _group_bytes(params, v) for k, v in GROUPS.items()},
                spec_mismatches=_spec_mismatches(params, m.mesh),
                kv_cache_spec=_kv_cache_spec(m),
            )
        (Path(out_dir) / f"{run}.json").write_text(json.dumps(info))


def _kv_cache_spec(model) -> str:
    """The PartitionSpec the table gives the talker's KV cache on this model's mesh (batch 8)."""
    from qwen3tts_jax.sharding import sharding_for

    t = model.config.talker.transformer
    return str(
        sharding_for(
            "state/cache/layers/k", (t.num_hidden_layers, len(TEXTS), 64, t.num_key_value_heads, t.head_dim), model.mesh
        ).spec
    )


def host_worker(folder: str, port: str, process_id: str, out_dir: str) -> None:
    """One of two processes × 4 CPU devices. The mesh is data=2 × model=4 with the model axis
    spanning both processes (devices [[0,1,4,5],[2,3,6,7]]), so tensor-parallel all-reduces cross
    the process boundary and each process holds, and reads, only half of every split tensor."""
    from qwen3tts_jax.sharding import initialize_distributed

    initialize_distributed(f"localhost:{port}", 2, int(process_id), local_device_count=4)
    import jax
    from jax.sharding import AxisType, Mesh

    from qwen3tts_jax import Qwen3TTSModel, weights

    assert jax.process_count() == 2 and jax.device_count() == 8 and jax.local_device_count() == 4
    devices = np.array(jax.devices(), dtype=object).reshape(2, 2, 2).transpose(1, 0, 2).reshape(2, 4)
    mesh = Mesh(devices, ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    opened = []
    open_ = weights.Checkpoint.open
    weights.Checkpoint.open = staticmethod(lambda path: opened.append(open_(path)) or opened[-1])
    model = Qwen3TTSModel.from_pretrained(folder, scan_layers=True, mesh=mesh)
    weights.Checkpoint.open = open_
    codes, wavs, alone = _synthesize(model)
    files = {f for c in opened for f in c.files.values()}
    _save(
        Path(out_dir) / f"host{process_id}.npz",
        codes,
        wavs,
        **alone,
        bytes_read=sum(c.bytes_read for c in opened),
        file_bytes=sum(f.stat().st_size for f in files),
    )
    jax.distributed.shutdown()


# --------------------------------------------------------------------------------------------
# In-process tests (one device; specs on an abstract mesh)
# --------------------------------------------------------------------------------------------


def _abstract(data: int, model: int):
    from jax.sharding import AbstractMesh

    return AbstractMesh((data, model), ("data", "model"))


def test_parse_mesh_spec():
    from qwen3tts_jax.sharding import parse_mesh_spec

    assert parse_mesh_spec("data=4,model=2") == {"data": 4, "model": 2}
    assert parse_mesh_spec("model=2") == {"data": 1, "model": 2}
    assert parse_mesh_spec(" data=8 ") == {"data": 8, "model": 1}
    for bad, msg in [
        ("data=4,model", "axis=size"),
        ("batch=2", "axis=size"),
        ("data=0", "positive"),
        ("data=2,data=2", "twice"),
        ("", "expected"),
        ("data=x", "positive"),
    ]:
        with pytest.raises(ValueError, match=msg):
            parse_mesh_spec(bad)


def test_make_mesh_needs_enough_devices():
    import jax

    from qwen3tts_jax.sharding import make_mesh

    mesh = make_mesh("data=1,model=1")
    assert dict(mesh.shape) == {"data": 1, "model": 1}
    with pytest.raises(ValueError, match=r"needs 8 devices, 1 available.*xla_force_host_platform_device_count=8"):
        make_mesh("data=4,model=2", jax.devices()[:1])
    assert make_mesh(mesh) is mesh
    assert dict(make_mesh({"model": 1}).shape) == {"data": 1, "model": 1}
    with pytest.raises(ValueError, match="axis=size"):
        make_mesh({"tensor": 1})
    # A mesh as JAX users make it: Explicit axes by default, converted to Auto, devices kept.
    from jax.sharding import AxisType

    explicit = jax.make_mesh((1, 1), ("data", "model"), axis_types=(AxisType.Explicit,) * 2)
    converted = make_mesh(explicit)
    assert (
        converted.axis_types == (AxisType.Auto, AxisType.Auto)
        and converted.devices.tolist() == explicit.devices.tolist()
    )
    assert make_mesh(jax.make_mesh((1,), ("data",))).axis_names == ("data",)
    with pytest.raises(ValueError, match=r"axis names must be \('data', 'model'\).*\('x', 'y'\)"):
        make_mesh(jax.make_mesh((1, 1), ("x", "y")))


def test_partition_specs_and_fallbacks():
    """The Megatron layout, and replication wherever a dimension does not split evenly."""
    from jax.sharding import PartitionSpec as P

    from qwen3tts_jax.sharding import logical_axes, partition_spec

    m42, m24 = _abstract(4, 2), _abstract(2, 4)
    units = {"heads": 16, "kv_heads": 16}

    def spec(path, shape, mesh, u=units):
        return partition_spec(logical_axes(path, shape), shape, mesh, u)

    q, k, o = (
        "talker/model/layers_0/self_attn/q_proj/weight",
        "talker/model/layers_0/self_attn/k_proj/weight",
        "talker/model/layers_0/self_attn/o_proj/weight",
    )
    assert spec(q, (64, 64), m24) == P("model")  # 4 heads on model=4
    assert spec(k, (32, 64), m24) == P()  # 2 kv heads on model=4: replicated
    assert spec(k, (32, 64), m42) == P("model")  # ... but split on model=2
    assert spec(k, (32, 64), m24, {}) == P("model")  # without head units 32 rows would split mid-head
    assert spec(o, (64, 64), m24) == P(None, "model")
    assert spec("talker/model/layers_0/mlp/down_proj/weight", (64, 96), m24) == P(None, "model")
    assert spec("talker/model/layers_0/mlp/up_proj/weight", (96, 64), m42) == P("model")
    assert spec("talker/model/layers/mlp/up_proj/weight", (3, 96, 64), m42) == P(None, "model")  # stacked
    assert spec("talker/model/text_embedding/weight", (151936, 48), m24) == P("model")
    assert spec("talker/model/layers_0/input_layernorm/weight", (64,), m24) == P()
    assert spec("state/cache/layers/0/k", (8, 80, 2, 16), m24, {}) == P("data")
    assert spec("state/cache/layers/0/k", (8, 80, 2, 16), m42, {}) == P("data", None, "model")
    assert spec("state/cache/layers/k", (3, 8, 80, 8, 128), m24, {}) == P(None, "data", None, "model")
    assert spec("state/codes", (3, 64, 16), m42, {}) == P()  # batch 3 on data=4: replicated
    assert spec("state/seen", (8, 3072), m42, {}) == P("data", "model")
    assert spec("decoder/decoder_1/block_2/conv1/conv/weight", (96, 96, 7), m24) == P("model")
    assert spec("decoder/decoder_1/block_2/conv2/conv/weight", (96, 96, 1), m24) == P(None, "model")
    assert spec("speaker_encoder/fc/conv/weight", (64, 192, 1), m24) == P()


def _all_param_paths():
    """(path, shape) of every parameter of the released and tiny architectures, from the key tables."""
    from qwen3tts_jax import presets
    from qwen3tts_jax.codec.config import Qwen3TTSTokenizerV2Config
    from qwen3tts_jax.codec.weights import codec_entries
    from qwen3tts_jax.config import Qwen3TTSConfig
    from qwen3tts_jax.weights import model_entries

    out = []
    for kind, size in [("base", "0b6"), ("custom_voice", "1b7"), ("voice_design", "1b7"), ("base", "tiny")]:
        cfg = Qwen3TTSConfig.from_dict(presets.model_config(kind, size))
        out += [("/".join(e.target), e.shape, cfg) for e in model_entries(cfg)]
    for tiny in (False, True):
        codec = Qwen3TTSTokenizerV2Config.from_dict(presets.tokenizer_config(tiny=tiny))
        out += [("/".join(e.target), e.shape, codec) for e in codec_entries(codec)]
    return out


def test_every_parameter_has_logical_axes():
    """Coverage: the table names every dimension of every parameter; on the released sizes the
    heavy matrices really split (model=2, 4, 8) and at most a few small tensors stay whole."""
    from qwen3tts_jax.codec.config import Qwen3TTSTokenizerV2Config
    from qwen3tts_jax.sharding import codec_units, logical_axes, model_units, partition_spec

    for path, shape, _cfg in _all_param_paths():
        axes = logical_axes(path, shape)
        assert len(axes) == len(shape), path
    for model in (2, 4, 8):
        mesh = _abstract(1, model)
        split = whole = 0
        for path, shape, cfg in _all_param_paths():
            if path.startswith(("speaker_encoder/", "encoder/")) or "tiny" in str(getattr(cfg, "tts_model_size", "")):
                continue
            if isinstance(cfg, Qwen3TTSTokenizerV2Config):
                if cfg.decoder.hidden_size != 512:
                    continue
                units = dict(codec_units(cfg))["decoder/"]
            else:
                if cfg.talker.transformer.hidden_size == 64:
                    continue
                units = dict(model_units(cfg))["talker/code_predictor/" if "code_predictor" in path else "talker/"]
            n = int(np.prod(shape))
            if partition_spec(logical_axes(path, shape), shape, mesh, units) == partition_spec((), (), mesh):
                whole += n
            else:
                split += n
        assert whole / (split + whole) < 0.05, (model, whole, split)


def test_unknown_paths_and_ranks_are_errors():
    from qwen3tts_jax.sharding import ShardingError, logical_axes

    with pytest.raises(ShardingError, match="talker/new_thing/weight: no logical axes"):
        logical_axes("talker/new_thing/weight", (3, 4))
    with pytest.raises(ShardingError, match="rank 3"):
        logical_axes("talker/model/layers_0/mlp/up_proj/weight", (2, 3, 4))


def test_slot_state_and_inputs_are_covered():
    """Every leaf of the engine's slot state (unrolled and scanned caches) and of its admission
    inputs has table axes."""
    import jax

    from qwen3tts_jax import presets
    from qwen3tts_jax.config import Policy, Qwen3TTSConfig
    from qwen3tts_jax.generate import FrameSampler
    from qwen3tts_jax.prompt import PromptRequest, pack_tracks, prompt_tracks
    from qwen3tts_jax.sampling import SamplingProgram
    from qwen3tts_jax.sharding import logical_axes, path_str

    cfg = Qwen3TTSConfig.from_dict(presets.model_config("custom_voice", "tiny"))
    for scan in (False, True):
        sampler = FrameSampler(cfg, Policy(scan_layers=scan), SamplingProgram())
        state = jax.eval_shape(lambda sampler=sampler: sampler.init_state(4, 256, 128, 8))
        ids = [(1, 2, 3, 9, 9, 1, 2, 3, 4, 5), (1, 2, 3, 7, 7, 7, 1, 2, 3, 4, 5)]
        tracks = pack_tracks(  # an admission's packed prompts, two packs (a data axis of 2)
            [prompt_tracks(cfg, PromptRequest(i, speaker="ryan")) for i in ids],
            cfg.talker.transformer.hidden_size,
            2,
            1024,
            16,
        )
        values = sampler.neutral_values(4)
        for prefix, tree in (("state", state), ("prompt", tracks), ("input/values", values)):
            for kp, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
                path = "/".join(p for p in (prefix, path_str(kp)) if p)
                assert len(logical_axes(path, np.shape(leaf))) == np.ndim(leaf), path


def test_sharded_load_equals_plain_load(tmp_path):
    """`load_tree(shardings=...)` on one device gives the same arrays as the plain load, in the
    requested dtype (bf16 file → fp32, codebook accumulators kept fp32)."""
    import jax
    import jax.numpy as jnp

    from qwen3tts_jax.config import Qwen3TTSConfig
    from qwen3tts_jax.sharding import loader_shardings, make_mesh, model_units
    from qwen3tts_jax.weights import load_model_params

    folder = write_tiny_folder(tmp_path / "tiny")
    cfg = Qwen3TTSConfig.from_model_dir(folder)
    mesh = make_mesh("data=1,model=1")
    for dtype in (None, jnp.bfloat16):
        plain = load_model_params(folder, cfg, dtype=dtype)
        sharded = load_model_params(folder, cfg, dtype=dtype, shardings=loader_shardings(mesh, model_units(cfg)))
        for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(sharded)):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


# --------------------------------------------------------------------------------------------
# Subprocess tests: 8 virtual devices, two processes
# --------------------------------------------------------------------------------------------


def _env(devices: int | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["JAX_PLATFORMS"] = "cpu"
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return write_tiny_folder(tmp_path_factory.mktemp("sharding") / "tiny")


@pytest.fixture(scope="module")
def mesh_run(tiny_folder, tmp_path_factory):
    """The baseline and the four meshes, in two concurrent 8-device subprocesses (compiling is
    most of their time and each is mostly single-threaded)."""
    out = tmp_path_factory.mktemp("mesh-run")
    groups = ["baseline;" + ";".join(MESHES[:2]), ";".join(MESHES[2:])]
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "mesh", str(tiny_folder), str(out), g],
            env=_env(8),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for g in groups
    ]
    logs = _wait(procs, 900)
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-4000:]
    results = {run: json.loads((out / f"{run}.json").read_text()) for run in ("baseline", *MESHES)}
    print(
        "[sharding] seconds (load + first synthesis, compile included): "
        + ", ".join(f"{k}: {v['seconds']:.1f}" for k, v in results.items())
    )
    return out, results


def _wait(procs, timeout: float) -> list[str]:
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return logs


@pytest.mark.parametrize("spec", MESHES)
@pytest.mark.slow
def test_mesh_codes_and_waveforms_match_one_device(mesh_run, spec):
    out, _ = mesh_run
    codes0, wavs0, _ = _load(out / "baseline.npz")
    codes, wavs, extra = _load(out / f"{spec}.npz")
    assert len(codes) == len(codes0) == len(TEXTS) and max(len(c) for c in codes0) > 0
    # Text 0 alone in the idle 8-slot engine stepped one bucket of data-axis-size rows only.
    data = 4 if spec == "jax.make_mesh" else dict(kv.split("=") for kv in spec.split(",")).get("data", "1")
    assert extra["rows_stepped"].tolist() == [int(data)], (spec, extra["rows_stepped"])
    np.testing.assert_array_equal(extra["alone"], codes0[0], err_msg=f"{spec}: text 0 alone vs in the batch")
    for i in range(3):
        np.testing.assert_array_equal(extra[f"trio_{i}"], codes0[1 + i], err_msg=f"{spec}: text {1 + i} of three")
    for i, (a, b) in enumerate(zip(codes, codes0)):
        np.testing.assert_array_equal(a, b, err_msg=f"{spec}: greedy codes of row {i} differ from one device")
    for a, b in zip(wavs, wavs0):
        assert a.shape == b.shape
    err = max(float(np.max(np.abs(a - b))) if a.size else 0.0 for a, b in zip(wavs, wavs0))
    print(f"[parity] mesh {spec}: codes identical ({[len(c) for c in codes]} frames), waveform max abs err {err:.3e}")
    assert err <= WAV_TOL


@pytest.mark.parametrize("run", CHECKED_RUNS)
@pytest.mark.slow
def test_a_request_behind_a_held_compile_comes_in_on_a_mesh(mesh_run, run):
    """Skip-ahead (`Engine._admit_behind`) on one device and on `jax.make_mesh((4, 2), ...)`:
    while text HELD is held for its admission's compile, a request whose programs exist comes in
    on row 2; all three give the codes their texts give in the full batch."""
    out, _ = mesh_run
    codes0, _, _ = _load(out / "baseline.npz")
    _, _, extra = _load(out / f"{run}.npz")
    # held after B's step; still held after C's; C on row 2
    assert extra["held_seen"].tolist() == [1, 1, 1], (run, extra["held_seen"])
    for i, text in enumerate((0, HELD, 0)):
        np.testing.assert_array_equal(extra[f"held_{i}"], codes0[text], err_msg=f"{run}: request {i} (text {text})")


@pytest.mark.parametrize("run", CHECKED_RUNS)
@pytest.mark.slow
def test_codec_pushes_compile_nothing_after_compile_on_a_mesh(mesh_run, run):
    """`CodecSlots.compile()` (what a server's warm-up calls) covers every push, on one device and
    on `jax.make_mesh((4, 2), ...)`: on a mesh the state and a push's inputs are placed replicated
    and the state keeps its sharding, so pushes call the very programs compiled ahead (before,
    the first push on a mesh compiled 35 programs, later ones a few each)."""
    _, _, extra = _load(mesh_run[0] / f"{run}.npz")
    assert extra["codec_pushes_compiled"].tolist() == [0, 0, 0, 0], (run, extra["codec_pushes_compiled"])


@pytest.mark.parametrize("spec", MESHES)
@pytest.mark.slow
def test_params_really_are_split(mesh_run, spec):
    """Per-device bytes = total / model size for the split groups; the kv projections of the
    tiny model (2 kv heads) split on model=2 and stay whole on model=4 (the documented fallback)."""
    _, results = mesh_run
    r = results[spec]
    model = r["model"]
    assert not r["spec_mismatches"], r["spec_mismatches"][:5]
    g = r["groups"]
    for name in ("talker_q_o_mlp", "vocab_tables", "codec_residual_convs", "codec_mlp"):
        on_first, total = g[name]
        assert total > 0 and on_first * model == total, (spec, name, on_first, total)
    on_first, total = g["talker_k_v"]
    assert on_first * (model if 2 % model == 0 else 1) == total, (spec, on_first, total)
    assert r["kv_cache_spec"] == KV_CACHE_SPECS[spec], (spec, r["kv_cache_spec"])
    talker_first, talker_total = g["talker_all"]
    codec_first, codec_total = g["codec_decoder_all"]
    print(
        f"[sharding] {spec}: talker {talker_first / talker_total:.3f} of {talker_total / 2**20:.1f} MiB per device, "
        f"codec decoder {codec_first / codec_total:.3f} of {codec_total / 2**20:.2f} MiB (1/model = {1 / model:.3f})"
    )
    assert talker_first / talker_total <= 1.05 / model + 0.02


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(mesh_run, tiny_folder, tmp_path):
    """`jax.distributed.initialize` with two processes × 4 CPU devices: each process loads only
    its slices and both produce the one-device codes (and waveforms within tolerance)."""
    out, _ = mesh_run
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "host", str(tiny_folder), str(port), str(i), str(tmp_path)],
            env=_env(None),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = _wait(procs, 600)
    for i, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"process {i} failed:\n{log[-4000:]}"
    codes0, wavs0, _ = _load(out / "baseline.npz")
    for i in range(2):
        codes, wavs, extra = _load(tmp_path / f"host{i}.npz")
        for j, (a, b) in enumerate(zip(codes, codes0)):
            np.testing.assert_array_equal(a, b, err_msg=f"process {i}, row {j}")
        # Text 0 alone in the idle 8-slot engine: one 2-row bucket (data=2) across the processes.
        assert extra["rows_stepped"].tolist() == [2], (i, extra["rows_stepped"])
        np.testing.assert_array_equal(extra["alone"], codes0[0], err_msg=f"process {i}: text 0 alone vs in the batch")
        for j in range(3):
            np.testing.assert_array_equal(extra[f"trio_{j}"], codes0[1 + j], err_msg=f"process {i}: text {1 + j} of 3")
        err = max(float(np.max(np.abs(a - b))) if a.size else 0.0 for a, b in zip(wavs, wavs0))
        frac = float(extra["bytes_read"]) / float(extra["file_bytes"])
        print(
            f"[parity] two processes, process {i}: codes identical, waveform max abs err {err:.3e}; "
            f"read {frac:.2f} of the checkpoint bytes"
        )
        assert err <= WAV_TOL
        assert frac < 0.6, f"process {i} read {frac:.2f} of the checkpoint; expected about half"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    {"mesh": mesh_worker, "host": host_worker}[sys.argv[1]](*sys.argv[2:])
