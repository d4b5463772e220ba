"""safetensors → Flax parameter pytrees: the declarative key tables, shape checks and coverage.

Mirrors the state_dict layout of `Qwen3TTSForConditionalGeneration` (talker + code predictor +
speaker encoder in `model.safetensors`). The codec's table lives in `codec/weights.py` and uses
the same machinery.

Conventions:
* A param path is the checkpoint key with `.` → `/` and ModuleList indices folded into the module
  name (`layers.3.mlp` → `layers_3/mlp`), which is exactly how our linen modules name their
  submodules. An `Entry` may override the path or transform the tensor; none do today: Linear
  weights stay `(out, in)`, Conv1d `(out, in/groups, k)`, ConvTranspose1d `(in, out, k)`.
* The table is expanded from the config into concrete keys, so a load checks both directions: every
  expected key must be present with its exact shape (missing / wrong-shape → error naming the key and
  both shapes), and every key in the file must be used or matched by an explicit ignore pattern
  (unexpected → error naming it). Every target is filled exactly once by construction.
* Reading is lazy (`safe_open`), no torch at run time; `model.safetensors.index.json` shards are
  followed; a truncated or corrupt file raises an error naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from qwen3tts_jax.config import Qwen3TTSConfig, SpeakerEncoderConfig, TalkerConfig, TransformerConfig

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A checkpoint does not match its key table; the message names the file/key and shapes."""


# --------------------------------------------------------------------------------------------
# Table entries
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Entry:
    """One checkpoint tensor: its key, expected shape, and where it goes.

    `path=None` uses the naming convention (`flax_path`). `keep_fp32` keeps a tensor in fp32 even
    when the load casts (RVQ codebook accumulators, whose division the reference does in fp32).
    """

    key: str
    shape: tuple[int, ...]
    path: tuple[str, ...] | None = None
    transform: Callable[[Any], Any] | None = None
    keep_fp32: bool = False

    @property
    def target(self) -> tuple[str, ...]:
        return self.path if self.path is not None else flax_path(self.key)


def flax_path(key: str) -> tuple[str, ...]:
    """`talker.model.layers.3.mlp.up_proj.weight` → `('talker','model','layers_3','mlp','up_proj','weight')`."""
    return tuple(re.sub(r"\.(\d+)(?=\.|$)", r"_\1", key).split("."))


def linear(prefix: str, out: int, inp: int, bias: bool = False) -> list[Entry]:
    entries = [Entry(f"{prefix}.weight", (out, inp))]
    return entries + [Entry(f"{prefix}.bias", (out,))] if bias else entries


def vector(key: str, n: int) -> Entry:
    return Entry(key, (n,))


def conv1d(prefix: str, out: int, inp: int, k: int, bias: bool = True, groups: int = 1) -> list[Entry]:
    """A torch Conv1d: weight `(out, in/groups, k)`."""
    entries = [Entry(f"{prefix}.weight", (out, inp // groups, k))]
    return entries + [Entry(f"{prefix}.bias", (out,))] if bias else entries


def conv_transpose1d(prefix: str, inp: int, out: int, k: int, bias: bool = True) -> list[Entry]:
    """A torch ConvTranspose1d: weight `(in, out, k)`."""
    entries = [Entry(f"{prefix}.weight", (inp, out, k))]
    return entries + [Entry(f"{prefix}.bias", (out,))] if bias else entries


# --------------------------------------------------------------------------------------------
# The model tables (talker, code predictor, speaker encoder)
# --------------------------------------------------------------------------------------------


def decoder_layer_entries(prefix: str, cfg: TransformerConfig) -> list[Entry]:
    """`Qwen3TTSTalkerDecoderLayer` / `Qwen3TTSDecoderLayer` tensors."""
    d, hx, kx = cfg.hidden_size, cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    b = cfg.attention_bias
    a = f"{prefix}.self_attn"
    return [
        *linear(f"{a}.q_proj", hx, d, b),
        *linear(f"{a}.k_proj", kx, d, b),
        *linear(f"{a}.v_proj", kx, d, b),
        *linear(f"{a}.o_proj", d, hx, b),
        vector(f"{a}.q_norm.weight", cfg.head_dim),
        vector(f"{a}.k_norm.weight", cfg.head_dim),
        *linear(f"{prefix}.mlp.gate_proj", cfg.intermediate_size, d),
        *linear(f"{prefix}.mlp.up_proj", cfg.intermediate_size, d),
        *linear(f"{prefix}.mlp.down_proj", d, cfg.intermediate_size),
        vector(f"{prefix}.input_layernorm.weight", d),
        vector(f"{prefix}.post_attention_layernorm.weight", d),
    ]


def stack_entries(prefix: str, cfg: TransformerConfig) -> list[Entry]:
    layers = [e for i in range(cfg.num_hidden_layers) for e in decoder_layer_entries(f"{prefix}.layers.{i}", cfg)]
    return layers + [vector(f"{prefix}.norm.weight", cfg.hidden_size)]


def talker_entries(cfg: TalkerConfig) -> list[Entry]:
    t, cp = cfg.transformer, cfg.code_predictor
    d, e = t.hidden_size, cfg.text_hidden_size
    entries = [
        Entry("talker.model.codec_embedding.weight", (cfg.vocab_size, d)),
        Entry("talker.model.text_embedding.weight", (cfg.text_vocab_size, e)),
        *stack_entries("talker.model", t),
        *linear("talker.text_projection.linear_fc1", e, e, bias=True),
        *linear("talker.text_projection.linear_fc2", d, e, bias=True),
        *linear("talker.codec_head", cfg.vocab_size, d),
        *stack_entries("talker.code_predictor.model", cp.transformer),
    ]
    for j in range(cp.num_code_groups - 1):
        entries.append(Entry(f"talker.code_predictor.model.codec_embedding.{j}.weight", (cp.vocab_size, d)))
        entries += linear(f"talker.code_predictor.lm_head.{j}", cp.vocab_size, cp.transformer.hidden_size)
    if cp.transformer.hidden_size != d:
        entries += linear("talker.code_predictor.small_to_mtp_projection", cp.transformer.hidden_size, d, bias=True)
    return entries


def speaker_encoder_entries(cfg: SpeakerEncoderConfig) -> list[Entry]:
    """`Qwen3TTSSpeakerEncoder` (ECAPA-TDNN without BatchNorm)."""
    p = "speaker_encoder"
    ch, ks = cfg.enc_channels, cfg.enc_kernel_sizes
    entries = conv1d(f"{p}.blocks.0.conv", ch[0], cfg.mel_dim, ks[0])
    for i in range(1, len(ch) - 1):
        b, c = f"{p}.blocks.{i}", ch[i]
        width = c // cfg.enc_res2net_scale
        entries += conv1d(f"{b}.tdnn1.conv", c, ch[i - 1], 1)
        for k in range(cfg.enc_res2net_scale - 1):
            entries += conv1d(f"{b}.res2net_block.blocks.{k}.conv", width, width, ks[i])
        entries += conv1d(f"{b}.tdnn2.conv", c, c, 1)
        entries += conv1d(f"{b}.se_block.conv1", cfg.enc_se_channels, c, 1)
        entries += conv1d(f"{b}.se_block.conv2", c, cfg.enc_se_channels, 1)
    # mfa takes the concatenated SE-Res2Net outputs; the reference declares its input as ch[-1]
    entries += conv1d(f"{p}.mfa.conv", ch[-1], ch[-1], ks[-1])
    entries += conv1d(f"{p}.asp.tdnn.conv", cfg.enc_attention_channels, ch[-1] * 3, 1)
    entries += conv1d(f"{p}.asp.conv", ch[-1], cfg.enc_attention_channels, 1)
    entries += conv1d(f"{p}.fc", cfg.enc_dim, ch[-1] * 2, 1)
    return entries


def model_entries(cfg: Qwen3TTSConfig) -> list[Entry]:
    """Every tensor of a model folder's `model.safetensors` (talker, + speaker encoder for Base)."""
    entries = talker_entries(cfg.talker)
    if cfg.speaker_encoder is not None:
        entries += speaker_encoder_entries(cfg.speaker_encoder)
    return entries


# Keys a released/saved model file may hold that we deliberately do not load.
MODEL_IGNORED: tuple[str, ...] = (
    r".*\.rotary_emb\.inv_freq",  # non-persistent in the reference; recomputed from the config
)


# --------------------------------------------------------------------------------------------
# Reading safetensors
# --------------------------------------------------------------------------------------------


class Checkpoint:
    """The tensors of one safetensors checkpoint (single file or index + shards), read lazily."""

    def __init__(self, files: Mapping[str, Path]):
        self.files = dict(files)  # key -> file holding it
        # numpy-framework handles: tensors come back as host arrays and go to the device once,
        # with `jax.device_put` (the "flax" framework's `jnp.array` compiles one tiny program per
        # distinct shape — about 60 of them, seconds, for a 0.6B model).
        self._handles: dict[Path, Any] = {}
        self.bytes_read = 0  # tensor bytes read by `get_sharded` (what this process loaded)

    @staticmethod
    def open(path: str | Path) -> Checkpoint:
        """`path` is a folder (model.safetensors or its index), a .safetensors file, or an index."""
        path = Path(path)
        if path.is_dir():
            index, single = path / SAFETENSORS_INDEX, path / SAFETENSORS
            path = index if index.is_file() else single
        if not path.is_file():
            raise FileNotFoundError(f"{path}: checkpoint file not found")
        if path.name.endswith(".index.json"):
            try:
                weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise CheckpointError(f"{path}: not a valid safetensors index ({err!r})") from err
            files = {key: path.parent / name for key, name in weight_map.items()}
            for f in sorted(set(files.values())):
                if not f.is_file():
                    raise FileNotFoundError(f"{f}: shard named in {path} not found")
        else:
            files = {key: path for key in _header_keys(path)}
        ckpt = Checkpoint(files)
        for f in sorted(set(files.values())):
            ckpt._handle(f)  # validates every shard's header now, not mid-load
        return ckpt

    def _handle(self, file: Path):
        if file not in self._handles:
            from safetensors import safe_open

            try:
                self._handles[file] = safe_open(str(file), framework="numpy")
            except Exception as err:  # SafetensorError and OSError alike: name the file
                raise CheckpointError(f"{file}: unreadable safetensors file (truncated or corrupt?): {err}") from err
        return self._handles[file]

    def keys(self) -> list[str]:
        return sorted(self.files)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._handle(self.files[key]).get_slice(key).get_shape())

    def dtype(self, key: str) -> str:
        return self._handle(self.files[key]).get_slice(key).get_dtype()

    def get(self, key: str) -> np.ndarray:
        """The whole tensor as a host (numpy) array in the file's dtype."""
        file = self.files[key]
        try:
            return self._handle(file).get_tensor(key)
        except Exception as err:
            raise CheckpointError(f"{file}: cannot read tensor {key!r}: {err}") from err

    def get_sharded(self, key: str, sharding: jax.sharding.Sharding, dtype: Any = None) -> jax.Array:
        """`key` as a global array laid out by `sharding`, reading from the file only the slices
        this process's devices hold (`get_slice`; a slice shared by several local devices is
        read once), cast to `dtype` on the host."""
        file = self.files[key]
        tensor = self._handle(file).get_slice(key)
        read: dict = {}

        def slice_of(index: tuple) -> np.ndarray:
            at = tuple((s.start, s.stop, s.step) for s in index)
            if at not in read:
                try:
                    x = np.asarray(tensor[index] if index else tensor[:])
                except Exception as err:
                    raise CheckpointError(f"{file}: cannot read slice {index} of tensor {key!r}: {err}") from err
                self.bytes_read += x.nbytes
                read[at] = x if dtype is None else x.astype(dtype)
            return read[at]

        return jax.make_array_from_callback(self.shape(key), sharding, slice_of)


def _header_keys(path: Path) -> list[str]:
    """Keys of a .safetensors file, from its header; a damaged header names the file."""
    size = path.stat().st_size
    if size < 8:
        raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes)")
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        if n <= 0 or 8 + n > size:
            raise CheckpointError(
                f"{path}: truncated or corrupt safetensors header (header length {n}, file size {size})"
            )
        try:
            header = json.loads(fh.read(n))
        except ValueError as err:
            raise CheckpointError(f"{path}: corrupt safetensors header ({err})") from err
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise CheckpointError(f"{path}: truncated safetensors file: data ends at {8 + n + end} bytes, file has {size}")
    return [k for k in header if k != "__metadata__"]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KeyReport:
    """What a table says about a checkpoint's keys (used by `inspect` and by `load`)."""

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    ignored: tuple[str, ...]
    wrong_shape: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]  # key, expected, found

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    def error(self, source: str) -> str:
        lines = [f"{source}: checkpoint does not match the model's key table"]
        lines += [f"  missing key {k}" for k in self.missing[:20]]
        lines += [f"  ... and {len(self.missing) - 20} more missing"] if len(self.missing) > 20 else []
        lines += [f"  unexpected key {k}" for k in self.unexpected[:20]]
        lines += [f"  ... and {len(self.unexpected) - 20} more unexpected"] if len(self.unexpected) > 20 else []
        lines += [f"  wrong shape for {k}: expected {e}, found {f}" for k, e, f in self.wrong_shape]
        return "\n".join(lines)


def check_keys(entries: Iterable[Entry], found: Mapping[str, tuple[int, ...]], ignore: Iterable[str] = ()) -> KeyReport:
    table = {}
    for e in entries:
        if e.key in table:
            raise AssertionError(f"key table lists {e.key!r} twice")
        table[e.key] = e
    patterns = [re.compile(p) for p in ignore]
    ignored = tuple(sorted(k for k in found if k not in table and any(p.fullmatch(k) for p in patterns)))
    return KeyReport(
        missing=tuple(sorted(k for k in table if k not in found)),
        unexpected=tuple(sorted(k for k in found if k not in table and k not in set(ignored))),
        ignored=ignored,
        wrong_shape=tuple(
            (k, table[k].shape, tuple(found[k]))
            for k in sorted(table)
            if k in found and tuple(found[k]) != table[k].shape
        ),
    )


def load_tree(
    ckpt: Checkpoint,
    entries: list[Entry],
    ignore: Iterable[str] = (),
    dtype: Any = None,
    source: str = "checkpoint",
    shardings: Callable[[tuple[str, ...], tuple[int, ...]], Any] | None = None,
) -> dict:
    """Load every entry into a nested dict; cast floats to `dtype` when given.

    `shardings(target path, shape)` → a `jax.sharding.Sharding` (or None: load as usual) places
    each tensor as a global array, each process reading only its devices' slices from the file
    (`Checkpoint.get_sharded`; see `qwen3tts_jax.sharding.loader_shardings`). An entry with a
    `transform` is read whole, transformed, then placed."""
    report = check_keys(entries, {k: ckpt.shape(k) for k in ckpt.keys()}, ignore)
    if not report.ok:
        raise CheckpointError(report.error(source))
    tree: dict = {}
    targets = set()
    for e in entries:
        if e.target in targets:
            raise AssertionError(f"two table entries fill {'/'.join(e.target)}")
        targets.add(e.target)
        sharding = shardings(e.target, e.shape) if shardings is not None else None
        if sharding is not None and e.transform is None:
            floating = ckpt.dtype(e.key).upper() in ("F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2")
            want = (jnp.float32 if e.keep_fp32 else dtype) if floating else None
            _set(tree, e.target, ckpt.get_sharded(e.key, sharding, want))
            continue
        value = ckpt.get(e.key)
        if e.transform is not None:
            value = e.transform(value)
        value = np.asarray(value)
        if jnp.issubdtype(value.dtype, jnp.floating):
            want = jnp.float32 if e.keep_fp32 else dtype
            if want is not None and value.dtype != want:
                value = value.astype(want)  # on the host: no per-shape device program
        if sharding is not None:
            value = jax.make_array_from_callback(value.shape, sharding, lambda index, host=value: host[index])
        else:
            value = jax.device_put(value)
        _set(tree, e.target, value)
    return tree


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def stack_layers(tree: dict, num_layers: int, name: str = "layers") -> dict:
    """`{layers_0: p0, …}` → `{layers: stacked}` (the layout of an `nn.scan`ned stack)."""
    tree = dict(tree)
    per_layer = [tree.pop(f"{name}_{i}") for i in range(num_layers)]
    tree[name] = jax.tree.map(lambda *xs: jnp.stack(xs), *per_layer)
    return tree


def unstack_layers(tree: dict, name: str = "layers") -> dict:
    """Inverse of `stack_layers`."""
    tree = dict(tree)
    stacked = tree.pop(name)
    n = jax.tree.leaves(stacked)[0].shape[0]
    for i in range(n):
        tree[f"{name}_{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
    return tree


def layout_model_params(params: dict, cfg: Qwen3TTSConfig, scan_layers: bool) -> dict:
    """Arrange loaded model params for the policy: per-layer (unrolled) or stacked (scanned)."""
    if not scan_layers:
        return params
    talker = dict(params["talker"])
    talker["model"] = stack_layers(talker["model"], cfg.talker.transformer.num_hidden_layers)
    cp = dict(talker["code_predictor"])
    cp["model"] = stack_layers(cp["model"], cfg.talker.code_predictor.transformer.num_hidden_layers)
    talker["code_predictor"] = cp
    return {**params, "talker": talker}


def load_model_params(
    model_dir: str | Path,
    cfg: Qwen3TTSConfig | None = None,
    dtype: Any = None,
    scan_layers: bool = False,
    shardings: Callable[[tuple[str, ...], tuple[int, ...]], Any] | None = None,
) -> dict:
    """Params of a model folder: `{"talker": …, "speaker_encoder": …}` (Base only).
    `shardings`: see `load_tree` (stacked layers keep their per-layer split)."""
    model_dir = Path(model_dir)
    cfg = cfg or Qwen3TTSConfig.from_model_dir(model_dir)
    ckpt = Checkpoint.open(model_dir)
    tree = load_tree(ckpt, model_entries(cfg), MODEL_IGNORED, dtype, source=str(model_dir), shardings=shardings)
    return layout_model_params(tree, cfg, scan_layers)


def count(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
