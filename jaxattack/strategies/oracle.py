"""The exhaustive one-pixel oracle: every position x a colour set, in a fixed order.

It answers exactly "can one pixel set to a colour of the set fool this image?". The
default colour set is the ``2^C`` corners of the colour cube (``levels=2``: each
channel 0 or 255), so a CIFAR-10 image takes ``8 x 1,024 = 8,192`` queries; ``levels=L``
uses the ``L^C`` colours of an even grid (0, 255/(L-1), ..., 255) instead.

The enumeration is position-major: candidate number ``i`` is position ``i // L^C`` in
row-major order (``y * W + x``) with colour ``i % L^C`` (channel 0 the slowest digit).
Generation ``g`` asks candidates ``g*P .. g*P + P - 1`` (``P`` the population); past
the end it wraps round, so a budget that does not cover ``H*W*L^C`` candidates
(``coverage``) examines only a prefix. Use ``oracle_budget`` to size it exactly.

Queries: the engine charges ``P`` per generation, so a full enumeration costs
``P * ceil(H*W*L^C / P)``, exactly ``H*W*L^C`` when ``P`` divides it (a "not
vulnerable" answer, or any run with ``early_stop="none"``). With early stop on success
a vulnerable image stops after the generation holding its first flipping candidate
``i``: ``P * (i // P + 1)`` queries.

For ``k > 1`` every one of the k pixels is set to the same position and colour, so
the candidate is still one changed pixel (the oracle stays the one-pixel ground truth).
It uses no randomness.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from jaxattack.strategies.base import Strategy


@dataclasses.dataclass(frozen=True)
class OracleParams:
    levels: int = dataclasses.field(default=2, metadata={
        "help": "colour levels per channel: 2 = the corners of the colour cube (0 or 255), "
                "L = an even grid of L values"})

    def __post_init__(self):
        if not isinstance(self.levels, int) or not 2 <= self.levels <= 256:
            raise ValueError(f"levels must be an int in [2, 256], got {self.levels!r}")


class OracleState(NamedTuple):
    best: jax.Array  # [D] the lowest-fitness candidate so far
    best_fitness: jax.Array  # []


def candidates_total(height: int, width: int, channels: int, levels: int = 2) -> int:
    """Positions x colours the oracle enumerates."""
    return height * width * levels ** channels


def oracle_budget(height: int, width: int, channels: int, levels: int = 2,
                  max_population: int = 512) -> tuple[int, int]:
    """``(population, generations)`` that enumerate every candidate exactly once: the
    largest population up to ``max_population`` that divides the total."""
    total = candidates_total(height, width, channels, levels)
    pop = max(p for p in range(1, min(max_population, total) + 1) if total % p == 0)
    return pop, total // pop - 1


@dataclasses.dataclass(frozen=True)
class Oracle(Strategy):
    name: ClassVar[str] = "oracle"
    Params: ClassVar[type] = OracleParams

    @property
    def total(self) -> int:
        sp = self.space
        return candidates_total(sp.height, sp.width, sp.channels, self.params.levels)

    @property
    def coverage(self) -> float:
        """Share of the enumeration the budget examines (1.0: exhaustive)."""
        return min(1.0, self.population * (self.generations + 1) / self.total)

    def init(self, key) -> OracleState:
        return OracleState(jnp.zeros(self.dims, jnp.float32), jnp.float32(jnp.inf))

    def best(self, state):
        return state.best

    def ask(self, key, state, generation):
        sp, levels = self.space, self.params.levels
        colours = levels ** sp.channels
        i = (generation * self.population + jnp.arange(self.population)) % self.total
        pos, col = i // colours, i % colours
        digits = (col[:, None] // levels ** jnp.arange(sp.channels - 1, -1, -1)) % levels
        value = jnp.floor(digits.astype(jnp.float32) * (255.0 / (levels - 1)) + 0.5)
        xy = jnp.stack([pos % sp.width, pos // sp.width], -1).astype(jnp.float32)
        pixel = jnp.concatenate([xy, value], -1) + 0.5  # genes decode (floor) to the ints
        return jnp.tile(pixel, (1, sp.pixels)), None

    def tell(self, state, cands, pending, fitness, generation):
        j = jnp.argmin(fitness)
        better = fitness[j] < state.best_fitness
        return OracleState(jnp.where(better, cands[j], state.best),
                           jnp.where(better, fitness[j], state.best_fitness))
