"""Reading a module's existing parameters cheaply at trace time.

Flax's `Module.param` runs `jax.eval_shape` of the initializer on every call, even in `apply`
where the parameter exists, to check its shape: milliseconds per weight at trace time, seconds
for a whole model (benchmarks/RESULTS.md, "Design measurements") — time a fresh process pays before its first audio
even with the persistent
compilation cache. Every module of this package reads its weights through `existing_param`.
"""

from __future__ import annotations

import flax.linen as nn

from qwen3tts_jax.typing import HostArray

__all__ = ["existing_param"]


def existing_param(module: nn.Module, name: str, init, shape: tuple[int, ...], dtype) -> HostArray:
    """`module.param(name, init, shape, dtype)` without the initializer's `eval_shape` when the
    param already exists (apply); the shape is still checked, with an error naming the param."""
    if module.has_variable("params", name):
        value = module.get_variable("params", name)
        if tuple(value.shape) != tuple(shape):
            where = "/".join((*module.scope.path, name))
            raise ValueError(f"param {where}: expected shape {tuple(shape)}, got {tuple(value.shape)}")
        return value
    return module.param(name, init, shape, dtype)
