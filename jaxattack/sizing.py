"""How many slots: the default slot count (candidates per device, fewer when the
evaluation function's memory estimate would not fit the device's budget), and in the
tail the ladder of smaller slot counts with the rule for when moving to one pays."""

from __future__ import annotations

import os

import jax
from jax.sharding import Mesh

from jaxattack.sharding import round_up

# Candidates per device in one evaluation when the batch size is left to us. On XLA:CPU
# one population (400 images) is already as fast per image as any larger batch, and one
# slot per device never computes for a finished problem (benchmarks/README.md).
AUTO_CANDIDATES_PER_DEVICE = {"cpu": 400}
AUTO_CANDIDATES_PER_ACCELERATOR = 32768


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
