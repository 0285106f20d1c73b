"""Search strategies on the shared engine, by name (see ``strategies.base`` for the protocol).

    strategies.NAMES                       # every registered name
    strategies.get("jde")                  # the class
    strategies.build("jde", space, population=400, generations=100, params={"tau": 0.2})

Adding a strategy: a module with a ``Strategy`` subclass, and its class in ``REGISTRY``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jaxattack.strategies.base import NoParams, Strategy
from jaxattack.strategies.differential import DE, JDE, DEBest, DEBin, DECurrentToBest
from jaxattack.strategies.learned_rs import LearnedRS
from jaxattack.strategies.oracle import Oracle
from jaxattack.strategies.sparse_rs import SparseRS

REGISTRY: dict[str, type[Strategy]] = {
    s.name: s for s in (DE, DEBin, DEBest, DECurrentToBest, JDE, SparseRS, LearnedRS, Oracle)
}
NAMES = tuple(REGISTRY)


def get(name: str) -> type[Strategy]:
    """The strategy class registered as ``name``."""
    if name not in REGISTRY:
        raise ValueError(f"strategy must be one of {NAMES}, got {name!r}")
    return REGISTRY[name]


def param_fields(name: str) -> tuple[dataclasses.Field, ...]:
    """The fields of a strategy's ``Params`` (name, type, default, ``metadata["help"]``)."""
    return dataclasses.fields(get(name).Params)


def make_params(name: str, values: Mapping[str, Any] = ()) -> Any:
    """``Params`` of strategy ``name`` from ``values``, checked (one clear error)."""
    cls = get(name).Params
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(dict(values)) - set(known))
    if unknown:
        has = f"its parameters are {', '.join(known)}" if known else "it has no parameters"
        raise ValueError(f"unknown parameter {unknown[0]!r} for strategy {name!r}; {has}")
    return cls(**dict(values))


def build(name: str, space, population: int, generations: int,
          params: Mapping[str, Any] = ()) -> Strategy:
    """An instance of strategy ``name`` for ``space`` with ``params`` over its defaults."""
    return get(name)(space, population, generations, make_params(name, params))


__all__ = ["DE", "JDE", "NAMES", "REGISTRY", "DEBest", "DEBin", "DECurrentToBest",
           "LearnedRS", "NoParams", "Oracle", "SparseRS", "Strategy", "build", "get",
           "make_params", "param_fields"]
