"""TensorFlow SavedModels as jaxattack classifiers, converted to JAX by tf2jax.

    clf = models.from_saved_model("export/", input_scale=1)

The serving signature's TensorFlow graph is converted once into a JAX function of the
model's variables (``tf2jax.convert``), with the signature's own input spec, so a
``None`` batch axis stays free and any batch size works. A signature with a fixed batch
size B runs under ``vmap`` over chunks of B images (padded to a multiple of B). Needs
TensorFlow and tf2jax:
``pip install "jaxattack[tf]"`` (tf2jax declares a dependency on the ``tensorflow``
wheel; ``tensorflow-cpu`` provides the same module: install tf2jax with ``--no-deps`` to
keep it).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax.numpy as jnp

from . import conventions as cv
from . import imported

TF_EXTRA_HINT = 'pip install "jaxattack[tf]" && pip install --no-deps tf2jax'


def is_saved_model(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and ((p / "saved_model.pb").is_file()
                           or (p / "saved_model.pbtxt").is_file())


def _import_tf():
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError(f"from_saved_model needs TensorFlow: {TF_EXTRA_HINT}") from e
    try:
        import tf2jax
    except ImportError as e:
        raise ImportError(f"from_saved_model needs tf2jax: {TF_EXTRA_HINT}") from e
    return tf, tf2jax


def _signature(loaded, signature: str | None, label: str):
    sigs = dict(getattr(loaded, "signatures", {}) or {})
    if signature is None:
        signature = "serving_default" if "serving_default" in sigs else None
        if signature is None and len(sigs) == 1:
            signature = next(iter(sigs))
    if signature is None or signature not in sigs:
        raise cv.ModelImportError(
            f"{label} has no signature {signature!r} (signatures: {sorted(sigs) or 'none'}); "
            f"pass signature=")
    fn = sigs[signature]
    args, kwargs = fn.structured_input_signature
    specs = list(args) + list(kwargs.values())
    if len(specs) != 1:
        raise cv.ModelImportError(
            f"{label}'s signature {signature!r} takes {len(specs)} inputs; jaxattack needs "
            f"one image input")
    key = next(iter(kwargs)) if kwargs else None
    return signature, fn, specs[0], key


def from_saved_model(
    path: str | os.PathLike,
    *,
    signature: str | None = None,
    output: str | None = None,
    **options,
):
    """A TensorFlow SavedModel folder as a :class:`Classifier` (via tf2jax).

    Args:
      signature: the serving signature (default ``"serving_default"``, or the only one).
      output: the output name when the signature returns several.
      options: the options every importer takes (``input_scale``, ``mean``, ``std``,
        ``layout``, ``outputs``, ``num_classes``, ``class_names``, ``name``, ``check``,
        ``check_images``, ``check_labels``), documented at
        :class:`jaxattack.models.imported.Options` (``layout="auto"`` reads the
        signature's input spec; TensorFlow is channels-last).
    """
    opts = imported.Options.parse("from_saved_model", options)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"SavedModel folder {str(path)!r} does not exist")
    if not is_saved_model(p):
        raise cv.ModelImportError(f"{p} is not a TensorFlow SavedModel (no saved_model.pb)")
    tf, tf2jax = _import_tf()
    label = str(p)
    try:
        loaded = tf.saved_model.load(str(p))
    except Exception as e:
        raise cv.ModelImportError(f"{p} is not a loadable SavedModel: {cv._first_line(e)}") \
            from e
    sig_name, sig, spec, key = _signature(loaded, signature, label)
    declared = None if spec.shape.rank is None else list(spec.shape.as_list())
    conv, hwc = imported.convention(opts, declared, label, default="NHWC")
    dtype = jnp.dtype(spec.dtype.as_numpy_dtype)
    if dtype.kind != "f":
        raise cv.ModelImportError(f"{label} takes {dtype} input; jaxattack feeds floats")

    call = (lambda x: sig(**{key: x})) if key is not None else (lambda x: sig(x))
    tf_fn = tf.function(call, autograph=False)

    def convert(shape):
        try:
            return tf2jax.convert(tf_fn, tf.TensorSpec(shape, spec.dtype))
        except Exception as e:
            raise cv.ModelImportError(
                f"tf2jax cannot convert {label} (signature {sig_name!r}) for input shape "
                f"{list(shape)}: {cv._first_line(e)}") from e

    fn0, params = convert(spec.shape)
    params = {k: jnp.asarray(v) for k, v in params.items()}
    fixed = declared[0] if declared is not None and declared[0] is not None else None

    def pick(out):
        if isinstance(out, dict):
            if output is not None:
                if output not in out:
                    raise cv.ModelImportError(f"{label} has no output {output!r} "
                                              f"(outputs: {sorted(out)})")
                return out[output]
            if len(out) != 1:
                raise cv.ModelImportError(f"{label} returns {sorted(out)}; pass output=")
            return next(iter(out.values()))
        if isinstance(out, list | tuple):
            if len(out) != 1:
                raise cv.ModelImportError(f"{label} returns {len(out)} outputs")
            return out[0]
        return out

    def build(c: cv.Convention):
        def forward(p, images):
            x = cv.preprocess(images, c, dtype=dtype)
            out = jnp.asarray(pick(fn0(p, x)[0]))
            return out.astype(jnp.float32) if out.dtype != jnp.float32 else out

        return cv.wrap_standard_promotion(cv.static_batch(forward, fixed))

    out_spec = sig.structured_outputs
    k_declared = None
    try:
        o = pick(out_spec)
        k_declared = o.shape[-1] if o.shape.rank and o.shape[-1] else None
    except cv.ModelImportError:
        raise
    except Exception:
        pass
    return imported.finish(opts, build, params, conv, label=label, default_name=p.name,
                           input_shape=hwc, k_declared=k_declared,
                           k_unknown="the signature's output size is dynamic")
