"""Calling the identical layers of an unrolled stack through one traced function.

An unrolled stack (`Policy.scan_layers=False`, the CPU layout) calls N layers of the same
definition with different weights. Traced inline, each layer is traced (and lowered) again: for
the 0.6B talker, predictor and codec that was seconds of Python per compiled program, paid again
by every fresh process before its first audio even when XLA's executables come from the
persistent compilation cache. `apply_layer` calls each layer through one `jax.jit` keyed by the
layer's definition, so the layer is traced once and every call site reuses that trace; XLA
inlines the calls, so the compiled program is the unrolled one.

Not used while Flax is initializing parameters or capturing intermediates (the parity helpers
read each layer's output): then the layer runs as an ordinary child module.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax

__all__ = ["apply_layer"]


@functools.partial(jax.jit, static_argnums=0)
def _apply(layer: nn.Module, params, *args):
    return layer.apply({"params": params}, *args)


def apply_layer(parent: nn.Module, layer: nn.Module, *args):
    """`layer(*args)`, where `layer` is a child module of `parent` (defined in `setup`), traced
    once per (layer definition, argument shapes). Array arguments only."""
    if parent.is_initializing() or parent.is_mutable_collection("intermediates"):
        return layer(*args)
    params = parent.variables["params"][layer.name]
    return _apply(layer.clone(parent=None, name=None), params, *args)
