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


def _take_start(state, cands, fitness, first):
    kept = de.tell(de.DEState(state["population"], state["fitness"]), cands, fitness)
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
        lower, upper = box(spec)
        k_idx, k_bounds, k_cross = jax.random.split(key, 3)
        pop = state["population"]
        r = de.sample_indices(k_idx, pop.shape[0])
        if self.base == "rand":
            mutant = pop[r[:, 0]] + self.F * (pop[r[:, 1]] - pop[r[:, 2]])
        else:
            x_best = pop[jnp.argmin(state["fitness"])]
            diff = self.F * (pop[r[:, 0]] - pop[r[:, 1]])
            mutant = (x_best + diff if self.base == "best"
                      else pop + self.F * (x_best - pop) + diff)
        mutant = de.redraw_out_of_bounds(k_bounds, mutant, lower, upper)
        if self.CR is not None:
            mutant = de.binomial_crossover(k_cross, pop, mutant, self.CR)
        return jnp.where(first, paper_start(key, spec), mutant), None

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
        lower, upper = box(spec)
        n, d = state["population"].shape
        ks = jax.random.split(key, 7)
        lo, hi = self.F_range
        F = jnp.where(jax.random.uniform(ks[0], (n,)) < self.tau,
                      jax.random.uniform(ks[1], (n,), minval=lo, maxval=hi), state["F"])
        CR = jnp.where(jax.random.uniform(ks[2], (n,)) < self.tau,
                       jax.random.uniform(ks[3], (n,)), state["CR"])
        pop = state["population"]
        r = de.sample_indices(ks[4], n)
        mutant = pop[r[:, 0]] + F[:, None] * (pop[r[:, 1]] - pop[r[:, 2]])
        mutant = de.redraw_out_of_bounds(ks[5], mutant, lower, upper)
        k_mask, k_j = jax.random.split(ks[6])
        take = jax.random.uniform(k_mask, (n, d)) < CR[:, None]
        take = take | (jnp.arange(d) == jax.random.randint(k_j, (n, 1), 0, d))
        trial = jnp.where(take, mutant, pop)
        return jnp.where(first, paper_start(key, spec), trial), (F, CR)

    def tell(self, state, cands, pending, fitness, first, spec):
        F, CR = pending
        better = (fitness < state["fitness"]) | first
        out = _take_start(state, cands, fitness, first)
        return out | {"F": jnp.where(better, F, state["F"]),
                      "CR": jnp.where(better, CR, state["CR"])}
