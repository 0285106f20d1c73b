"""The strategy interface: pure per-problem search steps, batched by the engine.

A strategy is a frozen (hashable) dataclass with four methods, each for *one* problem;
the engine vmaps them over slots. ``spec`` is the engine's ``SearchSpec`` (pixels,
image shape, population, generations). Fitness is minimised.

- ``empty(spec)``: a zero state (numpy pytree) for an empty slot.
- ``ask(key, state, first, generation, spec) -> (candidates [N, D], pending)``: the
  candidates to evaluate; ``first`` marks a fresh problem (draw the start).
- ``tell(state, candidates, pending, fitness, first, spec) -> state``.
- ``best(state) -> genes [D]``: the best candidate so far.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from jaxattack import codec


@dataclasses.dataclass(frozen=True)
class Strategy:
    name = "strategy"

    def empty(self, spec) -> dict:
        return {"population": np.zeros((spec.population, spec.dims), np.float32),
                "fitness": np.full(spec.population, np.inf, np.float32)}

    def best(self, state):
        return state["population"][jnp.argmin(state["fitness"])]


def box(spec):
    """The gene bounds ``(lower, upper)`` of a spec as jax arrays."""
    lo, hi = codec.bounds(spec.pixels, spec.height, spec.width, spec.channels)
    return jnp.asarray(lo), jnp.asarray(hi)


def paper_start(key, spec):
    """The paper's initial population (coordinates uniform, colours N(128, 127))."""
    return codec.initial_population(key, spec.population, spec.pixels, spec.height,
                                    spec.width, spec.channels)
