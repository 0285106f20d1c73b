"""Training checkpoints: every state leaf as msgpack plus a JSON meta record, atomic."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from jaxattack.data.files import write_atomic

from .steps import TrainState


def _to_host(leaf):
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return {"key_data": np.asarray(jax.random.key_data(leaf)), "impl": str(leaf.dtype)}
    return np.asarray(leaf)


def save_checkpoint(path: Path, state: TrainState, meta: dict) -> None:
    """msgpack of every state leaf + a JSON meta record, written atomically."""
    leaves = jax.tree.leaves(state)
    blob = serialization.msgpack_serialize(
        {"meta": json.dumps(meta), "leaves": {str(i): _to_host(x) for i, x in enumerate(leaves)}}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, blob)


def load_checkpoint(path: Path, template: TrainState) -> tuple[TrainState, dict]:
    raw = serialization.msgpack_restore(path.read_bytes())
    leaves, treedef = jax.tree.flatten(template)
    stored = raw["leaves"]
    if len(stored) != len(leaves):
        raise ValueError(f"checkpoint {path} has {len(stored)} arrays, expected {len(leaves)}")
    out = []
    for i, ref in enumerate(leaves):
        x = stored[str(i)]
        if isinstance(x, dict):  # a PRNG key
            x = jax.random.wrap_key_data(jnp.asarray(x["key_data"]))
        elif np.shape(x) != np.shape(ref):
            raise ValueError(f"checkpoint {path}: array {i} has shape {np.shape(x)}, "
                             f"expected {np.shape(ref)}")
        else:
            x = jnp.asarray(x, ref.dtype)
        out.append(x)
    return jax.tree.unflatten(treedef, out), json.loads(raw["meta"])


