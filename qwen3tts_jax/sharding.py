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
with `NamedSharding`s, the engine's slot state is pinned with `with_sharding_constraint` at every
admission / frame step (`Placement.constrain`, called by the one generation path whether or not
there is a mesh), and XLA's SPMD partitioner inserts the collectives.
`shard_map` is not used: at these shapes the partitioner already emits the collectives a manual
version would (one all-reduce per attention / MLP block, an all-gather of the vocab-split
logits before sampling), and the exactness contract (same greedy codes as one device) is easier
to keep without hand-written reductions.

Fallback to replication, per dimension: a dimension is split over a mesh axis only when it
divides evenly — in *units* of what may not be cut: a fused `(heads·head_dim)` row block splits
only on whole heads (`units`), so the tiny model's kv_heads=2 on model=4 keeps k_proj/v_proj and
the KV cache's head axis replicated (q_proj, 4 heads, is still split), and a batch of 3 on
data=4 is replicated (the engine's slot count is rounded up to a multiple of `data` instead,
`Placement.rows`). A mesh axis is used at most once per array.

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
`Qwen3TTSModel.from_pretrained(DIR, mesh="data=2,model=4")` on every process. The engine's host
loop is deterministic given its requests, so every process admitting the same requests in the
same order (as `batch` does) stays in step; a server is one process.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

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
    # -- the engine's slot state (`generate.SlotState` as `state/...`) and its inputs
    (r"state/cache/layers(/\d+)?/[kv]", ("batch", "slots", "kv_heads", "head_dim")),
    (r"state/cache/valid", ("batch", "slots")),
    (r"state/(cache/end|token|num_tokens|limit|running|reason)", ("batch",)),
    (r"state/key", ("batch", None)),
    (r"state/values/.*", ("batch",)),
    (r"state/steps", REPLICATED),
    (r"state/trailing", ("batch", "time", "embed")),
    (r"state/hidden", ("batch", "embed")),
    (r"state/seen", ("batch", "vocab")),
    (r"state/codes", ("batch", "frames", "codebook")),
    (r"prompt/(tracks/)?(text_ids|text_on|codec_ids|codec_on|spk_on|res_on|mask)", ("batch", "time")),
    (r"prompt/(tracks/)?res_codes", ("batch", "time", "codebook")),
    (r"prompt/(tracks/)?speaker", ("batch", "embed")),
    (r"prompt/(segment|source|index)", ("batch", "time")),  # `prompt.PackedPrompts`: packs, requests
    (r"prompt/lengths", ("batch",)),
    (r"input/(trailing_ids)", ("batch", "time")),
    (r"input/(rows|limits)", ("batch",)),
    (r"input/keys", ("batch", None)),
    (r"input/values/.*", ("batch",)),
    (r"input/scalar", REPLICATED),
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


def make_mesh(spec: str | Mapping[str, int] | Mesh, devices: Sequence[Any] | None = None) -> Mesh:
    """A mesh over the axes ("data", "model") from `"data=4,model=2"`, a dict, or a ready `Mesh`.

    A `Mesh` made the standard way (`jax.make_mesh((4, 2), ("data", "model"))`, whose axes are
    `Explicit` by default in current JAX) is taken with its devices and axis names as they are
    (either order, or only one of the two axes) and its axes made `Auto`: placement here is by
    sharding constraints that the compiler propagates, which Explicit axes would instead demand
    at every gather. Other axis names are an error. From a spec, the mesh uses the first
    data×model devices of `devices` (default: all devices of all processes, `jax.devices()`);
    multi-process meshes must cover every process's devices."""
    if isinstance(spec, Mesh):
        names = tuple(spec.axis_names)
        if not names or len(set(names)) != len(names) or not set(names) <= set(MESH_AXES):
            raise ValueError(f"mesh: axis names must be {MESH_AXES} (or one of them), got {names}")
        if all(t == AxisType.Auto for t in spec.axis_types):
            return spec
        return Mesh(spec.devices, names, axis_types=(AxisType.Auto,) * len(names))
    if isinstance(spec, Mapping):
        spec = ",".join(f"{k}={v}" for k, v in spec.items())
    sizes = parse_mesh_spec(spec)
    devices = list(jax.devices() if devices is None else devices)
    n = sizes["data"] * sizes["model"]
    if n > len(devices):
        raise ValueError(
            f"mesh={spec!r} needs {n} devices, {len(devices)} available ({jax.default_backend()}); on CPU set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={n} (or --cpu-devices {n}) before JAX starts"
        )
    if n < len(devices) and jax.process_count() > 1:
        raise ValueError(
            f"mesh={spec!r} covers {n} of {len(devices)} devices; a multi-process mesh must use all of them"
        )
    grid = np.array(devices[:n], dtype=object).reshape(sizes["data"], sizes["model"])
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def mesh_size(mesh: Mesh, axis: str) -> int:
    return int(dict(mesh.shape).get(axis, 1))


def initialize_distributed(
    coordinator_address: str, num_processes: int, process_id: int, local_device_count: int | None = None
) -> None:
    """`jax.distributed.initialize` for multi-host runs (call before any other JAX work).

    On CPU, `local_device_count` virtual devices per process (`jax_num_cpu_devices`); the CPU
    collectives are gloo's (jax ≥ 0.5 default). On GPU/TPU clusters leave it None; there
    `jax.distributed.initialize()` without arguments may also detect the cluster itself."""
    if local_device_count is not None:
        jax.config.update("jax_num_cpu_devices", int(local_device_count))
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=int(num_processes), process_id=int(process_id)
    )


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


def partition_spec(
    axes: Sequence[str | None],
    shape: Sequence[int],
    mesh,
    units: Mapping[str, int] | None = None,
    rules: Iterable[tuple[str, str]] = RULES,
) -> P:
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
    return (
        ("talker/code_predictor/", {"heads": cp.head_dim, "kv_heads": cp.head_dim}),
        ("talker/", {"heads": t.head_dim, "kv_heads": t.head_dim}),
    )


def codec_units(codec_cfg) -> Units:
    """Head sizes of a `Qwen3TTSTokenizerV2Config`'s transformers."""
    d, e = codec_cfg.decoder, codec_cfg.encoder
    return (
        ("decoder/", {"heads": d.head_dim, "kv_heads": d.head_dim}),
        ("encoder/", {"heads": e.head_dim, "kv_heads": e.head_dim}),
    )


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


@functools.lru_cache(maxsize=8)  # bounded: one jitted identity per mesh in use
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


def abstract(a: jax.Array) -> jax.ShapeDtypeStruct:
    """An array's type, for lowering a program without running anything on the array (ahead of
    time, or on a compiler thread while the array is donated meanwhile). Its sharding only if
    committed: an uncommitted array (one device) lowers without one, and the program must be
    the one a call with the array itself would compile."""
    return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding if a.committed else None, weak_type=a.weak_type)


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
# Placement: the one field every path carries
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where arrays live: one device (`mesh=None`, the trivial placement: every method is the
    identity or a plain transfer) or a ("data", "model") mesh, through the axis table above.

    Hashable, so it is part of a jitted function's static key (`generate.FrameSampler`); the
    generation code calls `constrain`/`put`/`fetch` unconditionally and never asks which case
    it is in."""

    mesh: Mesh | None = None

    def __post_init__(self):
        if self.mesh is not None:
            object.__setattr__(self, "mesh", make_mesh(self.mesh))

    @property
    def data(self) -> int:
        """Rows a batch must be a multiple of to split evenly (1 on one device)."""
        return 1 if self.mesh is None else mesh_size(self.mesh, "data")

    def rows(self, n: int) -> int:
        """`n` rounded up to a multiple of the data axis."""
        return -(-n // self.data) * self.data

    def constrain(self, tree, prefix: str):
        """Pin every leaf to its table sharding (inside jit); the identity on one device."""
        return tree if self.mesh is None else constrain(tree, self.mesh, prefix)

    def put(self, tree, prefix: str):
        """Host values (the same on every process) onto the devices with their table shardings."""
        if self.mesh is None:
            return jax.device_put(tree)
        return place(tree, self.mesh, prefix)

    def fetch(self, tree):
        """Device arrays back to host numpy (all-gathered first when split over processes)."""
        return jax.tree.map(fetch, tree) if self.mesh is not None else jax.device_get(tree)

    def model_params(self, params: dict, cfg) -> dict:
        """A model param tree placed (one device: as it is)."""
        return params if self.mesh is None else place_model_params(params, cfg, self.mesh)

    def codec_params(self, params: dict, codec_cfg) -> dict:
        return params if self.mesh is None else place_codec_params(params, codec_cfg, self.mesh)

    def loader(self, units: Units = ()):
        """For `weights.load_tree(shardings=...)`: each process reads only its slices (None on one device)."""
        return None if self.mesh is None else loader_shardings(self.mesh, units)
