"""Entry points for models from other frameworks (Keras 3, TensorFlow SavedModel, ONNX,
PyTorch), each returning a :class:`~jaxattack.Classifier` with its input convention
inside ``apply_fn``. The frameworks are imported only when one of these is called.

    models.from_file("net.onnx", mean="imagenet", std="imagenet")   # by file type
    models.from_keras("net.keras", input_scale=255)
    models.from_saved_model("export/")
    models.from_onnx("net.onnx", mean="cifar10", std="cifar10")
    models.from_torch(module, mean="cifar10", std="cifar10")

The keywords every route takes (``input_scale``, ``mean``, ``std``, ``layout``,
``outputs``, ``num_classes``, ``class_names``, ``name``, ``check``, ``check_images``,
``check_labels``) are declared and documented once, in
:class:`jaxattack.models.imported.Options`; each route's own keywords are in its
module. See docs/your_own_model.md.
"""

from __future__ import annotations

import os
from pathlib import Path

from .conventions import ConventionError, ModelImportError

__all__ = ["ConventionError", "ModelImportError", "from_file", "from_keras", "from_onnx",
           "from_saved_model", "from_torch", "model_file_kind"]

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
TORCH_SUFFIXES = (".pt", ".pth", ".pt2")


def from_keras(model_or_path, **conventions):
    """A Keras 3 model (JAX backend) or ``.keras`` file; see ``jaxattack.models.keras``."""
    from .keras import from_keras as f

    return f(model_or_path, **conventions)


def from_saved_model(path, **conventions):
    """A TensorFlow SavedModel folder via tf2jax; see ``jaxattack.models.saved_model``."""
    from .saved_model import from_saved_model as f

    return f(path, **conventions)


def from_onnx(model_or_path, **conventions):
    """An ``.onnx`` file or ``onnx.ModelProto``; see ``jaxattack.models.onnx``."""
    from .onnx import from_onnx as f

    return f(model_or_path, **conventions)


def from_torch(module, **conventions):
    """A torch module through ``jax.pure_callback``; see ``jaxattack.models.torch``."""
    from .torch import from_torch as f

    return f(module, **conventions)


def model_file_kind(path: str | os.PathLike) -> str | None:
    """``"keras"``, ``"saved_model"``, ``"onnx"``, ``"torch"`` or None, from the path."""
    from .saved_model import is_saved_model

    p = Path(path)
    if p.is_dir():
        return "saved_model" if is_saved_model(p) else None
    suffix = p.suffix.lower()
    if suffix in KERAS_SUFFIXES:
        return "keras"
    if suffix == ".onnx":
        return "onnx"
    if suffix in TORCH_SUFFIXES:
        return "torch"
    return None


def from_file(path: str | os.PathLike, **conventions):
    """The model in ``path`` as a Classifier, by its type: a ``.keras``/``.h5`` file
    (:func:`from_keras`), a SavedModel folder (:func:`from_saved_model`), an ``.onnx``
    file (:func:`from_onnx`), or a TorchScript ``.pt``/``.pth`` or ``torch.export``
    ``.pt2`` file (:func:`from_torch`). ``conventions`` go to that importer.

    Raises FileNotFoundError for a missing path and :class:`ModelImportError` for a
    file that is not a model.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    kind = model_file_kind(p)
    conventions.setdefault("name", p.stem if p.is_file() else p.name)
    if kind == "keras":
        return from_keras(p, **conventions)
    if kind == "saved_model":
        return from_saved_model(p, **conventions)
    if kind == "onnx":
        return from_onnx(p, **conventions)
    if kind == "torch":
        return from_torch(_load_torch_file(p), **conventions)
    what = "a folder without saved_model.pb" if p.is_dir() else f"a {p.suffix or 'suffixless'} file"
    raise ModelImportError(
        f"{p} is {what}: jaxattack imports .keras/.h5 (Keras 3), a SavedModel folder, "
        f".onnx, TorchScript .pt/.pth and torch.export .pt2 files")


def _load_torch_file(p: Path):
    from .torch import _import_torch

    torch = _import_torch()
    if p.suffix.lower() == ".pt2":
        try:
            return torch.export.load(str(p)).module()
        except Exception as e:
            raise ModelImportError(f"{p} is not a torch.export program: {e}") from e
    try:
        return torch.jit.load(str(p), map_location="cpu")
    except Exception as e:
        raise ModelImportError(
            f"{p} is not a TorchScript module ({type(e).__name__}); a state_dict needs its "
            f"module class: build the module in Python and call models.from_torch(module)"
        ) from e
