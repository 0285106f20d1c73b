"""Sparse-RS for k pixels (Croce, Andriushchenko, Singh, Flammarion & Hein, "Sparse-RS: a
Versatile Framework for Query-Efficient Sparse Black-Box Adversarial Attacks", AAAI 2022).

Random search on the current best set of k pixels: each step resamples a few of them
(new position, new colour at a vertex of the colour cube) and keeps the change only if
the loss gets strictly better. The number of
pixels resampled shrinks over the query budget (the paper's schedule, ``p_init``
halving at fixed fractions of the budget). Batched here: each generation evaluates
``population`` independent resamplings of the current best and keeps the best of them,
so a generation costs ``population`` queries like a DE generation. Use it with the
margin loss, as the paper does.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from jaxattack.strategies.base import Strategy

# Fractions of the budget (x 10000) and the divisor of p_init past each (paper's code:
# p_init / 2 for 10 < it <= 50, ..., p_init / 20 for it > 8000).
_STEPS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_DIVS = (1, 2, 4, 5, 6, 8, 10, 12, 15, 20)


def resample_fraction(p_init: float, used: jax.Array, budget: int) -> jax.Array:
    """Share of the k pixels to resample after ``used`` of ``budget`` queries."""
    it = jnp.floor(used / budget * 10000)
    step = jnp.searchsorted(jnp.asarray(_STEPS, jnp.float32), it, side="left")
    return p_init / jnp.asarray(_DIVS, jnp.float32)[step]


def resample_mask(key, strategy: Strategy, p_init: float, generation) -> jax.Array:
    """``[population, k]``: which pixels each candidate resamples (``m`` of them, at random,
    ``m`` from the paper's schedule at this point of the budget, at least 1)."""
    n, k = strategy.population, strategy.space.pixels
    budget = n * (strategy.generations + 1)
    frac = resample_fraction(p_init, generation * n, budget)
    m = jnp.maximum(1, jnp.round(frac * k)).astype(jnp.int32)
    return _ranks(jax.random.uniform(key, (n, k))) < m


def _ranks(u) -> jax.Array:
    """Each entry's rank in its row (ties in index order): ``argsort(argsort(u))`` by
    ``k x k`` comparisons, which XLA:CPU runs faster than two sorts for the small k here."""
    a, b = u[..., :, None], u[..., None, :]
    i = jnp.arange(u.shape[-1])
    before = (b < a) | ((b == a) & (i[None, :] < i[:, None]))
    return before.sum(-1)


def keep_best(best, best_fitness, cands, fitness, generation):
    """The best of this generation replaces ``best`` if strictly better (always at 0)."""
    j = jnp.argmin(fitness)
    better = (fitness[j] < best_fitness) | (generation == 0)
    return jnp.where(better, cands[j], best), jnp.where(better, fitness[j], best_fitness)


@dataclasses.dataclass(frozen=True)
class SparseRSParams:
    p_init: float = dataclasses.field(default=0.3, metadata={
        "help": "initial share of the k pixels resampled per step (halved on the paper's "
                "schedule)"})

    def __post_init__(self):
        if not 0 < self.p_init <= 1:
            raise ValueError(f"p_init must lie in (0, 1], got {self.p_init}")


class SparseRSState(NamedTuple):
    best: jax.Array  # [D] the current set of k pixels
    best_fitness: jax.Array  # [] its loss


@dataclasses.dataclass(frozen=True)
class SparseRS(Strategy):
    name: ClassVar[str] = "sparse-rs"
    Params: ClassVar[type] = SparseRSParams

    def init(self, key) -> SparseRSState:
        return SparseRSState(jnp.zeros(self.dims, jnp.float32), jnp.float32(jnp.inf))

    def best(self, state):
        return state.best

    def _random(self, key, n):
        """``n`` random candidates: positions uniform, colours at cube vertices."""
        sp = self.space
        k_xy, k_c = jax.random.split(key)
        xy = jax.random.uniform(k_xy, (n, sp.pixels, 2)) * jnp.array([sp.width, sp.height],
                                                                     jnp.float32)
        colour = jax.random.bernoulli(k_c, 0.5, (n, sp.pixels, sp.channels)).astype(
            jnp.float32) * 255.5
        return jnp.concatenate([xy, colour], -1)

    def ask(self, key, state, generation):
        n, k = self.population, self.space.pixels
        k_new, k_pick = jax.random.split(key)
        fresh = self._random(k_new, n)  # [n, k, 2 + C]
        change = resample_mask(k_pick, self, self.params.p_init, generation)[..., None]
        current = state.best.reshape(k, -1)
        cands = jnp.where(change, fresh, current).reshape(n, -1)
        return jnp.where(generation == 0, fresh.reshape(n, -1), cands), None

    def tell(self, state, cands, pending, fitness, generation):
        return SparseRSState(*keep_best(state.best, state.best_fitness, cands, fitness,
                                        generation))
