"""Device mesh helpers: one mesh axis over which problems (slots) are split."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh

AXIS = "problems"  # the mesh axis that slots are split over


def make_mesh(devices: int | Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over ``devices``: None for all local devices, an int for the first n."""
    local = jax.local_devices()
    if devices is None:
        chosen = local
    elif isinstance(devices, int):
        if not 1 <= devices <= len(local):
            raise ValueError(f"devices={devices}, but only {len(local)} local devices exist")
        chosen = local[:devices]
    else:
        chosen = list(devices)
        if not chosen:
            raise ValueError("devices is an empty list")
    return Mesh(np.array(chosen), (AXIS,))


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
