"""Walking jaxprs in tests: every equation, sub-jaxprs (jit, scan, while, cond, custom_jvp,
...) included."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def _sub_jaxprs(value: Any) -> Iterator[Any]:
    """Jaxprs inside one equation parameter: a Jaxpr, a ClosedJaxpr, or sequences of them."""
    if hasattr(value, "eqns"):  # Jaxpr
        yield value
    elif hasattr(getattr(value, "jaxpr", None), "eqns"):  # ClosedJaxpr
        yield value.jaxpr
    elif isinstance(value, (tuple, list)):  # cond branches, ...
        for item in value:
            yield from _sub_jaxprs(item)


def equations(jaxpr: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[Any, tuple[str, ...]]]:
    """Every equation of ``jaxpr`` and of the jaxprs in its equations' parameters, with the
    chain of ``primitive.param`` names that leads to it."""
    for eqn in jaxpr.eqns:
        yield eqn, path
        for key, value in eqn.params.items():
            for sub in _sub_jaxprs(value):
                yield from equations(sub, (*path, f"{eqn.primitive.name}.{key}"))
