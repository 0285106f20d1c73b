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

This module is the host side (``Engine``, ``run``); the device side (``Search``, the
slots' state, the jitted loop) is ``slots.py`` and the slot counts ``sizing.py``, whose
public names are importable from here too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from jaxattack.engine.sharding import AXIS
from jaxattack.engine.sizing import (
    AUTO_CANDIDATES_PER_ACCELERATOR,
    AUTO_CANDIDATES_PER_DEVICE,
    POLL_S,
    _tail_sizes,
    default_block,
    default_chunk,
    default_slots,
    ladder,
    memory_budget,
)
from jaxattack.engine.slots import (
    MAX_EXECUTABLES,
    MAX_STEPS,
    Evaluation,
    Evaluator,
    Search,
    Slots,
    SlotView,
    _compiled_evolve,
    _programs,
    compile_seconds,
)

__all__ = ["AUTO_CANDIDATES_PER_ACCELERATOR", "AUTO_CANDIDATES_PER_DEVICE", "MAX_EXECUTABLES",
           "Engine", "Evaluation", "Evaluator", "OnFinished", "RunStats", "Search", "SlotView",
           "Slots", "compile_seconds", "default_block", "default_chunk", "default_slots",
           "ladder", "memory_budget", "run"]


@dataclasses.dataclass
class RunStats:
    """Work of one ``run``: slot-generations spent on searching problems (useful) and
    computed in all (useful plus finished or empty slots carried along)."""

    problems: int = 0
    useful: int = 0
    computed: int = 0
    seconds: float = 0.0  # the queue's wall time, from the first engine built on
    build_seconds: float = 0.0  # building (compiling) the first engine, before ``seconds``
    resized: int = 0  # times the tail moved to an engine with fewer slots

    @property
    def utilisation(self) -> float:
        return self.useful / max(self.computed, 1)


# ----------------------------------------------------------------------------- host side

def _take(tree, rows):
    return jax.tree.map(lambda a: a[rows], tree)


class Engine:
    """Compiled search over ``num_slots`` slots on ``mesh``; state lives on the devices.

    ``template`` is a batch of problems (any number of rows) giving their structure.
    ``chunk``: slots per evaluation call on each device (``default_chunk``); below a
    device's slot count, finished problems' chunks are skipped. ``block``: the most
    candidates of a slot per call (``default_block``).
    """

    def __init__(self, search: Search, params, mesh: Mesh, num_slots: int, template,
                 chunk: int | None = None, block: int | None = None):
        n_dev = mesh.devices.size
        if num_slots % n_dev:
            raise ValueError(f"num_slots={num_slots} is not a multiple of {n_dev} devices")
        per = num_slots // n_dev
        chunk = default_chunk(mesh, search.population, num_slots) if chunk is None else chunk
        if chunk < 1 or per % min(chunk, per):
            raise ValueError(f"chunk={chunk} does not divide {per} slots per device")
        self.search, self.mesh, self.num_slots = search, mesh, num_slots
        self.chunk = min(chunk, per)
        self.block = default_block(mesh, search.population) if block is None else block
        self.sharding = NamedSharding(mesh, P(AXIS))
        self.params = jax.device_put(params, NamedSharding(mesh, P()))
        self._evolve, self._load, self._view, fresh, self._place = _programs(search, mesh,
                                                                             self.chunk, self.block)
        zeros = jax.tree.map(lambda a: np.zeros((num_slots, *a.shape[1:]), a.dtype), template)
        self.slots = fresh(self.params, *self._put(np.zeros((num_slots, 2), np.uint32), zeros,
                                                   np.zeros(num_slots, bool)))
        self._exe, self.compile_seconds = _compiled_evolve(search, mesh, self.chunk, self.block,
                                                           self.slots, self.params)

    def _put(self, *trees):
        return jax.device_put(trees, self.sharding)

    def load(self, mask: np.ndarray, keys: np.ndarray, problems) -> None:
        """Put fresh problems (``[num_slots, ...]`` rows) into the slots where ``mask`` is set."""
        self.slots = self._load(self.slots, self.params, *self._put(mask, keys, problems))

    def evolve(self, min_finished: int, max_steps: int = MAX_STEPS) -> tuple[SlotView, int]:
        """Run until every device has seen ``min_finished`` slots finish (or none is active),
        or for ``max_steps`` generations.

        Returns the slots' view and the slot-generations computed.
        """
        self.slots, computed = self._exe(self.slots, self.params, jnp.int32(min_finished),
                                         jnp.int32(max_steps))
        view = SlotView(*jax.device_get(self._view(self.slots)))
        return view, int(np.asarray(computed).sum())

    def take(self, other: Engine, rows: np.ndarray) -> Engine:
        """``other`` (a fresh engine with fewer slots) holding these slots' ``rows`` first,
        with their whole search state: a problem's result does not depend on where it
        runs."""
        picked = np.zeros(other.num_slots, np.int64)
        picked[: len(rows)] = rows
        state = jax.tree.map(lambda a: np.asarray(a)[picked], jax.device_get(self.slots))
        mask = np.arange(other.num_slots) < len(rows)
        other.slots = other._place(*other._put(mask), other._put(state)[0], other.slots)
        return other


def _built(search: Search, params, mesh: Mesh, num_slots: int, template,
           block: int) -> Engine:
    """A fresh engine with its view program compiled too (what the tail moves into)."""
    other = Engine(search, params, mesh, num_slots, template, chunk=num_slots, block=block)
    jax.block_until_ready(other._view(other.slots))
    return other


class _Tail:
    """Engines of the ladder's smaller slot counts, built one at a time on a background
    thread while the current engine computes, so that the tail moves without stopping
    to compile (XLA compiles on the host, beside the device's work)."""

    def __init__(self, search: Search, params, mesh: Mesh, template, block: int):
        self._args = search, params, mesh, template, block
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="jaxattack-tail")
        self._builds: dict[int, Future] = {}

    def want(self, sizes: list[int]) -> None:
        """Build these slot counts, in this order; drop queued builds of others."""
        for n, build in list(self._builds.items()):
            if n not in sizes and build.cancel():
                del self._builds[n]
        for n in sizes:
            if n not in self._builds:
                search, params, mesh, template, block = self._args
                self._builds[n] = self._pool.submit(_built, search, params, mesh, n, template,
                                                    block)

    def built(self, size: int, wait: bool) -> Engine | None:
        """The engine of ``size`` slots if it is built (or, with ``wait``, once it is)."""
        build = self._builds.get(size)
        if build is None or not (wait or build.done()):
            return None
        del self._builds[size]
        return build.result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


OnFinished = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]


def run(search: Search, params, keys: np.ndarray, problems, on_finished: OnFinished, *,
        mesh: Mesh, num_slots: int, progress: bool = False, desc: str | None = None,
        refill: bool = True, shrink: bool | str = "auto", chunk: int | None = None,
        block: int | None = None, counted: np.ndarray | None = None) -> RunStats:
    """Search a queue of problems (rows of ``keys`` and of every leaf of ``problems``).

    Slots are refilled as problems finish, until the queue drains. For each batch of
    finished problems, ``on_finished(rows, genes, found, generations, first_hit)`` is
    called: ``generations`` run after the initial population, and ``first_hit`` the
    generation of the first success (0 = the initial population; -1 if none). The
    progress bar's ``hits`` are the searches' own successes among the problems that
    ``counted`` (a ``[problems]`` bool mask; default all) marks, out of those finished:
    the attacks leave out the images the model already gets wrong, as their summaries
    do. ``refill=False`` runs fixed
    batches instead (each batch until its last problem finishes; for comparison).

    No forward pass is spent on finished problems in the tail either. Where the engine
    evaluates its slots in chunks (``chunk`` slots per call on each device, by default
    ``default_chunk``: XLA:CPU), its program skips the chunks whose problems have all
    finished. Where it evaluates whole engines (``chunk`` >= the slots per device, the
    default on accelerators), ``shrink`` moves the problems still searching into an
    engine with fewer slots (``ladder``) once the queue has drained. The smaller engines
    are built (compiled) on a background thread while the current one computes, and the
    move happens once one is built: ``"auto"`` builds those whose saving outweighs
    compiling them, ``True`` every smaller size that fits (and waits for it), ``False``
    none. Results are the same either way (per-problem
    keys); only the order of the ``on_finished`` calls changes. ``block``: the most
    candidates of one slot per evaluation call (``default_block``).
    """
    total, S = len(keys), num_slots
    stats = RunStats(problems=total)
    if not total:
        return stats
    t_build = time.perf_counter()
    engine = Engine(search, params, mesh, S, problems, chunk, block)
    stats.build_seconds = time.perf_counter() - t_build
    devices = mesh.devices.size
    if engine.chunk < S // devices:
        shrink = False  # the program skips finished chunks itself
    sizes = ladder(S, devices)
    in_slot = np.full(S, -1)
    evaluated = np.zeros(S, np.int64)
    queued = hits = seen = 0
    counted = np.ones(total, bool) if counted is None else np.asarray(counted, bool)
    # the tail's smaller engines, built on demand
    tail = _Tail(search, params, mesh, problems, engine.block) if shrink else None
    bar = tqdm(total=total, unit="problem", disable=not progress, file=sys.stderr, desc=desc,
               dynamic_ncols=True, smoothing=0.1)
    t0 = time.perf_counter()
    step_s = None  # measured seconds per slot-generation
    with bar, contextlib.closing(tail) if tail else contextlib.nullcontext():
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
            steps = MAX_STEPS
            if queued == total and tail and left.size:  # the tail: fewer slots?
                remaining = search.strategy.generations + 1 - int(evaluated[left].min())
                wanted = _tail_sizes(left.size, S, sizes, shrink, remaining, step_s,
                                     lambda n, c=engine.compile_seconds: 0.0 if
                                     compile_seconds(search, mesh, n) is not None else c)
                tail.want(wanted)
                size = next(n for n in sizes if n >= left.size)
                other = tail.built(size, wait=shrink is True) if size < S else None
                if other is not None:
                    engine = engine.take(other, left)
                    in_slot = np.r_[in_slot[left], np.full(size - left.size, -1)]
                    evaluated = np.r_[evaluated[left], np.zeros(size - left.size, np.int64)]
                    stats.resized += 1
                    S = size
                elif size in wanted:  # being built: come back for it in about POLL_S
                    steps = max(1, int(POLL_S / (step_s * S)))
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
            view, computed = engine.evolve(wait, steps)
            step_s = (time.perf_counter() - t_step) / max(computed, 1)
            evaluated = view.evaluated.astype(np.int64)
            stats.computed += computed
            done = np.flatnonzero((in_slot >= 0) & ~view.active)
            if done.size:
                on_finished(in_slot[done], view.genes[done], view.found[done],
                            evaluated[done] - 1, view.first_hit[done].astype(np.int64))
            mine = counted[in_slot[done]]
            hits += int((view.found[done] & mine).sum())
            seen += int(mine.sum())
            in_slot[done] = -1
            stats.useful += int(evaluated[done].sum())
            bar.update(done.size)
            if progress and bar.n:  # the work of problems still searching counts too
                live = stats.useful + int(evaluated[in_slot >= 0].sum())
                rate = live * search.population / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(hits=f"{hits}/{seen}", q_s=f"{rate:,.0f}",
                                util=f"{live / max(stats.computed, 1):.0%}", refresh=False)
    stats.seconds = time.perf_counter() - t0
    return stats
