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

from typing import Any

import jax
from jaxtyping import Array, Bool, Float, Int

PyTree = Any
Params = dict[str, Any]
PRNGKey = jax.Array

__all__ = ["Array", "Bool", "Float", "Int", "PyTree", "Params", "PRNGKey"]
