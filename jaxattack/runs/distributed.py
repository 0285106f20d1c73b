"""Several processes (hosts) with ``jax.distributed``.

Problems are independent, so processes share no arrays: each attacks its own slice of
the images on its local devices (see ``sweep.run``) and writes its own store shard.
``jax.distributed`` provides the process identity, and a barrier at the end.
"""

from __future__ import annotations

import jax


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *,
               cpu_collectives: str | None = None) -> tuple[int, int]:
    """Join the job; returns ``(process_index, process_count)``.

    With no arguments JAX reads the cluster from the environment (Slurm, TPU VMs,
    ``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID``...).
    ``cpu_collectives="gloo"`` sets ``jax_cpu_collectives_implementation``, which CPU-only
    jobs need for the end-of-job barrier (the CLI passes it); otherwise ``jax.config`` is
    left as the caller set it.
    """
    given = [a is not None for a in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError("give all of coordinator, num_processes and process_id, or none")
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    if all(given):
        jax.distributed.initialize(coordinator, num_processes, process_id)
    else:
        jax.distributed.initialize()
    return jax.process_index(), jax.process_count()


def barrier(name: str = "jaxattack") -> None:
    """Wait for every process (no-op for one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
