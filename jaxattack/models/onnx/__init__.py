"""ONNX models (e.g. exported from PyTorch) as jaxattack classifiers.

    clf = models.from_onnx("net.onnx", mean="imagenet", std="imagenet")

The graph is interpreted in JAX, node by node, at trace time (so it is one jitted XLA
program). Channels-first graphs run channels-last: every 2-D convolution, pooling,
BatchNorm, element-wise op, concatenation and reduction works on NHWC arrays, the
convolution weights are transposed to HWIO once at import, and a tensor returns to the
ONNX layout only where an op needs it (a Flatten, Reshape, Gemm or an op this module
does not know). XLA:CPU runs NCHW convolutions about 3.4x slower than NHWC ones.

Shapes are static: ``Shape``, ``Gather``, ``Concat``... on shapes are evaluated with
numpy while tracing, so the legacy exporter's ``x.view(x.size(0), -1)`` works at any
batch size; a graph exported with a static batch size B runs under ``vmap`` over chunks
of B images. Ops not implemented here go to jaxonnxruntime's handler for that op (in the
ONNX layout), and ``backend="jaxonnxruntime"`` runs the whole graph through
jaxonnxruntime (channels-first, for comparison). Needs ``pip install "jaxattack[onnx]"``.

The package, by job: ``core`` (the values ``V``, the layouts, the ``OPS`` registry),
``graph`` (loading a graph for tracing and walking its nodes), the op families
``ops_math`` (element-wise), ``ops_nn`` (convolution, normalisation, pooling,
reductions, dense) and ``ops_shape`` (shapes and layout-aware tensor ops), and ``jort``
(jaxonnxruntime: the per-op fallback and the whole-graph backend).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax.numpy as jnp

from .. import conventions as cv
from .. import imported
from . import jort
from .core import (
    EXPORT_HINT,
    NHWC_AXIS,
    ONNX_EXTRA_HINT,
    OPS,
    TO_NCHW,
    TO_NHWC,
    V,
    _import_onnx,
    op,
)
from .graph import Ctx, Graph

__all__ = ["EXPORT_HINT", "NHWC_AXIS", "ONNX_EXTRA_HINT", "OPS", "TO_NCHW", "TO_NHWC", "Ctx",
           "Graph", "V", "from_onnx", "load_model", "op"]

# ----------------------------------------------------------------------------- public


def load_model(path: str | os.PathLike, name: str | None = None):
    onnx = _import_onnx()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"ONNX file {str(path)!r} does not exist")
    try:
        model = onnx.load(str(p))
    except Exception as e:
        raise cv.ModelImportError(f"{p} is not an ONNX model: {cv._first_line(e)}") from e
    if not model.graph.node:
        raise cv.ModelImportError(f"{p} is not an ONNX model (no graph nodes)")
    return model


def from_onnx(
    model_or_path,
    *,
    backend: str = "jaxattack",
    nhwc: bool = True,
    **options,
):
    """An ONNX model (a path or an ``onnx.ModelProto``) as a :class:`Classifier`.

    Args:
      backend: ``"jaxattack"`` (this module's interpreter) or ``"jaxonnxruntime"``
        (jaxonnxruntime's, channels-first, re-traced for each batch shape).
      nhwc: run channels-first graphs channels-last (the fast path; ``False`` keeps
        the ONNX layout, for comparison).
      options: the options every importer takes (``input_scale``, ``mean``, ``std``,
        ``layout``, ``outputs``, ``num_classes``, ``class_names``, ``name``, ``check``,
        ``check_images``, ``check_labels``), documented at
        :class:`jaxattack.models.imported.Options`. PyTorch models usually want
        ``input_scale=1`` (0..1) with ``mean``/``std`` (``"imagenet"``, ``"cifar10"``);
        ``layout="auto"`` reads the graph's declared input shape (``[batch, 3, H, W]``
        is channels-first).
    """
    opts = imported.Options.parse("from_onnx", options)
    onnx = _import_onnx()
    default_name = (Path(model_or_path).stem if isinstance(model_or_path, str | os.PathLike)
                    else "onnx")
    label = opts.name or default_name
    if isinstance(model_or_path, str | os.PathLike):
        model = load_model(model_or_path)
        label_src = str(model_or_path)
    elif isinstance(model_or_path, onnx.ModelProto):
        model, label_src = model_or_path, label
    else:
        raise TypeError(f"from_onnx needs a path or an onnx.ModelProto, got "
                        f"{type(model_or_path).__name__}")
    if backend not in ("jaxattack", "jaxonnxruntime"):
        raise ValueError(f"backend must be 'jaxattack' or 'jaxonnxruntime', got {backend!r}")
    graph = Graph(model, nhwc=nhwc and backend == "jaxattack", name=label_src)
    declared = graph.input_shape()
    conv, hwc = imported.convention(opts, declared, label_src, default="NCHW")
    dtype = graph.input_dtype()
    if dtype.kind != "f":
        raise cv.ModelImportError(f"{label_src} takes {dtype} input; jaxattack feeds floats")
    static_batch = declared[0] if declared and declared[0] else None
    out_dim = model.graph.output[0].type.tensor_type.shape.dim
    k_declared = out_dim[-1].dim_value if out_dim and out_dim[-1].HasField("dim_value") \
        else None

    if backend == "jaxonnxruntime":
        params, run = jort.whole_graph(model, label_src)
    else:
        params = graph.params

        def run(p, x, x_nhwc):
            return graph(p, x, x_nhwc)[0]

    def build(c: cv.Convention):
        # the interpreter takes the NHWC array as the NCHW tensor (x_nhwc), no transpose
        as_nhwc = c.layout == "NCHW" and graph.nhwc

        def forward(p, images):
            x = cv.preprocess(images, c, dtype=jnp.dtype(dtype),
                              layout="NHWC" if as_nhwc else None)
            return run(p, x, as_nhwc)

        run_any = cv.static_batch(forward, static_batch)

        def apply_fn(p, images):
            n = images.shape[0]
            out = run_any(p, images)
            out = out.reshape(n, -1)
            low = jnp.issubdtype(out.dtype, jnp.floating) and jnp.finfo(out.dtype).bits < 32
            return out.astype(jnp.float32) if low else out

        return cv.wrap_standard_promotion(apply_fn)

    return imported.finish(opts, build, params, conv, label=label_src,
                           default_name=default_name, input_shape=hwc, k_declared=k_declared,
                           k_unknown="the graph's output size is dynamic", layout_hint=False)
