"""Array type aliases and the one dimension legend used in every signature.

Legend (the same letters appear in einsum strings):
    b  batch                      t  time / query positions     s  key/value (cache) slots
    d  model width (hidden)       e  text embedding width       f  MLP (feed-forward) width
    h  query heads                k  key/value heads            g  query heads per kv head (h = k·g)
    x  head dim                   v  vocabulary                 q  codebooks (code groups)
    c  channels (conv)            n  audio samples              m  mel bins
    l  layers (stacked params)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from jaxtyping import Array, Bool, Float, Int

PyTree = Any
Params = dict[str, Any]
PRNGKey = jax.Array
# Batches built on the host (numpy) and used on the device (jax.Array): prompt tracks, sampling
# values, training batches.
HostArray = Array | np.ndarray

__all__ = ["Array", "Bool", "Float", "Int", "PyTree", "Params", "PRNGKey", "HostArray", "pytree_dataclass"]


def pytree_dataclass(cls: type) -> type:
    """A frozen dataclass registered as a pytree whose fields are its children.

    Unlike `jax.tree_util.register_dataclass`, unflattening bypasses `__init__`: JAX rebuilds
    pytrees with whatever leaves a transformation carries (`tree.map` results, `eval_shape`'s
    ShapeDtypeStructs, shardings), so a runtime type checker (the tests' jaxtyping hook) checks
    the shapes where code constructs one, not where JAX does."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    names = tuple(f.name for f in dataclasses.fields(cls))

    def flatten(obj):
        return [(jax.tree_util.GetAttrKey(n), getattr(obj, n)) for n in names], None

    def unflatten(_, children):
        obj = object.__new__(cls)
        for n, child in zip(names, children, strict=True):
            object.__setattr__(obj, n, child)
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten, unflatten)
    return cls
