"""The CIFAR-10 model zoo: ``load(name) -> Classifier`` with shipped, sha256-checked weights.

    from jaxattack import models
    clf = models.load("tiny")                   # trained weights, eval mode
    models.available()                          # names, accuracy, weights shipped or not
    clf = models.from_module(my_nnx_module, num_classes=10)
    clf = models.from_apply_fn(fn, params, num_classes=10, outputs="logits")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ..classifier import Classifier
from . import importers as _importers
from . import weights as _weights
from .registry import ARCHITECTURES, REGISTRY_PATH, build, read_registry
from .weights import WEIGHTS_DIR, WeightsError

__all__ = [
    "ARCHITECTURES", "Classifier", "WeightsError", "available", "build", "from_apply_fn",
    "from_module", "load", "read_registry", "set_compute_dtype",
    # models from other frameworks (issue 18)
    "ConventionError", "ModelImportError", "from_file", "from_keras", "from_onnx",
    "from_saved_model", "from_torch",
]  # fmt: skip

SHIPPED = "shipped"
CIFAR10_SHAPE = (32, 32, 3)


def from_module(
    module: nnx.Module,
    num_classes: int,
    *,
    outputs: str = "logits",
    input_shape: tuple[int, int, int] | None = None,
    class_names: tuple[str, ...] | None = None,
    name: str | None = None,
) -> Classifier:
    """Wrap an NNX module ``module(uint8 NHWC) -> logits`` as a pure Classifier.

    The module is put in eval mode (BatchNorm uses running statistics, dropout is off),
    so an image's output never depends on the rest of its batch. ``params`` is the
    module's ``nnx.Param`` + ``nnx.BatchStat`` state; everything else is closed over.
    """
    if not isinstance(module, nnx.Module):
        raise TypeError(f"from_module needs an flax.nnx.Module, got {type(module).__name__}")
    module.eval()
    graphdef, params, rest = nnx.split(module, (nnx.Param, nnx.BatchStat), ...)

    def apply_fn(params, images):
        out = nnx.merge(graphdef, params, rest)(images)
        low = jnp.issubdtype(out.dtype, jnp.floating) and jnp.finfo(out.dtype).bits < 32
        return out.astype(jnp.float32) if low else out  # e.g. bfloat16 compute

    return Classifier(apply_fn, params, num_classes, outputs=outputs, input_shape=input_shape,
                      class_names=class_names, name=name or type(module).__name__)


def from_apply_fn(apply_fn, params: Any, num_classes: int, *, outputs: str = "probs",
                  **kw) -> Classifier:
    """A Classifier from a pure ``apply_fn(params, uint8 NHWC) -> probs`` (``outputs=
    "logits"`` if it returns logits); the same default as ``Classifier``."""
    return Classifier(apply_fn, params, num_classes, outputs=outputs, **kw)


def load(
    name: str,
    weights: str | os.PathLike | None = SHIPPED,
    *,
    sha256: str | None = None,
    seed: int = 0,
    dtype: str | None = None,
) -> Classifier:
    """A zoo model as a Classifier (logits out, eval mode).

    Args:
      name: one of ``ARCHITECTURES`` (see :func:`available`).
      weights: ``"shipped"`` (default) for the packaged, sha256-checked weights; a path
        to a weight file written by ``jaxattack.train``; or ``None`` for an explicitly
        random initialisation (for tests and training from scratch).
      sha256: expected digest of a weight file given by path (checked when given).
      seed: initialisation seed (only matters with ``weights=None``).
      dtype: compute dtype, e.g. ``"bfloat16"`` for accelerators; parameters stay float32
        and the outputs are float32. ``None``: float32 throughout.
    """
    entry = read_registry().get(name, {})
    names = tuple(entry.get("class_names", ())) or None
    if weights is None:
        module = build(name, len(names) if names else 10, seed)
    else:  # shapes only: the weights replace every value (no random init to compile)
        module = nnx.eval_shape(lambda: build(name, len(names) if names else 10, seed))
    module.eval()
    if weights is not None:
        if isinstance(weights, str) and weights == SHIPPED:
            if not entry:
                raise WeightsError(
                    f"no weights shipped yet for {name!r}; train them with "
                    f"`python -m jaxattack.train --model {name}` or pass weights=None for a "
                    f"random initialisation"
                )
            path, sha256 = WEIGHTS_DIR / entry["file"], entry["sha256"]
            if not path.is_file():
                raise WeightsError(f"the shipped weight file for {name!r} is missing: {path}")
        else:
            path = Path(weights)
        state = nnx.state(module, (nnx.Param, nnx.BatchStat))
        nnx.update(module, _weights.restore(path, state, sha256))
    if dtype is not None:
        set_compute_dtype(module, dtype)
    clf = from_module(module, module_num_classes(module, names), input_shape=CIFAR10_SHAPE,
                      class_names=names, name=name)
    return clf


def set_compute_dtype(module: nnx.Module, dtype) -> nnx.Module:
    """Compute every Conv, Linear and BatchNorm of ``module`` in ``dtype`` (in place).

    Parameters keep their dtype (float32); each layer casts its inputs and parameters.
    """
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"compute dtype must be a float type, got {dtype}")
    for _, layer in nnx.iter_modules(module):
        if isinstance(layer, (nnx.Conv, nnx.Linear, nnx.BatchNorm)):
            layer.dtype = dtype
    return module


def module_num_classes(module: nnx.Module, names) -> int:
    if names:
        return len(names)
    out = jax.eval_shape(module, jax.ShapeDtypeStruct((1, *CIFAR10_SHAPE), "uint8"))
    return int(out.shape[-1])


def available() -> dict[str, dict]:
    """Every architecture: description, params, whether weights ship, recorded accuracy."""
    reg = read_registry()
    out = {}
    for name, (_, desc) in ARCHITECTURES.items():
        entry = reg.get(name)
        shipped = bool(entry) and (WEIGHTS_DIR / entry["file"]).is_file()
        out[name] = {
            "description": desc,
            "weights_shipped": shipped,
            "test_accuracy": entry.get("test_accuracy") if entry else None,
            "sample_accuracy": entry.get("sample_accuracy") if entry else None,
            "params": entry.get("params") if entry else None,
            "note": None if shipped else "no weights shipped yet",
        }
    return out


# Keep REGISTRY_PATH importable for tools that write entries.
_ = REGISTRY_PATH


# Models from other frameworks (Keras 3, TF SavedModel, ONNX, PyTorch): each importer
# loads its framework only when called, so importing jaxattack.models stays light.
ConventionError, ModelImportError = _importers.ConventionError, _importers.ModelImportError
from_file, from_keras, from_onnx = _importers.from_file, _importers.from_keras, _importers.from_onnx
from_saved_model, from_torch = _importers.from_saved_model, _importers.from_torch
