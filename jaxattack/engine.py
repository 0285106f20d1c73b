"""The batched search loop: a fixed number of *slots*, each holding one problem.

A slot is one (image, label, target, key) problem with its search state (for the
paper's DE, a population). One generation evaluates every slot's candidates as a
single forward pass of
``slots * population`` images. The generations run inside one jitted
``lax.while_loop`` that returns to the host as soon as enough slots have finished,
so the host can write their results and refill them (continuous batching) without
recompiling. Slots are sharded over a 1-D device mesh with ``shard_map``; each
device runs its own loop on its own slots, so a generation needs no communication.

Randomness is per problem: generation ``g`` of a problem uses
``fold_in(problem_key, g + 1)`` (``g = -1`` draws the initial population), so a
result never depends on which slot, batch or device ran it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxattack import codec, objective
from jaxattack.caches import memoize
from jaxattack.classifier import Classifier
from jaxattack.sharding import AXIS
from jaxattack.strategies import DE, Strategy


class Slots(NamedTuple):
    """Per-slot search state; every field has a leading slot axis ``[S, ...]``."""

    key: jax.Array  # uint32 [S, 2] problem key
    image: jax.Array  # uint8 [S, H, W, C]
    label: jax.Array  # int32 [S]
    target: jax.Array  # int32 [S], -1 = untargeted
    search: dict  # the strategy's state, each leaf [S, ...]
    generation: jax.Array  # int32 [S]: generations done; -1 before the initial population
    active: jax.Array  # bool [S]: still searching
    found: jax.Array  # bool [S]: some evaluated candidate succeeded
    first_hit: jax.Array  # int32 [S]: generation of the first success, -1 before
    adv_genes: jax.Array  # f32 [S, D]: best successful candidate so far
    adv_fitness: jax.Array  # f32 [S]


class SlotView(NamedTuple):
    """What the host reads back after each loop: small, no populations."""

    active: np.ndarray
    found: np.ndarray
    generation: np.ndarray
    genes: np.ndarray  # the best successful candidate, else the best member
    first_hit: np.ndarray  # generation of the first success, -1 if none


@dataclasses.dataclass(frozen=True)
class SearchSpec:
    """Static shape and search settings of one compiled engine."""

    pixels: int
    height: int
    width: int
    channels: int
    population: int
    generations: int
    strategy: Strategy = DE()
    loss: str = "prob"
    early_stop: str = "success"

    @property
    def dims(self) -> int:
        return self.pixels * codec.genes_per_pixel(self.channels)


def empty_slots(spec: SearchSpec, n: int) -> Slots:
    """Host-side (numpy) slots, all inactive."""
    d = spec.dims
    search = jax.tree.map(lambda a: np.repeat(np.asarray(a)[None], n, 0),
                          spec.strategy.empty(spec))
    return Slots(
        key=np.zeros((n, 2), np.uint32),
        image=np.zeros((n, spec.height, spec.width, spec.channels), np.uint8),
        label=np.zeros(n, np.int32),
        target=np.full(n, -1, np.int32),
        search=search,
        generation=np.full(n, -1, np.int32),
        active=np.zeros(n, bool),
        found=np.zeros(n, bool),
        first_hit=np.full(n, -1, np.int32),
        adv_genes=np.zeros((n, d), np.float32),
        adv_fitness=np.full(n, np.inf, np.float32),
    )


def _generation(spec: SearchSpec, classifier: Classifier, params, s: Slots) -> Slots:
    """One generation for every slot (inactive slots are computed but left unchanged)."""
    strat = spec.strategy
    keys = jax.vmap(jax.random.fold_in)(s.key, s.generation + 1)
    first = s.generation < 0
    ask = functools.partial(strat.ask, spec=spec)
    cands, pending = jax.vmap(ask)(keys, s.search, first, s.generation)  # [S, N, D]
    pix = codec.decode(cands, spec.pixels, spec.height, spec.width, spec.channels)
    imgs = jax.vmap(jax.vmap(codec.paint, (None, 0)), (0, 0))(s.image, pix)
    S, N = cands.shape[:2]
    probs = classifier.probs(params, imgs.reshape(S * N, *imgs.shape[2:]))
    probs = probs.reshape(S, N, -1)
    lab, tgt = s.label[:, None], s.target[:, None]
    fit = objective.fitness(probs, lab, tgt, spec.loss)
    hit = objective.success(probs, lab, tgt)
    stop = objective.should_stop(probs, lab, tgt, spec.early_stop).any(-1)

    search = jax.vmap(functools.partial(strat.tell, spec=spec))(
        s.search, cands, pending, fit, first)

    # Remember the best successful candidate ever evaluated.
    hit_fit = jnp.where(hit, fit, jnp.inf)
    j = jnp.argmin(hit_fit, axis=-1)
    j_fit = jnp.take_along_axis(hit_fit, j[:, None], -1)[:, 0]
    better = j_fit < s.adv_fitness
    adv_genes = jnp.where(better[:, None], jnp.take_along_axis(
        cands, j[:, None, None], 1)[:, 0], s.adv_genes)

    gen = s.generation + 1
    any_hit = hit.any(-1)
    new = s._replace(
        search=search, generation=gen,
        active=~stop & (gen < spec.generations),
        found=s.found | any_hit,
        first_hit=jnp.where(any_hit & ~s.found, gen, s.first_hit),
        adv_genes=adv_genes, adv_fitness=jnp.minimum(j_fit, s.adv_fitness),
    )
    return _select(s.active, new, s)


def _evolve_local(spec, classifier, s: Slots, params, min_finished):
    """Run generations on this device's slots until ``min_finished`` of them finish.

    Also returns how many generations this device ran (``[1]``, for utilisation).
    """
    start = s.active.sum()

    def cond(carry):
        left = carry[0].active.sum()
        return (left > 0) & (start - left < min_finished)

    def body(carry):
        return _generation(spec, classifier, params, carry[0]), carry[1] + 1

    s, n = jax.lax.while_loop(cond, body, (s, jnp.zeros((1,), jnp.int32)))
    return s, n


def _view(strategy: Strategy, s: Slots) -> tuple:
    best = jax.vmap(strategy.best)(s.search)
    genes = jnp.where(s.found[:, None], s.adv_genes, best)
    return s.active, s.found, s.generation, genes, s.first_hit


class Engine:
    """Compiled search over ``num_slots`` slots on ``mesh``; state lives on the devices."""

    def __init__(self, spec: SearchSpec, classifier: Classifier, mesh: Mesh, num_slots: int):
        n_dev = mesh.devices.size
        if num_slots % n_dev:
            raise ValueError(f"num_slots={num_slots} is not a multiple of {n_dev} devices")
        self.spec, self.classifier, self.mesh, self.num_slots = spec, classifier, mesh, num_slots
        self.sharding = NamedSharding(mesh, P(AXIS))
        self.params = jax.device_put(classifier.params, NamedSharding(mesh, P()))
        self._evolve, self._load, self._view = _programs(spec, classifier, mesh)
        self.slots = jax.device_put(empty_slots(spec, num_slots), self.sharding)
        self.computed = 0

    def load(self, mask: np.ndarray, new: Slots) -> None:
        """Put fresh problems into the slots where ``mask`` is set."""
        self.slots = self._load(self.slots, jax.device_put(mask, self.sharding),
                                jax.device_put(new, self.sharding))

    def evolve(self, min_finished: int) -> SlotView:
        """Run until every device has seen ``min_finished`` slots finish (or none is active)."""
        self.slots, steps = self._evolve(self.slots, self.params, jnp.int32(min_finished))
        view = SlotView(*jax.device_get(self._view(self.slots)))
        # Slot-generations computed, useful or not (utilisation = useful / computed).
        self.computed += int(np.asarray(steps).sum()) * (self.num_slots // steps.shape[0])
        return view


@memoize(8)
def _programs(spec: SearchSpec, classifier: Classifier, mesh: Mesh):
    """Jitted (evolve, load, view), cached so repeated attacks do not recompile."""
    evolve = jax.shard_map(
        functools.partial(_evolve_local, spec, classifier),
        mesh=mesh, in_specs=(P(AXIS), P(), P()), out_specs=(P(AXIS), P(AXIS)),
        check_vma=False,
    )
    sharded = NamedSharding(mesh, P(AXIS))
    return (jax.jit(evolve, donate_argnums=0),
            jax.jit(_load, donate_argnums=0, out_shardings=sharded),
            jax.jit(functools.partial(_view, spec.strategy)))


def _select(mask, new: Slots, old: Slots) -> Slots:
    """Per slot: ``new`` where ``mask`` is set, else ``old``."""
    return jax.tree.map(
        lambda n, o: jnp.where(mask.reshape(mask.shape + (1,) * (o.ndim - 1)), n, o), new, old)


def _load(s: Slots, mask, new: Slots) -> Slots:
    return _select(mask, new, s)
