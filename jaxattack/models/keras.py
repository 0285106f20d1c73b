"""Keras 3 models (JAX backend) as jaxattack classifiers.

    clf = models.from_keras("net.keras", input_scale=255)   # or a keras.Model

The model runs through ``model.stateless_call(trainable, non_trainable, x,
training=False)``: a pure JAX function of copied variables, so it jits, vmaps and
shards like a Flax model. The variables are copied because Keras' own ``predict``
donates its buffers: arrays taken from ``v.value`` earlier are deleted by the next
``predict``. Keras must run on the JAX backend: set ``KERAS_BACKEND=jax`` before Keras is
first imported (this module sets it when Keras is not imported yet). Needs
``pip install "jaxattack[keras]"``.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from . import conventions as cv
from . import imported

KERAS_EXTRA_HINT = 'pip install "jaxattack[keras]"'


def import_keras():
    """Keras 3 on the JAX backend, or a clear ImportError."""
    import sys

    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
    except ImportError as e:
        raise ImportError(f"from_keras needs Keras 3: {KERAS_EXTRA_HINT}") from e
    version = getattr(keras, "__version__", "0")
    if int(version.split(".")[0]) < 3:
        raise ImportError(f"from_keras needs Keras 3, found {version}: {KERAS_EXTRA_HINT}")
    backend = keras.config.backend()
    if backend != "jax":
        raise ImportError(
            f"from_keras needs Keras on the JAX backend, but Keras was imported with the "
            f"{backend!r} backend: set KERAS_BACKEND=jax before Keras (or TensorFlow, "
            f"which imports it) is first imported "
            f"(for a TensorFlow SavedModel use models.from_saved_model)")
    return keras


def load_model(path: str | os.PathLike):
    keras = import_keras()
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"Keras file {str(path)!r} does not exist")
    try:
        return keras.saving.load_model(str(p), compile=False)
    except Exception as e:
        raise cv.ModelImportError(f"{p} is not a Keras model file: {cv._first_line(e)}") from e


def from_keras(model_or_path, **options):
    """A Keras 3 model (a ``keras.Model`` or a ``.keras``/``.h5`` path) as a Classifier.

    Args:
      options: the options every importer takes (``input_scale``, ``mean``, ``std``,
        ``layout``, ``outputs``, ``num_classes``, ``class_names``, ``name``, ``check``,
        ``check_images``, ``check_labels``), documented at
        :class:`jaxattack.models.imported.Options`. A model with a ``Rescaling(1/255)``
        layer inside takes ``input_scale=255``; ``layout="auto"`` reads it from
        ``model.inputs`` (Keras is channels-last unless the model was built with
        ``data_format="channels_first"``).
    """
    opts = imported.Options.parse("from_keras", options)
    keras = import_keras()
    if isinstance(model_or_path, str | os.PathLike):
        model = load_model(model_or_path)
        label = str(model_or_path)
    elif isinstance(model_or_path, keras.Model | keras.layers.Layer):
        model, label = model_or_path, model_or_path.name
    else:
        raise TypeError(f"from_keras needs a keras.Model or a path, got "
                        f"{type(model_or_path).__name__}")
    if not model.built:
        raise cv.ModelImportError(f"{label} is not built: call it once on an input batch "
                                  f"(or give it an Input) first")
    declared = None
    inputs = getattr(model, "inputs", None)
    if inputs:
        if len(inputs) != 1:
            raise cv.ModelImportError(f"{label} has {len(inputs)} inputs; jaxattack needs "
                                      f"one image input")
        declared = list(inputs[0].shape)
    outs = getattr(model, "outputs", None)
    if outs and len(outs) != 1:
        raise cv.ModelImportError(f"{label} has {len(outs)} outputs; jaxattack needs one "
                                  f"[batch, classes] output")
    conv, hwc = imported.convention(opts, declared, label, default="NHWC")
    # Copies: predict() donates the variables' buffers.
    params = {
        "trainable": [jnp.array(np.asarray(v.value), copy=True)
                      for v in model.trainable_variables],
        "non_trainable": [jnp.array(np.asarray(v.value), copy=True)
                          for v in model.non_trainable_variables],
    }
    dtype = jnp.dtype(getattr(model, "compute_dtype", None) or "float32")
    if dtype.kind != "f":
        dtype = jnp.dtype("float32")

    def build(c: cv.Convention):
        def apply_fn(p, images):
            x = cv.preprocess(images, c, dtype=dtype)
            out, _ = model.stateless_call(p["trainable"], p["non_trainable"], x,
                                          training=False)
            if isinstance(out, dict | list | tuple):
                flat = list(out.values()) if isinstance(out, dict) else list(out)
                if len(flat) != 1:
                    raise cv.ModelImportError(f"{label} returns {len(flat)} outputs")
                out = flat[0]
            out = jnp.asarray(out)
            return out.astype(jnp.float32) if out.dtype != jnp.float32 else out

        return cv.wrap_standard_promotion(apply_fn)

    k_declared = None
    if outs and outs[0].shape and outs[0].shape[-1]:
        k_declared = int(outs[0].shape[-1])
    return imported.finish(opts, build, params, conv, label=label,
                           default_name=Path(label).stem, input_shape=hwc,
                           k_declared=k_declared)
