"""Differential evolution as pure functions over one problem.

Nothing here knows about images. Every function works on a single problem
(population ``[N, D]``); batch over problems with ``jax.vmap``, which gives the
state a leading problem axis. Minimisation throughout.

Variant: DE/rand/1 (Storn & Price, 1997). ``mutant_i = x_r1 + F (x_r2 - x_r3)``
with ``r1, r2, r3`` distinct and different from ``i``; no crossover by default
(optional binomial crossover with rate ``CR``); greedy selection where a child
replaces its parent only if it is *strictly* better (the paper's rule; scipy
also accepts an equal fitness, which lets a population drift on the plateaus that
integer pixels make); genes that leave the bounds are re-drawn uniformly inside them (as
scipy does), not clipped to the edge.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class DEParams(NamedTuple):
    """Search settings. ``F`` and ``CR`` are scalars, or per-member arrays ``[N, 1]``
    (self-adaptive variants such as jDE)."""

    F: float | jax.Array = 0.5
    CR: float | jax.Array | None = None  # None: no crossover (the paper); else binomial rate
    base: str = "rand"  # rand, best or current-to-best


PAPER = DEParams()  # F = 0.5, no crossover


class DEState(NamedTuple):
    population: jax.Array  # [N, D] float32
    fitness: jax.Array  # [N] float32, lower is better


def init_uniform(key: jax.Array, lower: jax.Array, upper: jax.Array, size: int) -> jax.Array:
    """``size`` points drawn uniformly in the box ``[lower, upper)``; shape ``[size, D]``."""
    lower, upper = jnp.asarray(lower, jnp.float32), jnp.asarray(upper, jnp.float32)
    u = jax.random.uniform(key, (size, lower.shape[0]), jnp.float32)
    return lower + u * (upper - lower)


def init(population: jax.Array, fitness: jax.Array) -> DEState:
    """State from an evaluated initial population."""
    return DEState(jnp.asarray(population, jnp.float32), jnp.asarray(fitness, jnp.float32))


def _skip_past(u: jax.Array, excluded: list[jax.Array]) -> jax.Array:
    """Map ``u`` uniform on ``[0, N - m)`` to uniform on ``[0, N)`` minus ``m`` excluded ints.

    ``excluded`` must be sorted ascending; stepping over each in turn keeps the map a
    bijection onto the allowed set.
    """
    for e in excluded:
        u = u + (u >= e).astype(u.dtype)
    return u


def _sort3(a, b, c):
    lo, hi = jnp.minimum(a, b), jnp.maximum(a, b)
    return jnp.minimum(lo, c), jnp.clip(c, lo, hi), jnp.maximum(hi, c)


def sample_indices(key: jax.Array, size: int) -> jax.Array:
    """For each member ``i`` of a population of ``size``, three distinct indices ``!= i``.

    Uniform over ordered triples, O(1) per member: no permutation or rejection.
    Returns int32 ``[size, 3]``.
    """
    if size < 4:
        raise ValueError(f"DE/rand/1 needs a population of at least 4, got {size}")
    k1, k2, k3 = jax.random.split(key, 3)
    i = jnp.arange(size, dtype=jnp.int32)
    r1 = _skip_past(jax.random.randint(k1, (size,), 0, size - 1, jnp.int32), [i])
    lo, hi = jnp.minimum(i, r1), jnp.maximum(i, r1)
    r2 = _skip_past(jax.random.randint(k2, (size,), 0, size - 2, jnp.int32), [lo, hi])
    s1, s2, s3 = _sort3(i, r1, r2)
    r3 = _skip_past(jax.random.randint(k3, (size,), 0, size - 3, jnp.int32), [s1, s2, s3])
    return jnp.stack([r1, r2, r3], axis=-1)


def redraw_out_of_bounds(key: jax.Array, x: jax.Array, lower, upper) -> jax.Array:
    """Replace every gene outside ``[lower, upper]`` by a uniform draw inside (scipy's rule)."""
    fresh = init_uniform(key, lower, upper, x.shape[0])
    return jnp.where((x < lower) | (x > upper), fresh, x)


def binomial_crossover(key: jax.Array, parent: jax.Array, mutant: jax.Array, CR: float):
    """Each gene from the mutant with probability ``CR`` (a scalar, or ``[N, 1]`` per
    member); one random gene always is."""
    n, d = parent.shape
    k_mask, k_j = jax.random.split(key)
    take = jax.random.uniform(k_mask, (n, d)) < CR
    forced = jnp.arange(d) == jax.random.randint(k_j, (n, 1), 0, d)
    return jnp.where(take | forced, mutant, parent)


def ask(key: jax.Array, state: DEState, lower, upper, params: DEParams = PAPER):
    """Trial vectors ``[N, D]`` for every member, optional crossover.

    ``base``: ``rand`` (DE/rand/1, the paper) ``x_r1 + F (x_r2 - x_r3)``; ``best``
    ``x_best + F (x_r1 - x_r2)``; ``current-to-best`` ``x_i + F (x_best - x_i) +
    F (x_r1 - x_r2)``.
    """
    k_idx, k_bounds, k_cross = jax.random.split(key, 3)
    pop = state.population
    r = sample_indices(k_idx, pop.shape[0])
    if params.base == "rand":
        mutant = pop[r[:, 0]] + params.F * (pop[r[:, 1]] - pop[r[:, 2]])
    elif params.base in ("best", "current-to-best"):
        best = pop[jnp.argmin(state.fitness)]
        start = best if params.base == "best" else pop + params.F * (best - pop)
        mutant = start + params.F * (pop[r[:, 0]] - pop[r[:, 1]])
    else:
        raise ValueError(f"base must be rand, best or current-to-best, got {params.base!r}")
    mutant = redraw_out_of_bounds(k_bounds, mutant, lower, upper)
    if params.CR is None:
        return mutant
    return binomial_crossover(k_cross, pop, mutant, params.CR)


def tell(state: DEState, trials: jax.Array, fitness: jax.Array) -> DEState:
    """Greedy selection: a trial replaces its parent only if strictly better."""
    better = fitness < state.fitness
    return DEState(
        jnp.where(better[:, None], trials, state.population),
        jnp.where(better, fitness, state.fitness),
    )


def step(
    key: jax.Array,
    state: DEState,
    fitness_fn: Callable[[jax.Array], Any],
    lower,
    upper,
    params: DEParams = PAPER,
    has_aux: bool = False,
):
    """One generation: ask, evaluate with ``fitness_fn(trials [N, D])``, tell.

    With ``has_aux``, ``fitness_fn`` returns ``(fitness, aux)`` and ``step`` returns
    ``(state, aux)``.
    """
    trials = ask(key, state, lower, upper, params)
    out = fitness_fn(trials)
    fitness, aux = out if has_aux else (out, None)
    new = tell(state, trials, fitness)
    return (new, aux) if has_aux else new


def minimize(
    key: jax.Array,
    fitness_fn: Callable[[jax.Array], jax.Array],
    lower,
    upper,
    population: int,
    generations: int,
    params: DEParams = PAPER,
) -> DEState:
    """Plain DE on one problem: uniform init, then ``generations`` steps (no early stop).

    ``fitness_fn`` maps ``[N, D] -> [N]``. Vmap over keys to run many problems.
    """
    k_init, k_run = jax.random.split(key)
    pop = init_uniform(k_init, lower, upper, population)
    state = init(pop, fitness_fn(pop))

    def body(g, s):
        return step(jax.random.fold_in(k_run, g), s, fitness_fn, lower, upper, params)

    return jax.lax.fori_loop(0, generations, body, state)
