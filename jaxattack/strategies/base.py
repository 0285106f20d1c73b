"""The strategy protocol: pure, key-first search steps for *one* problem.

A strategy is a frozen (hashable) dataclass holding its static settings: the search
``space`` (``codec.PixelSpace``: dims, bounds, the paper's start), the ``population``
(candidates per generation), the budget in ``generations`` after the initial one, and
``params``, an instance of its own frozen ``Params`` dataclass (defaults from the
dataclass, help text in each field's ``metadata["help"]``). The engine vmaps the
methods over slots and jits them; fitness is minimised.

- ``init(key) -> state``: the state of a fresh problem, before anything is evaluated
  (a NamedTuple of arrays).
- ``ask(key, state, generation) -> (candidates [population, dims], pending)``:
  ``generation`` counts the generations evaluated so far, so ``0`` asks for the
  initial population. ``pending`` is anything ``tell`` needs back (or None).
- ``tell(state, candidates, pending, fitness, generation) -> state``.
- ``best(state) -> genes [dims]``: the best candidate so far.

Class attributes: ``name`` (the registry key), ``Params`` and ``min_population``.
A new strategy is one file with such a class plus one line in ``strategies/__init__``;
the shared tests then run on it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax.numpy as jnp

from jaxattack.strategies.codec import PixelSpace


@dataclasses.dataclass(frozen=True)
class NoParams:
    """A strategy without parameters of its own."""


@dataclasses.dataclass(frozen=True)
class Strategy:
    """Base class: holds the static settings and checks them."""

    space: PixelSpace
    population: int
    generations: int
    params: Any = None

    name: ClassVar[str] = "strategy"
    Params: ClassVar[type] = NoParams
    min_population: ClassVar[int] = 1

    def __post_init__(self):
        if self.params is None:
            object.__setattr__(self, "params", self.Params())
        if not isinstance(self.params, self.Params):
            raise TypeError(f"{self.name} takes params of type {self.Params.__name__}, got "
                            f"{type(self.params).__name__}")
        if self.population < self.min_population:
            raise ValueError(f"population must be >= {self.min_population} for {self.name}, "
                             f"got {self.population}")

    @property
    def dims(self) -> int:
        return self.space.dims

    def box(self):
        """The gene bounds ``(lower, upper)`` as jax arrays."""
        lo, hi = self.space.bounds()
        return jnp.asarray(lo), jnp.asarray(hi)

    def paper_start(self, key):
        """The paper's initial population (coordinates uniform, colours N(128, 127))."""
        return self.space.initial(key, self.population)

    def init(self, key):
        raise NotImplementedError

    def ask(self, key, state, generation):
        raise NotImplementedError

    def tell(self, state, candidates, pending, fitness, generation):
        raise NotImplementedError

    def best(self, state):
        raise NotImplementedError
