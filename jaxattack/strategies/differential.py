"""Differential evolution strategies.

- ``de``: DE/rand/1, the paper's search (Su et al. 2019; Storn & Price 1997), no
  crossover unless ``CR`` is set.
- ``de-bin``: DE/rand/1/bin, binomial crossover with rate ``CR`` (Storn & Price 1997).
- ``de-best``: DE/best/1, ``x_best + F (x_r1 - x_r2)`` (Storn & Price 1997).
- ``de-ctb``: DE/current-to-best/1, ``x_i + F (x_best - x_i) + F (x_r1 - x_r2)``
  (Das & Suganthan 2011, "Differential Evolution: A Survey of the State-of-the-Art").
- ``jde``: self-adaptive F and CR per member (Brest et al. 2006, "Self-Adapting Control
  Parameters in Differential Evolution", IEEE TEVC 10(6)): with probability ``tau`` a
  member's F is redrawn from U(``F_low``, ``F_high``) and its CR from U(0, 1); a new
  value survives only with a successful child.

All use the shared DE core (``jaxattack.strategies.de``): distinct indices, out-of-range genes
re-drawn uniformly, and greedy selection (a child replaces its parent only if strictly
better). The initial population is the paper's.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from jaxattack.strategies import de
from jaxattack.strategies.base import Strategy


def _param(default, help_text):
    return dataclasses.field(default=default, metadata={"help": help_text})


def _check(ok: bool, msg: str):
    if not ok:
        raise ValueError(msg)


@dataclasses.dataclass(frozen=True)
class DEParams:
    F: float = _param(0.5, "mutation scale (the paper: 0.5)")
    CR: float | None = _param(None, "binomial crossover rate; None: no crossover (the paper)")

    def __post_init__(self):
        _check(0 < self.F <= 2, f"F must lie in (0, 2], got {self.F}")
        _check(self.CR is None or 0 <= self.CR <= 1,
               f"crossover must be None or in [0, 1], got {self.CR}")


@dataclasses.dataclass(frozen=True)
class DEBinParams(DEParams):
    CR: float | None = _param(0.5, "binomial crossover rate")


def _take_start(state: de.DEState, cands, fitness, generation) -> de.DEState:
    """Greedy selection; the initial population (generation 0) is taken as it is."""
    first = generation == 0
    kept = de.tell(state, cands, fitness)
    return de.DEState(jnp.where(first, cands, kept.population),
                      jnp.where(first, fitness, kept.fitness))


def _empty_population(strategy: Strategy) -> de.DEState:
    return de.DEState(jnp.zeros((strategy.population, strategy.dims), jnp.float32),
                      jnp.full(strategy.population, jnp.inf, jnp.float32))


@dataclasses.dataclass(frozen=True)
class DE(Strategy):
    """DE/rand/1 (``base = "rand"``); subclasses set /best/1, /current-to-best/1, /bin."""

    name: ClassVar[str] = "de"
    Params: ClassVar[type] = DEParams
    min_population: ClassVar[int] = 4
    base: ClassVar[str] = "rand"

    def init(self, key) -> de.DEState:
        return _empty_population(self)

    def ask(self, key, state, generation):
        p = de.DEParams(self.params.F, self.params.CR, self.base)
        trial = de.ask(key, state, *self.box(), p)
        return jnp.where(generation == 0, self.paper_start(key), trial), None

    def tell(self, state, cands, pending, fitness, generation):
        return _take_start(state, cands, fitness, generation)

    def best(self, state):
        return state.population[jnp.argmin(state.fitness)]


@dataclasses.dataclass(frozen=True)
class DEBin(DE):
    name: ClassVar[str] = "de-bin"
    Params: ClassVar[type] = DEBinParams


@dataclasses.dataclass(frozen=True)
class DEBest(DE):
    name: ClassVar[str] = "de-best"
    base: ClassVar[str] = "best"


@dataclasses.dataclass(frozen=True)
class DECurrentToBest(DE):
    name: ClassVar[str] = "de-ctb"
    base: ClassVar[str] = "current-to-best"


@dataclasses.dataclass(frozen=True)
class JDEParams:
    tau: float = _param(0.1, "probability of redrawing a member's F and CR")
    F_low: float = _param(0.1, "lower end of the range F is redrawn from")
    F_high: float = _param(1.0, "upper end of the range F is redrawn from")

    def __post_init__(self):
        _check(0 <= self.tau <= 1, f"tau must lie in [0, 1], got {self.tau}")
        _check(0 < self.F_low <= self.F_high <= 2,
               f"need 0 < F_low <= F_high <= 2, got {self.F_low}, {self.F_high}")


class JDEState(NamedTuple):
    population: jax.Array  # [N, D]
    fitness: jax.Array  # [N]
    F: jax.Array  # [N]
    CR: jax.Array  # [N]


@dataclasses.dataclass(frozen=True)
class JDE(DE):
    """jDE: DE/rand/1/bin with self-adapted F and CR per member (Brest et al. 2006)."""

    name: ClassVar[str] = "jde"
    Params: ClassVar[type] = JDEParams

    def init(self, key) -> JDEState:
        n = self.population
        return JDEState(*_empty_population(self), jnp.full(n, 0.5, jnp.float32),
                        jnp.full(n, 0.9, jnp.float32))

    def ask(self, key, state, generation):
        n, p = self.population, self.params
        k_f, k_fv, k_c, k_cv, k_ask = jax.random.split(key, 5)
        F = jnp.where(jax.random.uniform(k_f, (n,)) < p.tau,
                      jax.random.uniform(k_fv, (n,), minval=p.F_low, maxval=p.F_high), state.F)
        CR = jnp.where(jax.random.uniform(k_c, (n,)) < p.tau,
                       jax.random.uniform(k_cv, (n,)), state.CR)
        pop = de.DEState(state.population, state.fitness)
        trial = de.ask(k_ask, pop, *self.box(), de.DEParams(F[:, None], CR[:, None]))
        return jnp.where(generation == 0, self.paper_start(key), trial), (F, CR)

    def tell(self, state, cands, pending, fitness, generation):
        F, CR = pending
        better = (fitness < state.fitness) | (generation == 0)
        kept = _take_start(de.DEState(state.population, state.fitness), cands, fitness,
                           generation)
        return JDEState(*kept, jnp.where(better, F, state.F), jnp.where(better, CR, state.CR))
