"""The engine's device side, image-agnostic: what it runs (``Search``: a strategy and an
evaluation function), the per-slot state, one generation for every slot, the jitted
``lax.while_loop`` in ``shard_map`` that runs generations until enough slots finish,
and the evolve program compiled ahead of time per slot count (with its measured compile
time, which the tail's cost rule in ``sizing.py`` weighs)."""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxattack.caches import memoize, registered
from jaxattack.engine.sharding import AXIS
from jaxattack.strategies import Strategy


class Evaluation(NamedTuple):
    """What an evaluation function returns for ``S`` slots of ``N`` candidates."""

    fitness: jax.Array  # f32 [S, N], minimised
    hit: jax.Array  # bool [S, N]: the candidate reaches the goal (a success)
    stop: jax.Array  # bool [S]: some candidate says the problem is done (early stop); the
    # engine may evaluate a population in parts (``_call``) and stops where any part does


class Evaluator(Protocol):
    """A hashable, pure evaluation function over slots.

    ``prepare`` runs once when problems are loaded (e.g. to cache work shared by all
    candidates of a problem); ``__call__`` scores candidates ``[S, N, D]``.
    """

    def prepare(self, params, problems): ...

    def __call__(self, params, problems, candidates) -> Evaluation: ...


@dataclasses.dataclass(frozen=True)
class Search:
    """What one compiled engine runs: a strategy and an evaluation function."""

    strategy: Strategy
    evaluate: Any  # an Evaluator

    @property
    def population(self) -> int:
        return self.strategy.population


class Slots(NamedTuple):
    """Per-slot state; every field has a leading slot axis ``[S, ...]``."""

    key: jax.Array  # uint32 [S, 2] problem key
    problem: Any  # the problem pytree (after ``evaluate.prepare``)
    state: Any  # the strategy's state
    evaluated: jax.Array  # int32 [S]: generations evaluated, the initial population included
    active: jax.Array  # bool [S]: still searching
    found: jax.Array  # bool [S]: some evaluated candidate succeeded
    first_hit: jax.Array  # int32 [S]: generation (0 = initial) of the first success, -1 before
    adv_genes: jax.Array  # f32 [S, D]: best successful candidate so far
    adv_fitness: jax.Array  # f32 [S]


class SlotView(NamedTuple):
    """What the host reads back after each loop: small, no populations."""

    active: np.ndarray
    found: np.ndarray
    evaluated: np.ndarray
    genes: np.ndarray  # the best successful candidate, else the strategy's best
    first_hit: np.ndarray


# ----------------------------------------------------------------------------- device side


def _fresh(search: Search, params, keys, problems, active) -> Slots:
    """Slots holding new problems, nothing evaluated yet."""
    n = keys.shape[0]
    return Slots(
        key=keys, problem=search.evaluate.prepare(params, problems),
        state=jax.vmap(search.strategy.init)(keys),
        evaluated=jnp.zeros(n, jnp.int32), active=active, found=jnp.zeros(n, bool),
        first_hit=jnp.full(n, -1, jnp.int32),
        adv_genes=jnp.zeros((n, search.strategy.dims), jnp.float32),
        adv_fitness=jnp.full(n, jnp.inf, jnp.float32))


def _call(search: Search, params, problems, cands, block: int) -> Evaluation:
    """``search.evaluate`` of candidates ``[S, N, D]``, in calls of at most ``block`` of
    each slot's candidates (``N`` split into equal parts, the last candidate repeated to
    fill the last one); a problem stops where any part says so."""
    S, N = cands.shape[:2]
    if block >= N:
        return search.evaluate(params, problems, cands)
    parts = -(-N // block)
    size = -(-N // parts)
    padded = jnp.concatenate([cands, jnp.repeat(cands[:, -1:], parts * size - N, 1)], 1)
    ev = jax.lax.map(lambda c: search.evaluate(params, problems, c),
                     padded.reshape(S, parts, size, -1).swapaxes(0, 1))

    def joined(a):  # [parts, S, size] -> [S, N]
        return a.swapaxes(0, 1).reshape(S, parts * size)[:, :N]

    return Evaluation(joined(ev.fitness), joined(ev.hit), ev.stop.any(0))


def _active_first(active) -> jax.Array:
    """int32 ``[S]``: the slot indices, active slots first, each group in slot order (a
    stable argsort of ``~active``, as a scatter: XLA:CPU's sort of 20 flags took 50 us)."""
    a = active.astype(jnp.int32)
    at = jnp.where(active, jnp.cumsum(a) - 1, a.sum() + jnp.cumsum(1 - a) - 1)
    return jnp.zeros_like(a).at[at].set(jnp.arange(a.shape[0], dtype=jnp.int32),
                                        unique_indices=True)


def _evaluate(search: Search, params, s: Slots, cands, chunk: int, block: int):
    """``search.evaluate`` of the active slots' candidates ``[S, N, D]``, ``chunk`` slots
    per call, active slots first, calling only for chunks that hold an active slot
    (inactive slots get zeros: their results are discarded). ``chunk >= S``: one call
    for every slot. Each call takes at most ``block`` candidates per slot (``_call``).
    Also returns the slots evaluated (int32)."""
    S = cands.shape[0]
    if chunk >= S:
        return _call(search, params, s.problem, cands, block), jnp.int32(S)
    order = _active_first(s.active)
    need = (s.active.sum(dtype=jnp.int32) + chunk - 1) // chunk

    def take(i):  # chunk i's slots and their problems (past the end: clamped, unused)
        idx = jax.lax.dynamic_slice(order, (i * chunk,), (chunk,))
        return idx, jax.tree.map(lambda a: a[idx], s.problem)

    part = jax.eval_shape(lambda: _call(search, params, take(0)[1], cands[:chunk], block))
    init = jax.tree.map(lambda a: jnp.zeros((S, *a.shape[1:]), a.dtype), part)

    # Each chunk's problems are gathered one iteration ahead, into the loop's carry: a
    # gather fused into the evaluation's own gathers (the sparse forward's crops of the
    # cached maps) made XLA:CPU's fusions of them several times slower (tiny, k = 3:
    # 3,400 candidates/s instead of 4,400).
    def body(i, carry):
        ev, (idx, problem) = carry
        new = _call(search, params, problem, cands[idx], block)
        ev = jax.tree.map(lambda full, part: full.at[idx].set(part), ev, new)
        return ev, take(i + 1)

    ev, _ = jax.lax.fori_loop(0, need, body, (init, take(0)))
    return ev, need * chunk


def _generation(search: Search, params, s: Slots, chunk: int, block: int
                ) -> tuple[Slots, jax.Array]:
    """One generation for every slot (inactive slots are left unchanged; their
    candidates are not evaluated where ``chunk`` is below the slot count). Also returns
    the slots evaluated."""
    strat = search.strategy
    keys = jax.vmap(jax.random.fold_in)(s.key, s.evaluated)
    cands, pending = jax.vmap(strat.ask)(keys, s.state, s.evaluated)  # [S, N, D]
    ev, computed = _evaluate(search, params, s, cands, chunk, block)
    state = jax.vmap(strat.tell)(s.state, cands, pending, ev.fitness, s.evaluated)

    # Remember the best successful candidate ever evaluated.
    hit_fit = jnp.where(ev.hit, ev.fitness, jnp.inf)
    j = jnp.argmin(hit_fit, axis=-1)
    j_fit = jnp.take_along_axis(hit_fit, j[:, None], -1)[:, 0]
    better = j_fit < s.adv_fitness
    adv_genes = jnp.where(better[:, None], jnp.take_along_axis(
        cands, j[:, None, None], 1)[:, 0], s.adv_genes)

    evaluated = s.evaluated + 1
    any_hit = ev.hit.any(-1)
    new = s._replace(
        state=state, evaluated=evaluated,
        active=~ev.stop & (evaluated <= strat.generations),
        found=s.found | any_hit,
        first_hit=jnp.where(any_hit & ~s.found, s.evaluated, s.first_hit),
        adv_genes=adv_genes, adv_fitness=jnp.minimum(j_fit, s.adv_fitness),
    )
    return _select(s.active, new, s), computed


def _evolve_local(search: Search, chunk: int, block: int, s: Slots, params, min_finished,
                  max_steps):
    """Run generations on this device's slots until ``min_finished`` of them finish, or
    for at most ``max_steps`` generations.

    Also returns the slot-generations this device evaluated (``[1]``, for utilisation).
    """
    start = s.active.sum()

    def cond(carry):
        left = carry[0].active.sum()
        return (left > 0) & (start - left < min_finished) & (carry[1] < max_steps)

    def body(carry):
        new, computed = _generation(search, params, carry[0], chunk, block)
        return new, carry[1] + 1, carry[2] + computed

    s, _, computed = jax.lax.while_loop(cond, body, (s, jnp.int32(0), jnp.int32(0)))
    return s, computed[None]


def _load_local(search: Search, s: Slots, params, mask, keys, problems) -> Slots:
    return _select(mask, _fresh(search, params, keys, problems, mask), s)


def _view(strategy: Strategy, s: Slots) -> tuple:
    best = jax.vmap(strategy.best)(s.state)
    genes = jnp.where(s.found[:, None], s.adv_genes, best)
    return s.active, s.found, s.evaluated, genes, s.first_hit


def _select(mask, new, old):
    """Per slot: ``new`` where ``mask`` is set, else ``old``."""
    return jax.tree.map(
        lambda n, o: jnp.where(mask.reshape(mask.shape + (1,) * (o.ndim - 1)), n, o), new, old)


@memoize(8)
def _programs(search: Search, mesh: Mesh, chunk: int, block: int):
    """Jitted (evolve, load, view, fresh, place), cached so repeated runs do not
    recompile; ``evolve`` evaluates ``chunk`` slots and at most ``block`` candidates of
    each per call (``_evaluate``)."""
    shard = functools.partial(jax.shard_map, mesh=mesh, check_vma=False)
    evolve = shard(functools.partial(_evolve_local, search, chunk, block),
                   in_specs=(P(AXIS), P(), P(), P()), out_specs=(P(AXIS), P(AXIS)))
    load = shard(functools.partial(_load_local, search),
                 in_specs=(P(AXIS), P(), P(AXIS), P(AXIS), P(AXIS)), out_specs=P(AXIS))
    fresh = shard(functools.partial(_fresh, search),
                  in_specs=(P(), P(AXIS), P(AXIS), P(AXIS)), out_specs=P(AXIS))
    place = shard(_select, in_specs=(P(AXIS), P(AXIS), P(AXIS)), out_specs=P(AXIS))
    return (jax.jit(evolve, donate_argnums=0), jax.jit(load, donate_argnums=0),
            jax.jit(functools.partial(_view, search.strategy)), jax.jit(fresh),
            jax.jit(place, donate_argnums=2))


# The evolve program compiled ahead of time per (search, mesh, slot count, argument
# types), with its measured compile time in seconds.
_EXECUTABLES: dict = registered({})
MAX_EXECUTABLES = 32


def _signature(tree) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((a.shape, a.dtype, a.sharding) for a in leaves)


_LOCK = threading.Lock()
MAX_STEPS = 2**31 - 1  # evolve's default: no limit on the generations per call
_KEY_LOCKS: dict = registered({})


def _compiled_evolve(search: Search, mesh: Mesh, chunk: int, block: int, slots, params):
    """The evolve program for these slots, compiled once even when asked for from two
    threads at a time (the tail builds smaller engines on a background thread)."""
    key = (search, mesh, slots.key.shape[0], chunk, block, _signature(slots), _signature(params))
    with _LOCK:
        lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with lock:
        if key not in _EXECUTABLES:
            t0 = time.perf_counter()
            exe = _programs(search, mesh, chunk, block)[0].lower(slots, params, jnp.int32(1),
                                                   jnp.int32(1)).compile()
            with _LOCK:
                while len(_EXECUTABLES) >= MAX_EXECUTABLES:
                    _KEY_LOCKS.pop(_EXECUTABLES.pop(next(iter(_EXECUTABLES)))[2], None)
                _EXECUTABLES[key] = exe, time.perf_counter() - t0, key
        exe, seconds, _ = _EXECUTABLES[key]
    return exe, seconds


def compile_seconds(search: Search, mesh: Mesh, num_slots: int) -> float | None:
    """The measured compile time of ``search`` at ``num_slots`` slots, None if not compiled."""
    times = [v[1] for k, v in list(_EXECUTABLES.items()) if k[:3] == (search, mesh, num_slots)]
    return times[0] if times else None
