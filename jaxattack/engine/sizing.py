"""How many slots: the default slot count (candidates per device, fewer when the
evaluation function's memory estimate would not fit the device's budget), and in the
tail the ladder of smaller slot counts with the rule for when moving to one pays."""

from __future__ import annotations

import os

import jax
from jax.sharding import Mesh

from jaxattack.engine.sharding import round_up

# Candidates per device in one evaluation when the batch size is left to us. On XLA:CPU
# one population (400 images) is already as fast per image as any larger batch, and one
# slot per device never computes for a finished problem (benchmarks/README.md).
AUTO_CANDIDATES_PER_DEVICE = {"cpu": 400}
AUTO_CANDIDATES_PER_ACCELERATOR = 32768


# The fewest candidates one evaluation call needs for a device to run at full speed per
# candidate. Where an engine holds more, its program evaluates the slots in chunks of
# about this many candidates, active slots first, and skips the chunks whose problems
# have all finished, so a draining queue spends no forward pass on finished problems
# (XLA:CPU: a forward of 20 images runs about as fast per image as one of 400, the
# sparse forward faster; benchmarks/README.md). Platforms not named evaluate whole
# engines and move the tail to smaller ones instead (``ladder``).
CHUNK_CANDIDATES = {"cpu": 20}

# The most candidates of one slot that one evaluation call takes; a larger population is
# evaluated in equal parts of at most this many, one after the other. On XLA:CPU the
# paper's DE ran 1.05-1.30x faster in blocks of 50 than with its 400 candidates in one
# call, for every zoo model at k = 1 and 3 (its maps stay in the caches;
# benchmarks/blocks.py, benchmarks/README.md). Platforms not named take a whole
# population per call.
BLOCK_CANDIDATES = {"cpu": 50}


def default_block(mesh: Mesh, population: int) -> int:
    """Candidates of one slot per evaluation call (``BLOCK_CANDIDATES``, else the whole
    population)."""
    return BLOCK_CANDIDATES.get(mesh.devices.flat[0].platform, population)


def default_chunk(mesh: Mesh, population: int, num_slots: int) -> int:
    """Slots per evaluation call: the fewest holding ``CHUNK_CANDIDATES`` candidates that
    divide a device's slots (all of them where the platform is not listed)."""
    per = num_slots // mesh.devices.size
    want = CHUNK_CANDIDATES.get(mesh.devices.flat[0].platform)
    if want is None:
        return per
    least = max(1, -(-want // population))
    return next(d for d in range(least, per + 1) if per % d == 0) if least < per else per


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


def ladder(num_slots: int, devices: int) -> list[int]:
    """The slot counts the tail may shrink to: ``devices`` times 1, 2, 3, 4, 6, 8, 12, 16,
    ... (each at most 1.5x the one below it, past 2), up to ``num_slots``."""
    per, m, out = num_slots // devices, 1, set()
    while m < per:
        out |= {m, 3 * m // 2} if m > 1 else {1}
        m *= 2
    return sorted(d * devices for d in out | {per} if d <= per)


# How often (seconds) the tail returns to the host to see whether the smaller engine it
# waits for has been built.
POLL_S = 0.5


def _tail_sizes(active: int, current: int, sizes: list[int], policy, remaining: int,
                step_s: float | None, build_s) -> list[int]:
    """The slot counts worth building for ``active`` problems in ``current`` slots: the
    smallest size that holds them and the one below it (where the next move goes), each
    smaller than ``current``. ``True``: all of them; ``"auto"``: those whose saving (the
    slot-generations not computed along, at most ``remaining`` generations at the
    measured ``step_s`` seconds each) outweighs twice ``build_s(size)`` (the compile
    time, 0 when that size is compiled already); ``False``: none."""
    fit = next(n for n in sizes if n >= active)
    below = [n for n in sizes if n < fit][-1:]
    wanted = [n for n in [fit, *below] if n < current]
    if not policy or policy is True:
        return wanted if policy else []
    if step_s is None:
        return []
    return [n for n in wanted if (current - n) * remaining * step_s >= 2 * build_s(n)]
