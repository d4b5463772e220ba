"""The runtime checker the test run puts on the package's annotated functions (tests/conftest.py
installs jaxtyping's import hook with it).

It checks every function, method and dataclass `__init__` whose signature names an array type
(`Float[Array, "b t d"]`, `HostArray`, `jax.Array`, ...): with beartype, the types, and with
jaxtyping, that the named axes agree across the arguments and the result. Signatures with
plain Python values only (configs, the public API's keyword arguments) are left to the package's
own validation, whose error messages name the argument and are what the bad-input tests check
(a checker firing first would hide them); so are array functions that validate their own
arguments, marked `@typing.no_type_check` (which jaxtyping's hook honours). PEP 484's numeric
tower is on: an `int` is accepted where a `float` is annotated, as static checkers accept it.
"""

from __future__ import annotations

import re

from beartype import BeartypeConf, beartype

_check = beartype(conf=BeartypeConf(is_pep484_tower=True))
_ARRAY = re.compile(
    r"\b(Float|Int|Bool|Shaped|Num|Real|UInt|Integer|Inexact|Key)\[|\bHostArray\b|\bArray\b|\bndarray\b"
)


def _names_an_array(fn) -> bool:
    notes = getattr(fn, "__annotations__", None) or {}
    return any(_ARRAY.search(note if isinstance(note, str) else repr(note)) for note in notes.values())


def typechecker(fn):
    return _check(fn) if _names_an_array(fn) else fn
