"""1-D convolutions with PyTorch weight layouts, and the codec's causal padding rules.

Mirrors `torch.nn.Conv1d` / `torch.nn.ConvTranspose1d` (weights `(out, in/groups, k)` and
`(in, out, k)`, exactly as in the checkpoint: no transpose at load) and the causal wrappers
`Qwen3TTSTokenizerV2CausalConvNet` / `Qwen3TTSTokenizerV2CausalTransConvNet` (and Mimi's causal
`MimiConv1d`, whose padding is the same rule with an optional replicate mode).

Activations are channels-last `(b, t, c)` ("NWC"): on XLA:CPU it measured never slower than NCW,
and it is the layout the ConvNeXt / transformer linears want (figures: benchmarks/RESULTS.md,
"Design measurements").

Kernel layout: params hold torch's layout (`OIH`, as the checkpoint). XLA:CPU re-lays an `OIH`
kernel out on every call, which is noise for a long one-shot decode but dominates short inputs
(streaming steps; RESULTS.md, "Design measurements"). So every conv module takes `kernel_layout="HIO"` for weights
converted once by `to_hio` /
`transposed_to_hio` (the streaming decoder does this at construction); "OIH" (default) uses the
checkpoint tensors as they are.

A transposed conv is computed in polyphase form: with `m = ceil(k / s)`, output block t (s
samples) = Σ_j x[t-j] · W[:, :, j·s : (j+1)·s], i.e. an ordinary causal conv of kernel m to s·out
channels followed by a free reshape. This skips the (s-1)/s zeros an `lhs_dilation` conv would
multiply, and gives exactly the first `L·s` samples that `CausalTransConvNet` keeps (it trims
`k - s` from the right). It is also what makes a transposed conv streamable: its state is just
the last m-1 input frames, like any causal conv.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from qwen3tts_jax.nn.linear import precision
from qwen3tts_jax.nn.params import existing_param
from qwen3tts_jax.typing import Array, Float, HostArray

__all__ = [
    "Conv1d",
    "ConvTranspose1d",
    "CausalConv1d",
    "CausalConvTranspose1d",
    "causal_padding",
    "conv1d",
    "conv_transpose1d",
    "effective_kernel",
    "polyphase_kernel",
    "to_hio",
    "transposed_to_hio",
]


def effective_kernel(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size - 1) * dilation + 1


def causal_padding(length: int, kernel_size: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """(left, right) zero padding of `CausalConvNet` / causal `MimiConv1d` for an input of `length`.

    Left: `k_eff - stride`. Right: the extra padding that makes the output `ceil(length / stride)`
    frames (0 when stride is 1).
    """
    k = effective_kernel(kernel_size, dilation)
    left = k - stride
    n_frames = math.ceil((length - k + left) / stride + 1)
    ideal = (n_frames - 1) * stride + (k - left)
    return left, ideal - length


def _cast(w, dtype):
    return w if w is None else w.astype(dtype)


def conv1d(
    x: Float[Array, "b t i"],
    weight: Float[HostArray, "_ _ _"],  # (o, i/groups, k), or "HIO" (k, i/groups, o)
    bias: Float[HostArray, " o"] | None = None,
    *,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    padding: tuple[int, int] = (0, 0),
    kernel_layout: str = "OIH",
) -> Float[Array, "b t2 o"]:
    """`torch.nn.functional.conv1d` on channels-last input; `weight` is torch's `(o, i/g, k)`
    ("OIH") or `to_hio(weight)` = `(k, i/g, o)` ("HIO")."""
    weight, bias = _cast(weight, x.dtype), _cast(bias, x.dtype)
    k = weight.shape[2] if kernel_layout == "OIH" else weight.shape[0]
    if k == 1 and groups == 1 and stride == 1 and padding == (0, 0):  # pointwise: a plain matmul
        if kernel_layout == "OIH":
            y = jnp.einsum("bti,oi->bto", x, weight[:, :, 0], precision=precision(x.dtype))
        else:
            y = jnp.einsum("bti,io->bto", x, weight[0], precision=precision(x.dtype))
    else:
        # precision: fp32 stays fp32 on GPUs too (their default runs fp32 convs as TF32).
        y = jax.lax.conv_general_dilated(
            x,
            weight,
            window_strides=(stride,),
            padding=[padding],
            rhs_dilation=(dilation,),
            feature_group_count=groups,
            dimension_numbers=("NHC", kernel_layout, "NHC"),
            precision=precision(x.dtype),
        )
    return y if bias is None else y + bias


def to_hio(weight: Float[HostArray, "o i k"]) -> Float[Array, "k i o"]:
    """A torch Conv1d weight in the kernel layout XLA:CPU wants (see the module docstring)."""
    return jnp.transpose(weight, (2, 1, 0))


def transposed_to_hio(weight: Float[HostArray, "i o k"], stride: int) -> Float[Array, "m i so"]:
    """A torch ConvTranspose1d weight as the HIO kernel of its polyphase causal conv."""
    return to_hio(polyphase_kernel(weight, stride))


def polyphase_kernel(weight: Float[HostArray, "i o k"], stride: int) -> Float[Array, "so i m"]:
    """Rearrange a ConvTranspose1d weight `(in, out, k)` into a causal conv weight
    `(stride·out, in, m)`, m = ceil(k / stride), output channel index `r·out + o` (r = phase)."""
    i, o, k = weight.shape
    m = -(-k // stride)
    w = jnp.pad(weight, ((0, 0), (0, 0), (0, m * stride - k)))  # i o m·s
    w = w.reshape(i, o, m, stride)  # tap j·s + r -> (j, r)
    w = jnp.transpose(w, (3, 1, 0, 2)).reshape(stride * o, i, m)  # (r, o) i j
    return w[:, :, ::-1]  # conv taps run oldest → newest; tap j multiplies x[t - j]


def conv_transpose1d(
    x: Float[Array, "b t i"],
    weight: Float[HostArray, "_ _ _"],  # (i, o, k), or "HIO" (ceil(k/stride), i, stride·o)
    bias: Float[HostArray, " o"] | None = None,
    *,
    stride: int,
    history: Float[Array, "b h i"] | None = None,
    kernel_layout: str = "OIH",
) -> Float[Array, "b ts o"]:
    """The first `t·stride` samples of `torch.nn.functional.conv_transpose1d` (no padding), i.e.
    `CausalTransConvNet` (right trim `k - stride`). `history` (the previous m-1 input frames,
    m = ceil(k/stride)) replaces the implicit zeros before the first frame when streaming.
    `weight` is torch's `(i, o, k)` ("OIH") or `transposed_to_hio(weight, stride)` ("HIO")."""
    weight, bias = _cast(weight, x.dtype), _cast(bias, x.dtype)
    b, t, _ = x.shape
    w = polyphase_kernel(weight, stride) if kernel_layout == "OIH" else weight
    m = w.shape[-1] if kernel_layout == "OIH" else w.shape[0]
    out = (w.shape[0] if kernel_layout == "OIH" else w.shape[-1]) // stride
    if history is None:
        y = conv1d(x, w, padding=(m - 1, 0), kernel_layout=kernel_layout)
    else:
        y = conv1d(jnp.concatenate([history.astype(x.dtype), x], axis=1), w, kernel_layout=kernel_layout)
    y = y.reshape(b, t * stride, out)  # (t, r, o) -> t·s + r
    return y if bias is None else y + bias


class Conv1d(nn.Module):
    """`torch.nn.Conv1d(in, features, kernel_size, stride, dilation=, groups=, bias=)` applied to
    already padded channels-last input. Params `weight (features, in/groups, k)`, `bias`."""

    features: int
    kernel_size: int
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    use_bias: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_layout: str = "OIH"  # "HIO": weight converted by `to_hio`

    @nn.compact
    def __call__(self, x: Float[Array, "b t i"], padding: tuple[int, int] = (0, 0)) -> Float[Array, "b t2 o"]:
        cin = x.shape[-1]
        if self.kernel_layout == "OIH":
            shape, axes = (self.features, cin // self.groups, self.kernel_size), ((1, 2), 0)
        else:
            shape, axes = (self.kernel_size, cin // self.groups, self.features), ((0, 1), 2)
        weight = existing_param(
            self, "weight", nn.initializers.lecun_normal(in_axis=axes[0], out_axis=axes[1]), shape, self.param_dtype
        )
        bias = (
            existing_param(self, "bias", nn.initializers.zeros, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        return conv1d(
            x.astype(self.dtype),
            weight,
            bias,
            stride=self.stride,
            dilation=self.dilation,
            groups=self.groups,
            padding=padding,
            kernel_layout=self.kernel_layout,
        )


class ConvTranspose1d(nn.Module):
    """`torch.nn.ConvTranspose1d(in, features, kernel_size, stride)` keeping the first `t·stride`
    outputs (see `conv_transpose1d`). Params `weight (in, features, k)`, `bias`."""

    features: int
    kernel_size: int
    stride: int
    use_bias: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_layout: str = "OIH"  # "HIO": weight converted by `transposed_to_hio`

    @nn.compact
    def __call__(
        self, x: Float[Array, "b t i"], history: Float[Array, "b h i"] | None = None
    ) -> Float[Array, "b ts o"]:
        if self.kernel_layout == "OIH":
            shape, axes = (x.shape[-1], self.features, self.kernel_size), ((0, 2), 1)
        else:
            m = -(-self.kernel_size // self.stride)
            shape, axes = (m, x.shape[-1], self.stride * self.features), ((0, 1), 2)
        weight = existing_param(
            self, "weight", nn.initializers.lecun_normal(in_axis=axes[0], out_axis=axes[1]), shape, self.param_dtype
        )
        bias = (
            existing_param(self, "bias", nn.initializers.zeros, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        return conv_transpose1d(
            x.astype(self.dtype), weight, bias, stride=self.stride, history=history, kernel_layout=self.kernel_layout
        )


class CausalConv1d(nn.Module):
    """`Qwen3TTSTokenizerV2CausalConvNet` (and causal `MimiConv1d`): left pad `k_eff - stride`,
    right pad to `ceil(t / stride)` output frames, then the conv (submodule `conv`, as the
    checkpoint's `.conv.weight`). `pad_mode` "constant" pads zeros, "replicate" repeats the edge
    samples (Mimi's downsample conv).

    `history` (streaming, stride 1 only): the previous `k_eff - 1` input frames, used instead of
    the left padding.
    """

    features: int
    kernel_size: int
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    use_bias: bool = True
    pad_mode: str = "constant"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_layout: str = "OIH"

    @property
    def context(self) -> int:
        """Input frames of left context a streaming step must carry (stride 1)."""
        return effective_kernel(self.kernel_size, self.dilation) - self.stride

    @nn.compact
    def __call__(
        self, x: Float[Array, "b t i"], history: Float[Array, "b h i"] | None = None
    ) -> Float[Array, "b t2 o"]:
        conv = Conv1d(
            self.features,
            self.kernel_size,
            self.stride,
            self.dilation,
            self.groups,
            self.use_bias,
            self.dtype,
            self.param_dtype,
            self.kernel_layout,
            name="conv",
        )
        if history is not None:
            if self.stride != 1:
                raise ValueError(f"CausalConv1d: streaming history needs stride 1, got stride={self.stride}")
            return conv(jnp.concatenate([history.astype(x.dtype), x], axis=1))
        left, right = causal_padding(x.shape[1], self.kernel_size, self.stride, self.dilation)
        if self.pad_mode == "constant":
            return conv(x, padding=(left, right))
        if self.pad_mode == "replicate":
            return conv(jnp.pad(x, ((0, 0), (left, right), (0, 0)), mode="edge"))
        raise ValueError(f"CausalConv1d: pad_mode={self.pad_mode!r} is not supported ('constant' or 'replicate')")


class CausalConvTranspose1d(nn.Module):
    """`Qwen3TTSTokenizerV2CausalTransConvNet`: ConvTranspose1d(k, stride) with the last `k - stride`
    samples dropped, so `t` frames give `t·stride` samples (submodule `conv`).

    `history` (streaming): the previous `ceil(k / stride) - 1` input frames."""

    features: int
    kernel_size: int
    stride: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_layout: str = "OIH"

    @property
    def context(self) -> int:
        return -(-self.kernel_size // self.stride) - 1

    @nn.compact
    def __call__(
        self, x: Float[Array, "b t i"], history: Float[Array, "b h i"] | None = None
    ) -> Float[Array, "b ts o"]:
        conv = ConvTranspose1d(
            self.features,
            self.kernel_size,
            self.stride,
            True,
            self.dtype,
            self.param_dtype,
            self.kernel_layout,
            name="conv",
        )
        return conv(x, history)
