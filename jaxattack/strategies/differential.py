"""Differential evolution strategies.

- ``de``: DE/rand/1, the paper's search (Su et al. 2019; Storn & Price 1997), no
  crossover unless ``CR`` is set.
- ``de-bin``: DE/rand/1/bin, binomial crossover with rate ``CR`` (Storn & Price 1997).
- ``de-best``: DE/best/1, ``x_best + F (x_r1 - x_r2)`` (Storn & Price 1997).
- ``de-ctb``: DE/current-to-best/1, ``x_i + F (x_best - x_i) + F (x_r1 - x_r2)``
  (Das & Suganthan 2011, "Differential Evolution: A Survey of the State-of-the-Art").
- ``jde``: self-adaptive F and CR per member (Brest et al. 2006, "Self-Adapting Control
  Parameters in Differential Evolution", IEEE TEVC 10(6)): with probability 0.1 a
  member's F is redrawn from U(0.1, 1.0) and its CR from U(0, 1); a new value survives
  only with a successful child.

All use the shared DE core (``jaxattack.de``): distinct indices, out-of-range genes
re-drawn uniformly, and greedy selection (a child replaces its parent only if strictly
better). The initial population is the paper's.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxattack import de
from jaxattack.strategies.base import Strategy, box, paper_start


def _de_state(state) -> de.DEState:
    return de.DEState(state["population"], state["fitness"])


def _take_start(state, cands, fitness, first):
    kept = de.tell(_de_state(state), cands, fitness)
    return {"population": jnp.where(first, cands, kept.population),
            "fitness": jnp.where(first, fitness, kept.fitness)}


@dataclasses.dataclass(frozen=True)
class DE(Strategy):
    """DE/rand/1 (``base="rand"``), /best/1 or /current-to-best/1, optional crossover."""

    F: float = 0.5
    CR: float | None = None
    base: str = "rand"
    name: str = "de"

    def ask(self, key, state, first, generation, spec):
        trial = de.ask(key, _de_state(state), *box(spec), de.DEParams(self.F, self.CR, self.base))
        return jnp.where(first, paper_start(key, spec), trial), None

    def tell(self, state, cands, pending, fitness, first, spec):
        return _take_start(state, cands, fitness, first)


@dataclasses.dataclass(frozen=True)
class JDE(Strategy):
    """jDE: DE/rand/1/bin with self-adapted F and CR per member (Brest et al. 2006)."""

    tau: float = 0.1
    F_range: tuple[float, float] = (0.1, 1.0)
    name: str = "jde"

    def empty(self, spec):
        return super().empty(spec) | {"F": np.full(spec.population, 0.5, np.float32),
                                      "CR": np.full(spec.population, 0.9, np.float32)}

    def ask(self, key, state, first, generation, spec):
        n = spec.population
        k_f, k_fv, k_c, k_cv, k_ask = jax.random.split(key, 5)
        lo, hi = self.F_range
        F = jnp.where(jax.random.uniform(k_f, (n,)) < self.tau,
                      jax.random.uniform(k_fv, (n,), minval=lo, maxval=hi), state["F"])
        CR = jnp.where(jax.random.uniform(k_c, (n,)) < self.tau,
                       jax.random.uniform(k_cv, (n,)), state["CR"])
        trial = de.ask(k_ask, _de_state(state), *box(spec), de.DEParams(F[:, None], CR[:, None]))
        return jnp.where(first, paper_start(key, spec), trial), (F, CR)

    def tell(self, state, cands, pending, fitness, first, spec):
        F, CR = pending
        better = (fitness < state["fitness"]) | first
        out = _take_start(state, cands, fitness, first)
        return out | {"F": jnp.where(better, F, state["F"]),
                      "CR": jnp.where(better, CR, state["CR"])}
