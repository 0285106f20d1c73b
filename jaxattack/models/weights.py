"""Weight files: flax msgpack of a pure state dict (no pickle), checked by sha256."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import jax
import numpy as np
from flax import nnx, serialization

from jaxattack.data.files import write_atomic

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "assets" / "weights"


class WeightsError(RuntimeError):
    """A weight file that is missing, corrupt or does not match its model."""


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(path: str | os.PathLike, state: nnx.State, dtype: str = "float32") -> str:
    """Write ``state`` (Params + BatchStats) as msgpack, atomically; return its sha256.

    Floating arrays are stored as ``dtype`` (``"float16"`` halves the file).
    """
    pure = nnx.to_pure_dict(state)

    def cast(x):
        x = np.asarray(x)
        return x.astype(dtype) if np.issubdtype(x.dtype, np.floating) else x

    blob = serialization.msgpack_serialize(_map(cast, pure))
    return sha256(write_atomic(path, blob))


def restore(path: str | os.PathLike, state: nnx.State, expected_sha256: str | None) -> nnx.State:
    """Read a weight file into a copy of ``state``; check sha256, names and shapes."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file {path} not found")
    if expected_sha256 is not None:
        got = sha256(path)
        if got != expected_sha256:
            raise WeightsError(
                f"weight file {path} is corrupt or was changed: sha256 {got} does not match "
                f"the registry's {expected_sha256}"
            )
    try:
        pure = serialization.msgpack_restore(path.read_bytes())
    except Exception as e:
        raise WeightsError(f"weight file {path} is not a valid msgpack state: {e}") from e
    want = nnx.to_pure_dict(state)
    _check_same(want, pure, str(path))
    pure = _map(lambda x, ref: np.asarray(x).astype(ref.dtype), pure, want)
    out = jax.tree.map(lambda x: x, state)  # a copy with fresh Variables
    nnx.replace_by_pure_dict(out, pure)
    return out


def _map(fn, tree, *rest):
    if isinstance(tree, dict):
        return {k: _map(fn, tree[k], *(r[k] for r in rest)) for k in tree}
    return fn(tree, *rest)


def _check_same(want, got, where, prefix=""):
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(map(str, want)) != set(map(str, got)):
            raise WeightsError(f"{where}: parameter names differ from the model at {prefix or '/'}")
        for k in want:
            _check_same(want[k], got[k], where, f"{prefix}/{k}")
    elif tuple(want.shape) != np.shape(got):
        raise WeightsError(
            f"{where}: {prefix} has shape {np.shape(got)}, the model expects {tuple(want.shape)}"
        )
