"""The batched search engine: image-agnostic slots, one jitted loop, continuous batching.

The engine knows nothing of images. It is given a ``Search``: a strategy (what to try
next, ``jaxattack.strategies``) and an evaluation function (how good each candidate
is), and a queue of *problems* (any pytree of arrays with a leading problem axis, plus
one PRNG key per problem). A fixed number of *slots* each hold one problem with its
search state. One generation asks every slot's strategy for candidates, evaluates all
of them in a single call, and tells the strategies the fitness. The generations run
inside one jitted ``lax.while_loop`` that returns to the host as soon as enough slots
have finished, so the host can hand their results over and refill them (continuous
batching) without recompiling. Slots are sharded over a 1-D device mesh with
``shard_map``; each device runs its own loop on its own slots, so a generation needs no
communication.

Randomness is per problem: the ``g``-th evaluated generation of a problem (``g = 0``
is the initial population) uses ``fold_in(problem_key, g)``, so a result never
depends on which slot, batch or device ran it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from jaxattack.caches import memoize, registered
from jaxattack.sharding import AXIS, round_up
from jaxattack.strategies import Strategy

# Candidates per device in one evaluation when the batch size is left to us. On XLA:CPU
# one population (400 images) is already as fast per image as any larger batch, and one
# slot per device never computes for a finished problem (benchmarks/README.md).
AUTO_CANDIDATES_PER_DEVICE = {"cpu": 400}
AUTO_CANDIDATES_PER_ACCELERATOR = 32768


class Evaluation(NamedTuple):
    """What an evaluation function returns for ``S`` slots of ``N`` candidates."""

    fitness: jax.Array  # f32 [S, N], minimised
    hit: jax.Array  # bool [S, N]: the candidate reaches the goal (a success)
    stop: jax.Array  # bool [S]: the problem is done (early stop)


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


@dataclasses.dataclass
class RunStats:
    """Work of one ``run``: slot-generations spent on searching problems (useful) and
    computed in all (useful plus finished or empty slots carried along)."""

    problems: int = 0
    useful: int = 0
    computed: int = 0
    seconds: float = 0.0
    resized: int = 0  # times the tail moved to an engine with fewer slots

    @property
    def utilisation(self) -> float:
        return self.useful / max(self.computed, 1)


def memory_budget(device: jax.Device) -> int:
    """Bytes one device may spend on a batch of candidates: half an accelerator's memory
    (``memory_stats``; 16 GiB when it says nothing), a quarter of the host's for CPUs."""
    if device.platform == "cpu":
        host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return host // 4 // max(1, len(jax.local_devices(backend="cpu")))
    stats = device.memory_stats() or {}
    return int(stats.get("bytes_limit", 16 << 30)) // 2


def default_slots(population: int, num_problems: int, mesh: Mesh,
                  batch_size: int | None = None, bytes_per_candidate: int = 0) -> int:
    """Slots for ``batch_size`` problems, or the per-platform default, over ``mesh``.

    The default evaluates ``AUTO_CANDIDATES_PER_DEVICE`` candidates per device (one
    population of 400 on a CPU, 32,768 on an accelerator), fewer when that many would
    not fit the device's ``memory_budget`` at ``bytes_per_candidate`` (the evaluation
    function's estimate: large images, large models, cached activations); at least one
    slot per device, never more slots than problems.
    """
    devices = mesh.devices.size
    if batch_size is not None:
        return round_up(batch_size, devices)
    device = mesh.devices.flat[0]
    candidates = AUTO_CANDIDATES_PER_DEVICE.get(device.platform, AUTO_CANDIDATES_PER_ACCELERATOR)
    if bytes_per_candidate:
        candidates = min(candidates, memory_budget(device) // bytes_per_candidate)
    per_device = max(1, candidates // population)
    return min(per_device * devices, round_up(num_problems, devices))


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


def _generation(search: Search, params, s: Slots) -> Slots:
    """One generation for every slot (inactive slots are computed but left unchanged)."""
    strat = search.strategy
    keys = jax.vmap(jax.random.fold_in)(s.key, s.evaluated)
    cands, pending = jax.vmap(strat.ask)(keys, s.state, s.evaluated)  # [S, N, D]
    ev = search.evaluate(params, s.problem, cands)
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
    return _select(s.active, new, s)


def _evolve_local(search: Search, s: Slots, params, min_finished):
    """Run generations on this device's slots until ``min_finished`` of them finish.

    Also returns how many generations this device ran (``[1]``, for utilisation).
    """
    start = s.active.sum()

    def cond(carry):
        left = carry[0].active.sum()
        return (left > 0) & (start - left < min_finished)

    def body(carry):
        return _generation(search, params, carry[0]), carry[1] + 1

    return jax.lax.while_loop(cond, body, (s, jnp.zeros((1,), jnp.int32)))


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
def _programs(search: Search, mesh: Mesh):
    """Jitted (evolve, load, view, fresh), cached so repeated runs do not recompile."""
    shard = functools.partial(jax.shard_map, mesh=mesh, check_vma=False)
    evolve = shard(functools.partial(_evolve_local, search),
                   in_specs=(P(AXIS), P(), P()), out_specs=(P(AXIS), P(AXIS)))
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


def _compiled_evolve(search: Search, mesh: Mesh, slots, params):
    key = (search, mesh, slots.key.shape[0], _signature(slots), _signature(params))
    if key not in _EXECUTABLES:
        while len(_EXECUTABLES) >= MAX_EXECUTABLES:
            _EXECUTABLES.pop(next(iter(_EXECUTABLES)))
        t0 = time.perf_counter()
        exe = _programs(search, mesh)[0].lower(slots, params, jnp.int32(1)).compile()
        _EXECUTABLES[key] = exe, time.perf_counter() - t0
    return _EXECUTABLES[key]


def compile_seconds(search: Search, mesh: Mesh, num_slots: int) -> float | None:
    """The measured compile time of ``search`` at ``num_slots`` slots, None if not compiled."""
    times = [v[1] for k, v in _EXECUTABLES.items() if k[:3] == (search, mesh, num_slots)]
    return times[0] if times else None


# ----------------------------------------------------------------------------- host side

def _take(tree, rows):
    return jax.tree.map(lambda a: a[rows], tree)


class Engine:
    """Compiled search over ``num_slots`` slots on ``mesh``; state lives on the devices.

    ``template`` is a batch of problems (any number of rows) giving their structure.
    """

    def __init__(self, search: Search, params, mesh: Mesh, num_slots: int, template):
        n_dev = mesh.devices.size
        if num_slots % n_dev:
            raise ValueError(f"num_slots={num_slots} is not a multiple of {n_dev} devices")
        self.search, self.mesh, self.num_slots = search, mesh, num_slots
        self.sharding = NamedSharding(mesh, P(AXIS))
        self.params = jax.device_put(params, NamedSharding(mesh, P()))
        self._evolve, self._load, self._view, fresh, self._place = _programs(search, mesh)
        zeros = jax.tree.map(lambda a: np.zeros((num_slots, *a.shape[1:]), a.dtype), template)
        self.slots = fresh(self.params, *self._put(np.zeros((num_slots, 2), np.uint32), zeros,
                                                   np.zeros(num_slots, bool)))
        self._exe, self.compile_seconds = _compiled_evolve(search, mesh, self.slots,
                                                           self.params)

    def _put(self, *trees):
        return jax.device_put(trees, self.sharding)

    def load(self, mask: np.ndarray, keys: np.ndarray, problems) -> None:
        """Put fresh problems (``[num_slots, ...]`` rows) into the slots where ``mask`` is set."""
        self.slots = self._load(self.slots, self.params, *self._put(mask, keys, problems))

    def evolve(self, min_finished: int) -> tuple[SlotView, int]:
        """Run until every device has seen ``min_finished`` slots finish (or none is active).

        Returns the slots' view and the slot-generations computed.
        """
        self.slots, steps = self._exe(self.slots, self.params, jnp.int32(min_finished))
        view = SlotView(*jax.device_get(self._view(self.slots)))
        return view, int(np.asarray(steps).sum()) * (self.num_slots // steps.shape[0])

    def moved(self, rows: np.ndarray, num_slots: int, template) -> Engine:
        """A new engine of ``num_slots`` slots holding these slots' ``rows`` first (their
        whole search state: a problem's result does not depend on where it runs)."""
        other = Engine(self.search, self.params, self.mesh, num_slots, template)
        picked = np.zeros(num_slots, np.int64)
        picked[: len(rows)] = rows
        state = jax.tree.map(lambda a: np.asarray(a)[picked], jax.device_get(self.slots))
        mask = np.arange(num_slots) < len(rows)
        other.slots = other._place(*self._put(mask), self._put(state)[0], other.slots)
        return other


OnFinished = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]


def ladder(num_slots: int, devices: int) -> list[int]:
    """The slot counts the tail may shrink to: ``devices`` times 1, 2, 3, 4, 6, 8, 12, 16,
    ... (each at most 1.5x the one below it, past 2), up to ``num_slots``."""
    per, m, out = num_slots // devices, 1, set()
    while m < per:
        out |= {m, 3 * m // 2} if m > 1 else {1}
        m *= 2
    return sorted(d * devices for d in out | {per} if d <= per)


def _tail_size(active: int, current: int, sizes: list[int], policy, remaining: int,
               step_s: float | None, compile_s: float | None) -> int:
    """The slot count to move ``active`` problems to (``current``: stay). ``"auto"`` moves
    only when the slot-generations saved (at most ``remaining`` generations, at the
    measured ``step_s`` seconds per slot-generation) outweigh twice the compile time of
    the smaller program (``compile_s``; 0 when it is compiled already)."""
    size = next(n for n in sizes if n >= active)
    if size >= current or not policy:
        return current
    if policy == "auto" and (step_s is None or
                             (current - size) * remaining * step_s < 2 * (compile_s or 0.0)):
        return current
    return size


def run(search: Search, params, keys: np.ndarray, problems, on_finished: OnFinished, *,
        mesh: Mesh, num_slots: int, progress: bool = False, desc: str | None = None,
        refill: bool = True, shrink: bool | str = "auto") -> RunStats:
    """Search a queue of problems (rows of ``keys`` and of every leaf of ``problems``).

    Slots are refilled as problems finish, until the queue drains. For each batch of
    finished problems, ``on_finished(rows, genes, found, generations, first_hit)`` is
    called: ``generations`` run after the initial population, and ``first_hit`` the
    generation of the first success (0 = the initial population; -1 if none). The
    progress bar's ``hits`` are the searches' own successes. ``refill=False`` runs fixed
    batches instead (each batch until its last problem finishes; for comparison).

    Once the queue has drained, ``shrink`` moves the problems still searching into an
    engine with fewer slots (``ladder``), so that finished problems are not computed
    along: ``"auto"`` when the work saved outweighs compiling the smaller program,
    ``True`` whenever a smaller size fits, ``False`` never. Results are the same either
    way (per-problem keys); only the order of the ``on_finished`` calls changes.
    """
    total, S = len(keys), num_slots
    stats = RunStats(problems=total)
    if not total:
        return stats
    engine = Engine(search, params, mesh, S, problems)
    devices = mesh.devices.size
    sizes = ladder(S, devices)
    in_slot = np.full(S, -1)
    evaluated = np.zeros(S, np.int64)
    queued = hits = 0
    bar = tqdm(total=total, unit="problem", disable=not progress, file=sys.stderr, desc=desc,
               dynamic_ncols=True, smoothing=0.1)
    t0 = time.perf_counter()
    step_s = None  # measured seconds per slot-generation
    with bar:
        while (in_slot >= 0).any() or queued < total:
            S = engine.num_slots
            free = np.flatnonzero(in_slot < 0)[: total - queued]
            if not refill and (in_slot >= 0).any():
                free = free[:0]  # fixed batches: load only into an empty engine
            if free.size:
                rows = np.arange(queued, queued + free.size)
                mask = np.zeros(S, bool)
                mask[free] = True
                place = np.zeros(S, np.int64)
                place[free] = rows
                engine.load(mask, keys[place], _take(problems, place))
                in_slot[free], evaluated[free], queued = rows, 0, queued + free.size
            left = np.flatnonzero(in_slot >= 0)
            if queued == total and shrink and left.size:  # the tail: fewer slots?
                size = next(n for n in sizes if n >= left.size)
                remaining = search.strategy.generations + 1 - int(evaluated[left].min())
                compiled = compile_seconds(search, mesh, size)
                cost = engine.compile_seconds if compiled is None else 0.0
                size = _tail_size(left.size, S, sizes, shrink, remaining, step_s, cost)
                if size < S:
                    engine = engine.moved(left, size, problems)
                    in_slot = np.r_[in_slot[left], np.full(size - left.size, -1)]
                    evaluated = np.r_[evaluated[left], np.zeros(size - left.size, np.int64)]
                    stats.resized += 1
                    S = size
            # Return to the host for a refill once some slots finish; in the tail, once
            # enough have finished for the next smaller engine, or when all have.
            active = int((in_slot >= 0).sum())
            if queued < total and refill:
                wait = max(1, S // devices // 8)
            elif shrink and active > sizes[0]:
                below = max(n for n in sizes if n < active)
                wait = max(1, -(-(active - below) // devices))
            else:
                wait = S // devices
            t_step = time.perf_counter()
            view, computed = engine.evolve(wait)
            step_s = (time.perf_counter() - t_step) / max(computed, 1)
            evaluated = view.evaluated.astype(np.int64)
            stats.computed += computed
            done = np.flatnonzero((in_slot >= 0) & ~view.active)
            if done.size:
                on_finished(in_slot[done], view.genes[done], view.found[done],
                            evaluated[done] - 1, view.first_hit[done].astype(np.int64))
            in_slot[done] = -1
            hits += int(view.found[done].sum())
            stats.useful += int(evaluated[done].sum())
            bar.update(done.size)
            if progress and bar.n:
                rate = stats.useful * search.population / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(hits=f"{hits}/{bar.n}", q_s=f"{rate:,.0f}",
                                util=f"{stats.utilisation:.0%}", refresh=False)
    stats.seconds = time.perf_counter() - t0
    return stats
