"""Sparse-RS with a learned distribution over positions (``learned-rs``).

Sparse-RS (``strategies.sparse_rs``) draws every new pixel position uniformly and
keeps only the best of each generation, so what the other candidates of a generation
reveal about the image is thrown away. Here, as in BruSLeAttack (Vo, Abbasnejad &
Ranasinghe, ICLR 2024), the search learns per image where pixels help:

- every position has a log-weight (``logits``, one per pixel, starting equal);
- a new position is drawn from ``softmax(logits)`` (share ``1 - explore - local``),
  uniformly (``explore``), or next to the pixel it replaces (``local``: a 3 x 3
  neighbourhood, the same position included, so it can also be a new colour alone);
- after each generation, every position a candidate introduced gets ``+lr`` if that
  candidate beat the current best (or, in the initial population, the median) and
  ``-lr * decay`` if not, improving candidates other than the kept one included.

Colours are corners of the colour cube and the number of pixels resampled follows
Sparse-RS's schedule (``p_init``); the best candidate is replaced only by a strictly
better one. Use it with the margin loss.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from jaxattack.strategies.base import Strategy
from jaxattack.strategies.sparse_rs import keep_best, resample_mask

LOGIT_RANGE = 8.0  # log-weights are clipped to [-8, 8]


def _param(default, help_text):
    return dataclasses.field(default=default, metadata={"help": help_text})


def sample_positions(key, logits, shape) -> jax.Array:
    """int32 ``shape``: positions drawn from ``softmax(logits)`` by the inverse of its
    distribution function, one uniform number per draw. ``jax.random.categorical`` draws
    Gumbel noise for every position of every draw (``H * W`` logarithms each): on
    XLA:CPU that took 0.5 ms per slot and generation at population 20, k = 3 on 32 x 32
    images, more than `tiny`'s sparse forward of the 20 candidates. In float32 a position
    whose probability is below about 1e-7 of the running total is never drawn (with
    log-weights clipped to [-8, 8], at most 1e-4 of the mass in all)."""
    cdf = jnp.cumsum(jax.nn.softmax(logits))
    u = jax.random.uniform(key, shape) * cdf[-1]
    pos = jnp.searchsorted(cdf, u, side="right", method="scan_unrolled")
    return jnp.minimum(pos, logits.shape[0] - 1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class LearnedRSParams:
    p_init: float = _param(0.3, "initial share of the k pixels resampled per step "
                                "(Sparse-RS's schedule)")
    lr: float = _param(1.0, "log-weight added to a position whose candidate improved")
    decay: float = _param(0.1, "share of lr taken from a position whose candidate did not")
    explore: float = _param(0.3, "share of new positions drawn uniformly")
    local: float = _param(0.2, "share of new positions next to the pixel they replace")

    def __post_init__(self):
        for name in ("p_init", "explore", "local"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {v}")
        if self.p_init == 0:
            raise ValueError("p_init must lie in (0, 1], got 0")
        if self.explore + self.local > 1:
            raise ValueError(f"explore + local must be <= 1, got {self.explore + self.local}")
        if self.lr < 0 or self.decay < 0:
            raise ValueError(f"lr and decay must be >= 0, got {self.lr}, {self.decay}")


class LearnedRSState(NamedTuple):
    best: jax.Array  # [D] the current set of k pixels
    best_fitness: jax.Array  # []
    logits: jax.Array  # [H * W] log-weight of each position


@dataclasses.dataclass(frozen=True)
class LearnedRS(Strategy):
    name: ClassVar[str] = "learned-rs"
    Params: ClassVar[type] = LearnedRSParams

    def init(self, key) -> LearnedRSState:
        sp = self.space
        return LearnedRSState(jnp.zeros(self.dims, jnp.float32), jnp.float32(jnp.inf),
                              jnp.zeros(sp.height * sp.width, jnp.float32))

    def best(self, state):
        return state.best

    def ask(self, key, state, generation):
        sp, p = self.space, self.params
        n, k, w, h = self.population, sp.pixels, sp.width, sp.height
        k_pos, k_uni, k_off, k_mix, k_col, k_pick = jax.random.split(key, 6)
        current = state.best.reshape(k, -1)
        learned = sample_positions(k_pos, state.logits, (n, k))
        uniform = jax.random.randint(k_uni, (n, k), 0, h * w)
        near = jnp.clip(jnp.floor(current[:, :2]).astype(jnp.int32)
                        + jax.random.randint(k_off, (n, k, 2), -1, 2), 0,
                        jnp.array([w - 1, h - 1]))
        u = jax.random.uniform(k_mix, (n, k))
        pos = jnp.where(u < p.local, near[..., 1] * w + near[..., 0],
                        jnp.where(u < p.local + p.explore, uniform, learned))
        pos = jnp.where(generation == 0, uniform, pos)
        xy = jnp.stack([pos % w, pos // w], -1).astype(jnp.float32) + 0.5
        colour = jax.random.bernoulli(k_col, 0.5, (n, k, sp.channels)).astype(
            jnp.float32) * 255.5
        fresh = jnp.concatenate([xy, colour], -1)
        change = resample_mask(k_pick, self, p.p_init, generation) | (generation == 0)
        cands = jnp.where(change[..., None], fresh, current).reshape(n, -1)
        return cands, (pos, change)

    def tell(self, state, cands, pending, fitness, generation):
        pos, change = pending
        ref = jnp.where(generation == 0, jnp.median(fitness), state.best_fitness)
        reward = jnp.where(fitness < ref, self.params.lr, -self.params.lr * self.params.decay)
        logits = state.logits.at[pos.reshape(-1)].add(
            jnp.where(change, reward[:, None], 0.0).reshape(-1))
        logits = jnp.clip(logits, -LOGIT_RANGE, LOGIT_RANGE)
        return LearnedRSState(*keep_best(state.best, state.best_fitness, cands, fitness,
                                         generation), logits)
