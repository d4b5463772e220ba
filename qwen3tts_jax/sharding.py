"""Sharded inference on a JAX mesh: logical axis names → mesh axes, in one place.

Every array the model keeps or carries gets *logical* axis names from ONE table (`AXES`, matched
on the array's path — `talker/model/layers_3/self_attn/q_proj/weight`, `state/cache/layers/0/k`
— and checked against its rank), and the logical names map to the two mesh axes in ONE rule list
(`RULES`):

    batch    → data     data parallel: requests of a batch spread over `data`
    heads, kv_heads, mlp, vocab, channels → model     tensor parallel (Megatron layout)
    everything else (embed, head_dim, layers, slots, time, frames, codebook, kernel) → replicated

The tensor-parallel layout is the usual one: q/k/v and gate/up are split on their output rows
(heads / mlp), o_proj and down_proj on their input columns, so each attention head and MLP slice
is local and one all-reduce closes each block; embedding tables and heads are split on the
vocabulary; the codec decoder's residual units split conv1's output and conv2's input channels
the same way, its ConvNeXt MLPs like any MLP. Nothing else is written by hand: params are placed
with `NamedSharding`s, the decoding state is pinned with `with_sharding_constraint` at every
prefill / frame step (`MeshDecoder`), and XLA's SPMD partitioner inserts the collectives.
`shard_map` is not used: at these shapes the partitioner already emits the collectives a manual
version would (one all-reduce per attention / MLP block, an all-gather of the vocab-split
logits before sampling), and the exactness contract (same greedy codes as one device) is easier
to keep without hand-written reductions.

Fallback to replication, per dimension: a dimension is split over a mesh axis only when it
divides evenly — in *units* of what may not be cut: a fused `(heads·head_dim)` row block splits
only on whole heads (`units`), so the tiny model's kv_heads=2 on model=4 keeps k_proj/v_proj and
the KV cache's head axis replicated (q_proj, 4 heads, is still split), and a batch of 3 on
data=4 is replicated (the generation helpers pad the batch to a multiple of `data` instead, see
`generate_codes`). A mesh axis is used at most once per array.

Multi-host: `initialize_distributed` wraps `jax.distributed.initialize`; meshes span every
process's devices; params are built with `jax.make_array_from_callback`, so each process reads
only the slices its own devices hold (`weights.load_tree(shardings=...)`); results are
all-gathered to replicated arrays before they reach the host (`fetch`), which every process may
then read. All processes must run the same calls in the same order (SPMD, one controller each).
Tested with two processes × 4 CPU devices on one machine (gloo CPU collectives, the default of
jax 0.10 on CPU), the model axis spanning both processes: see tests/test_sharding.py. By hand:

    # one line per process (here two on one host; on a cluster, one per host, same coordinator)
    qwen3tts-jax batch --model DIR --input items.jsonl --out-dir OUT --mesh data=2,model=4 \
        --coordinator host0:12355 --num-processes 2 --process-id 0 --cpu-devices 4
    qwen3tts-jax batch ... --process-id 1 ...

or in Python, before any other JAX call:
`sharding.initialize_distributed("host0:12355", 2, i)`, then
`Qwen3TTSModel.from_pretrained(DIR, mesh="data=2,model=4")` on every process. Not covered
multi-process: the streaming generators (`stream_*`, and so `synthesize`, which streams) read
each chunk on the host as it is produced and are meant for one process.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from qwen3tts_jax import generate as gen
from qwen3tts_jax.prompt import PromptEmbedder
from qwen3tts_jax.talker import Talker

MESH_AXES = ("data", "model")

# Logical axis → mesh axis. Names not listed are replicated.
RULES: tuple[tuple[str, str], ...] = (
    ("batch", "data"),
    ("heads", "model"),
    ("kv_heads", "model"),
    ("mlp", "model"),
    ("vocab", "model"),
    ("channels", "model"),
)

REPLICATED = None  # an AXES entry: every dimension replicated, whatever the rank

# Path pattern (full match on the '/'-joined path) → logical axes of the array (per layer for
# layer stacks: a stacked `layers/` array gets a leading "layers" axis). First match wins.
AXES: tuple[tuple[str, tuple[str | None, ...] | None], ...] = (
    # -- decoding state (`generate.DecodeState` as `state/...`) and inputs
    (r"state/cache/layers(/\d+)?/[kv]", ("batch", "slots", "kv_heads", "head_dim")),
    (r"state/cache/valid", ("batch", "slots")),
    (r"state/(cache/end|num_tokens|key)", REPLICATED),
    (r"state/(token|finished)", ("batch",)),
    (r"state/hidden", ("batch", "embed")),
    (r"state/seen", ("batch", "vocab")),
    (r"state/codes", ("batch", "frames", "codebook")),
    (r"input/(embeds|trailing)", ("batch", "time", "embed")),
    (r"input/mask", ("batch", "time")),
    (r"input/key", REPLICATED),
    (r"codec/codes", ("batch", "codebook", "time")),
    (r"codec/wav", ("batch", "time")),
    # -- run once per voice-clone prompt, on every device: not worth splitting
    (r"speaker_encoder/.*", REPLICATED),
    (r"encoder/.*", REPLICATED),
    # -- transformer blocks: talker, code predictor, codec pre-transformer
    (r".*/self_attn/q_proj/weight", ("heads", "embed")),
    (r".*/self_attn/q_proj/bias", ("heads",)),
    (r".*/self_attn/[kv]_proj/weight", ("kv_heads", "embed")),
    (r".*/self_attn/[kv]_proj/bias", ("kv_heads",)),
    (r".*/self_attn/o_proj/weight", ("embed", "heads")),
    (r".*/self_attn/[qk]_norm/weight", ("head_dim",)),
    (r".*/mlp/(gate|up)_proj/weight", ("mlp", "embed")),
    (r".*/mlp/down_proj/weight", ("embed", "mlp")),
    (r".*/(input_layernorm|post_attention_layernorm|norm)/weight", ("embed",)),
    (r".*/o_proj/bias", ("embed",)),
    # -- talker and code predictor: embeddings, heads, projections
    (r"talker/model/(codec|text)_embedding/weight", ("vocab", "embed")),
    (r"talker/code_predictor/model/codec_embedding_\d+/weight", ("vocab", "embed")),
    (r"talker/(codec_head|code_predictor/lm_head_\d+)/weight", ("vocab", "embed")),
    (r"talker/text_projection/linear_fc1/weight", ("mlp", "embed")),
    (r"talker/text_projection/linear_fc1/bias", ("mlp",)),
    (r"talker/text_projection/linear_fc2/weight", ("embed", "mlp")),
    (r"talker/text_projection/linear_fc2/bias", ("embed",)),
    (r"talker/code_predictor/small_to_mtp_projection/(weight|bias)", REPLICATED),
    # -- codec decoder (conv weights: Conv1d (out, in, k), ConvTranspose1d (in, out, k))
    (r"decoder/quantizer/.*/cluster_usage", ("codebook",)),
    (r"decoder/quantizer/.*/embedding_sum", ("codebook", "embed")),
    (r"decoder/quantizer/.*/output_proj/weight", REPLICATED),
    (r"decoder/pre_transformer/(input_proj|output_proj)/(weight|bias)", REPLICATED),
    (r"decoder/pre_transformer/layers_\d+/(self_attn|mlp)_layer_scale/scale", ("embed",)),
    (r"decoder/(pre_conv|decoder_0)/conv/weight", ("channels", None, "kernel")),
    (r"decoder/upsample_\d+_0/conv/weight", (None, "channels", "kernel")),
    (r"decoder/upsample_\d+_1/dwconv/conv/weight", ("channels", None, "kernel")),
    (r"decoder/upsample_\d+_1/(norm/weight|norm/bias|gamma|pwconv2/bias)", ("embed",)),
    (r"decoder/upsample_\d+_1/pwconv1/weight", ("mlp", "embed")),
    (r"decoder/upsample_\d+_1/pwconv1/bias", ("mlp",)),
    (r"decoder/upsample_\d+_1/pwconv2/weight", ("embed", "mlp")),
    (r"decoder/decoder_\d+/block_1/conv/weight", (None, "channels", "kernel")),
    (r"decoder/decoder_\d+/block_\d+/conv1/conv/weight", ("channels", None, "kernel")),
    (r"decoder/decoder_\d+/block_\d+/conv2/conv/weight", (None, "channels", "kernel")),
    (r"decoder/decoder_\d+/block_\d+/conv2/conv/bias", (None,)),
    (r"decoder/decoder_\d+/conv/weight", (None, "channels", "kernel")),  # the last conv (1, C, 7)
    (r"decoder/decoder_\d+/conv/bias", (None,)),
    (r"decoder/.*/(alpha|beta)", ("channels",)),  # SnakeBeta, per channel
    (r"decoder/.*/bias", ("channels",)),  # the remaining conv biases follow their out channels
)

_COMPILED_AXES = tuple((re.compile(p), axes) for p, axes in AXES)

# Path prefix → {logical axis: unit}: a fused (heads·head_dim) dimension splits only on whole heads.
Units = tuple[tuple[str, Mapping[str, int]], ...]


class ShardingError(ValueError):
    """A path the axis table does not cover, or an array whose rank its entry contradicts."""


# --------------------------------------------------------------------------------------------
# Meshes
# --------------------------------------------------------------------------------------------


def parse_mesh_spec(spec: str) -> dict[str, int]:
    """`"data=4,model=2"` → {"data": 4, "model": 2}; an omitted axis has size 1."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"mesh={spec!r}: expected 'data=N,model=M' (e.g. 'data=4,model=2')")
    sizes = {a: 1 for a in MESH_AXES}
    seen = set()
    for part in spec.replace(" ", "").split(","):
        name, sep, value = part.partition("=")
        if not sep or name not in MESH_AXES:
            raise ValueError(f"mesh={spec!r}: {part!r} is not 'axis=size' with axis in {MESH_AXES}")
        if name in seen:
            raise ValueError(f"mesh={spec!r}: axis {name!r} given twice")
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"mesh={spec!r}: size of {name!r} must be a positive integer, got {value!r}")
        seen.add(name)
        sizes[name] = int(value)
    return sizes


def make_mesh(spec: "str | Mapping[str, int] | Mesh", devices: Sequence[Any] | None = None) -> Mesh:
    """A ("data", "model") mesh from `"data=4,model=2"`, a dict, or a ready `Mesh` (returned as is).

    The mesh uses the first data×model devices of `devices` (default: all devices of all
    processes, `jax.devices()`), so `data=2` on an 8-device host runs on 2 of them; multi-process
    meshes must cover every process's devices. Axes are `Auto` (the compiler propagates
    shardings), whatever `jax.make_mesh`'s default is."""
    if isinstance(spec, Mesh):
        if tuple(spec.axis_names) != MESH_AXES:
            raise ValueError(f"mesh: axis names must be {MESH_AXES}, got {tuple(spec.axis_names)}")
        return spec
    if isinstance(spec, Mapping):
        spec = ",".join(f"{k}={v}" for k, v in spec.items())
    sizes = parse_mesh_spec(spec)
    devices = list(jax.devices() if devices is None else devices)
    n = sizes["data"] * sizes["model"]
    if n > len(devices):
        raise ValueError(
            f"mesh={spec!r} needs {n} devices, {len(devices)} available ({jax.default_backend()}); on CPU set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={n} (or --cpu-devices {n}) before JAX starts")
    if n < len(devices) and jax.process_count() > 1:
        raise ValueError(f"mesh={spec!r} covers {n} of {len(devices)} devices; a multi-process mesh must use all of them")
    grid = np.array(devices[:n], dtype=object).reshape(sizes["data"], sizes["model"])
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def mesh_size(mesh: Mesh, axis: str) -> int:
    return int(dict(mesh.shape).get(axis, 1))


def initialize_distributed(coordinator_address: str, num_processes: int, process_id: int,
                           local_device_count: int | None = None) -> None:
    """`jax.distributed.initialize` for multi-host runs (call before any other JAX work).

    On CPU, `local_device_count` virtual devices per process (`jax_num_cpu_devices`); the CPU
    collectives are gloo's (jax ≥ 0.5 default). On GPU/TPU clusters leave it None; there
    `jax.distributed.initialize()` without arguments may also detect the cluster itself."""
    if local_device_count is not None:
        jax.config.update("jax_num_cpu_devices", int(local_device_count))
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=int(num_processes),
                               process_id=int(process_id))


# --------------------------------------------------------------------------------------------
# Logical axes → PartitionSpec
# --------------------------------------------------------------------------------------------


def logical_axes(path: str, shape: Sequence[int]) -> tuple[str | None, ...]:
    """The logical axis names of the array at `path` (one per dimension)."""
    for pattern, axes in _COMPILED_AXES:
        if pattern.fullmatch(path):
            if axes is REPLICATED:
                return (None,) * len(shape)
            if len(shape) == len(axes) + 1 and re.search(r"(^|/)layers(/|$)", path):
                axes = ("layers", *axes)  # a scanned stack: leading layer axis
            if len(shape) != len(axes):
                raise ShardingError(f"{path}: shape {tuple(shape)} has rank {len(shape)}, the axis table says {axes}")
            return tuple(axes)
    raise ShardingError(f"{path}: no logical axes for this array (shape {tuple(shape)}); add it to sharding.AXES")


def partition_spec(axes: Sequence[str | None], shape: Sequence[int], mesh, units: Mapping[str, int] | None = None,
                   rules: Iterable[tuple[str, str]] = RULES) -> P:
    """Logical axes → `PartitionSpec` on `mesh`: a dimension goes to its rule's mesh axis only if
    it divides evenly (in `units[name]`-sized blocks) and the axis is still unused."""
    table = dict(rules)
    units = units or {}
    used: set[str] = set()
    spec: list[str | None] = []
    for name, dim in zip(axes, shape):
        axis = table.get(name) if name is not None else None
        size = mesh_size(mesh, axis) if axis is not None else 1
        if axis is None or size == 1 or axis in used or dim % (size * units.get(name, 1)):
            spec.append(None)
            continue
        spec.append(axis)
        used.add(axis)
    while spec and spec[-1] is None:
        spec.pop()
    return P(*spec)


def _units_for(path: str, units: Units) -> Mapping[str, int]:
    for prefix, u in units:
        if path.startswith(prefix):
            return u
    return {}


def sharding_for(path: str, shape: Sequence[int], mesh: Mesh, units: Units = ()) -> NamedSharding:
    return NamedSharding(mesh, partition_spec(logical_axes(path, shape), shape, mesh, _units_for(path, units)))


def model_units(cfg) -> Units:
    """Head sizes of a `Qwen3TTSConfig`'s stacks (fused head rows split on whole heads)."""
    t, cp = cfg.talker.transformer, cfg.talker.code_predictor.transformer
    return (("talker/code_predictor/", {"heads": cp.head_dim, "kv_heads": cp.head_dim}),
            ("talker/", {"heads": t.head_dim, "kv_heads": t.head_dim}))


def codec_units(codec_cfg) -> Units:
    """Head sizes of a `Qwen3TTSTokenizerV2Config`'s transformers."""
    d, e = codec_cfg.decoder, codec_cfg.encoder
    return (("decoder/", {"heads": d.head_dim, "kv_heads": d.head_dim}),
            ("encoder/", {"heads": e.head_dim, "kv_heads": e.head_dim}))


def path_str(key_path) -> str:
    """A `tree_flatten_with_path` key path → `a/b/0/c`."""
    parts = []
    for k in key_path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def tree_shardings(tree, mesh: Mesh, prefix: str = "", units: Units = ()):
    """A `NamedSharding` for every leaf of `tree` (paths `prefix/<tree path>`)."""
    def one(kp, x):
        path = "/".join(p for p in (prefix, path_str(kp)) if p)
        return sharding_for(path, np.shape(x), mesh, units)

    return jax.tree_util.tree_map_with_path(one, tree)


def loader_shardings(mesh: Mesh, units: Units = ()) -> Callable[[tuple[str, ...], tuple[int, ...]], NamedSharding]:
    """For `weights.load_tree(shardings=...)`: param target path and shape → its sharding."""
    return lambda target, shape: sharding_for("/".join(target), shape, mesh, units)


# --------------------------------------------------------------------------------------------
# Placement and fetching
# --------------------------------------------------------------------------------------------


def put(x, sharding: NamedSharding) -> jax.Array:
    """Place a host value (identical on every process) with `sharding`; each process builds
    only its own devices' slices. Global arrays already on the mesh are resharded on device."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return jax.device_put(x, sharding)
    if isinstance(x, jax.Array) and x.sharding == sharding:
        return x
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def place(tree, mesh: Mesh, prefix: str = "", units: Units = ()):
    """Every leaf of `tree` onto the mesh with its table sharding."""
    return jax.tree.map(put, tree, tree_shardings(tree, mesh, prefix, units))


def place_model_params(params: dict, cfg, mesh: Mesh) -> dict:
    """A `load_model_params`/`random_model_params` tree (unrolled or stacked) onto the mesh."""
    return place(params, mesh, units=model_units(cfg))


def place_codec_params(params: dict, codec_cfg, mesh: Mesh) -> dict:
    """`{"encoder": ..., "decoder": ...}` codec params onto the mesh."""
    return place(params, mesh, units=codec_units(codec_cfg))


def load_model_params(folder, cfg, dtype, scan_layers: bool, mesh: Mesh) -> dict:
    """`weights.load_model_params` straight onto the mesh (each process reads its slices)."""
    from qwen3tts_jax import weights

    params = weights.load_model_params(folder, cfg, dtype=dtype, scan_layers=scan_layers,
                                       shardings=loader_shardings(mesh, model_units(cfg)))
    return place_model_params(params, cfg, mesh) if scan_layers else params  # stacked layers: their own split


def load_speech_tokenizer(folder, dtype, mesh: Mesh):
    """`Qwen3TTSTokenizer.from_pretrained(folder, dtype)` of a local speech_tokenizer folder,
    its params read straight onto the mesh. `dtype`: a floating dtype or None (float32)."""
    from pathlib import Path

    from qwen3tts_jax.codec.config import Qwen3TTSTokenizerV2Config
    from qwen3tts_jax.codec.weights import load_codec_params
    from qwen3tts_jax.config import Policy
    from qwen3tts_jax.speech_tokenizer import Qwen3TTSTokenizer, _read_preprocessor

    folder = Path(folder)
    cfg = Qwen3TTSTokenizerV2Config.from_model_dir(folder)
    dt = jnp.dtype(dtype or jnp.float32)
    params = load_codec_params(folder, dtype=dt, cfg=cfg, shardings=loader_shardings(mesh, codec_units(cfg)))
    return Qwen3TTSTokenizer(cfg, params, Policy(dtype=dt, param_dtype=dt), _read_preprocessor(folder, cfg), str(folder))


@functools.lru_cache(maxsize=None)
def _replicator(mesh: Mesh):
    return jax.jit(lambda a: a, out_shardings=NamedSharding(mesh, P()))


def replicate(x: jax.Array) -> jax.Array:
    """`x` as a fully replicated array on its mesh (an all-gather when it is split)."""
    if not isinstance(x, jax.Array) or x.is_fully_replicated or not isinstance(x.sharding, NamedSharding):
        return x
    return _replicator(x.sharding.mesh)(x)


def fetch(x) -> np.ndarray:
    """A (possibly multi-process, split) array to host numpy, the same on every process."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        x = replicate(x)
    return np.asarray(x)


def per_device_bytes(tree) -> dict[Any, int]:
    """Bytes each (addressable) device holds of `tree`'s leaves."""
    out: dict[Any, int] = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            out[shard.device] = out.get(shard.device, 0) + shard.data.nbytes
    return out


def constrain(tree, mesh: Mesh, prefix: str):
    """`with_sharding_constraint` of every leaf to its table sharding (inside jit)."""
    return jax.lax.with_sharding_constraint(tree, tree_shardings(tree, mesh, prefix))


# --------------------------------------------------------------------------------------------
# Decoding under a mesh
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MeshDecoder(gen.Decoder):
    """`generate.Decoder` whose prefill and frame step pin the decoding state to the table's
    shardings (batch over `data`, the KV cache's heads and the penalty mask's vocabulary over
    `model`); the while-loop / scan loops are the parent's, and `generate.compiled` jits it
    like any decoder (the mesh is part of the hashable static key)."""

    mesh: Mesh | None = None

    def prefill(self, params, embeds, mask, slots: int, max_frames: int, key):
        embeds = constrain(embeds, self.mesh, "input/embeds")
        mask = constrain(mask, self.mesh, "input/mask")
        return constrain(super().prefill(params, embeds, mask, slots, max_frames, key), self.mesh, "state")

    def frame_step(self, params, trailing, state):
        state = constrain(state, self.mesh, "state")
        return constrain(super().frame_step(params, trailing, state), self.mesh, "state")


def mesh_decoder(decoder: gen.Decoder, mesh: Mesh) -> MeshDecoder:
    if isinstance(decoder, MeshDecoder) and decoder.mesh == mesh:
        return decoder
    return MeshDecoder(decoder.cfg, decoder.policy, decoder.sampling, mesh)


def padded_rows(n: int, mesh: Mesh) -> int:
    """Rows a batch of n is padded to so it splits evenly over `data`."""
    d = mesh_size(mesh, "data")
    return -(-n // d) * d


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    """Pad axis 0 to `rows` by repeating the last row (rows are independent: the copies finish
    with the row they copy, so they never extend the while loop)."""
    x = np.asarray(x)
    if x.shape[0] == rows:
        return x
    return np.concatenate([x, np.repeat(x[-1:], rows - x.shape[0], axis=0)])


def generate_codes(decoder: gen.Decoder, params, embeds, mask, trailing, max_new_tokens: int, key,
                   mesh: Mesh) -> list[np.ndarray]:
    """`generate.generate_codes` on a mesh: the batch padded to a multiple of `data` and split
    over it, the state pinned by `MeshDecoder`, the codes all-gathered before they reach the host.
    Rows are independent and the PRNG is partitionable, so each row's codes equal a one-device
    run's (greedy: identical; sampled: the same draws, since row i's randomness depends only on i)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    dec = mesh_decoder(decoder, mesh)
    b = np.shape(embeds)[0]
    rows = padded_rows(b, mesh)
    embeds, mask, trailing = (_pad_rows(x, rows) for x in (embeds, mask, trailing))
    prefill, decode, _ = gen.compiled(dec)
    frames = gen.frame_budget(max_new_tokens)
    slots = gen.cache_slots(embeds.shape[1], frames)
    on = lambda x, name: put(x, sharding_for(name, np.shape(x), mesh))  # noqa: E731
    key = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    state = prefill(params, on(embeds, "input/embeds"), on(mask, "input/mask"), slots, frames, on(key, "input/key"))
    state = decode(params, on(trailing, "input/trailing"), state, max_new_tokens)
    state = dataclasses.replace(state, codes=fetch(state.codes), num_tokens=fetch(state.num_tokens))
    return gen.frames_of(state, decoder.cfg.talker.codec_eos_token_id)[:b]


def decode_audio(tokenizer, codes: Sequence[np.ndarray], mesh: Mesh) -> tuple[list[np.ndarray], int]:
    """`Qwen3TTSTokenizer.decode` of a list of `(T_i, 16)` code arrays on a mesh: the batch
    padded to a multiple of `data` and split over it, the tokenizer's decoder params as placed
    (`place_codec_params`), the reference's chunked decode; float32 waveforms, `T_i·1920` samples."""
    from qwen3tts_jax.codec import decoder as codec_decoder

    cfg = tokenizer.config.decoder
    sr = tokenizer.get_output_sample_rate()
    items = []
    for i, c in enumerate(codes):
        c = np.asarray(c)
        if c.ndim != 2 or c.shape[1] != cfg.num_quantizers:
            raise ValueError(f"codes[{i}]: expected shape (frames, {cfg.num_quantizers}), got {c.shape}")
        if c.size and (c.min() < 0 or c.max() >= cfg.codebook_size):
            raise ValueError(f"codes[{i}]: codes must be in [0, {cfg.codebook_size - 1}]")
        items.append(c.astype(np.int32))
    t = max((len(c) for c in items), default=0)
    if t == 0:
        return [np.zeros(0, np.float32) for _ in items], sr
    batch = np.zeros((padded_rows(len(items), mesh), cfg.num_quantizers, t), np.int32)  # code-0 padding, as decode's clamp
    for i, c in enumerate(items):
        batch[i, :, : len(c)] = c.T
    wav = codec_decoder.chunked_decode(tokenizer.params["decoder"], put(batch, sharding_for("codec/codes", batch.shape, mesh)),
                                       cfg, tokenizer.policy)
    wav = fetch(wav).astype(np.float32)
    return [wav[i, : len(c) * cfg.total_upsample] for i, c in enumerate(items)], sr


class MeshPromptEmbedder(PromptEmbedder):
    """`PromptEmbedder` over mesh-placed talker params whose lookups come back replicated, so
    every process can read them (a split result is not addressable from one host)."""

    def __init__(self, talker_params: dict, cfg, policy, mesh: Mesh):
        super().__init__(talker_params, cfg, policy)
        rep = NamedSharding(mesh, P())
        talker = Talker(cfg.talker, policy)
        dtype = policy.dtype
        self._text = jax.jit(lambda p, ids: talker.apply({"params": p}, ids, method=Talker.embed_text), out_shardings=rep)
        self._take = jax.jit(lambda table, ids: jnp.take(table, ids, axis=0).astype(dtype), out_shardings=rep)
        self._sum = jax.jit(
            lambda tables, codes: jnp.sum(jnp.stack([jnp.take(t, codes[:, q], axis=0).astype(dtype) for q, t in enumerate(tables)], 1), 1),
            out_shardings=rep)

    def codec(self, ids: Sequence[int]) -> np.ndarray:
        return np.asarray(self._take(self._tables[0], np.asarray(ids, np.int32)))

    def codes(self, codes: np.ndarray) -> np.ndarray:
        return np.asarray(self._sum(self._tables, np.asarray(codes, np.int32)))
