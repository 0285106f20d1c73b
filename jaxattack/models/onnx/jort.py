"""jaxonnxruntime, for what the interpreter does not do itself: the handler of an op it
does not implement (in the ONNX layout), and ``backend="jaxonnxruntime"``, the whole
graph through jaxonnxruntime."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import conventions as cv
from .core import EXPORT_HINT, ONNX_EXTRA_HINT, V


def fallback(ctx, node, ins: list[V | None]) -> list[V]:
    """An op this module does not implement: jaxonnxruntime's handler, ONNX layout."""
    try:
        from jaxonnxruntime import call_onnx
        from jaxonnxruntime.core import onnx_node
    except ImportError as e:
        raise cv.ModelImportError(
            f"{ctx.g.name} uses the ONNX op {node.op_type!r}, which jaxattack does not "
            f"implement; jaxonnxruntime would: {ONNX_EXTRA_HINT}") from e
    handlers = call_onnx._get_all_handlers(ctx.g.model.opset_import)
    handler = handlers.get(node.domain, {}).get(node.op_type)
    if handler is None:
        raise cv.ModelImportError(
            f"{ctx.g.name} uses the ONNX op {node.op_type!r} (domain "
            f"{node.domain or 'ai.onnx'!r}), which neither jaxattack nor jaxonnxruntime "
            f"implements")
    wrapped = onnx_node.OnnxNode(node)
    args = [None if v is None else (v.x if v.static else v.onnx()) for v in ins]
    fn = handler.handle(wrapped, args)
    out = fn(*args, **wrapped.attrs_dict)
    out = out if isinstance(out, list | tuple) else [out]
    return [V(o) for o in out]


def whole_graph(model, label):
    """The whole graph through jaxonnxruntime, prepared again for each batch shape."""
    try:
        from jaxonnxruntime import call_onnx
    except ImportError as e:
        raise ImportError(f"backend='jaxonnxruntime' needs jaxonnxruntime: "
                          f"{ONNX_EXTRA_HINT}") from e
    from onnx import numpy_helper

    params = {t.name: jnp.asarray(numpy_helper.to_array(t)) for t in model.graph.initializer}
    cache: dict[tuple, Any] = {}

    def run(p, x, x_nhwc):
        key = (tuple(x.shape), str(x.dtype))
        if key not in cache:
            try:
                with jax.ensure_compile_time_eval():
                    fn, _ = call_onnx.call_onnx_model(model, [np.zeros(x.shape, x.dtype)])
            except Exception as e:
                raise cv.ModelImportError(
                    f"jaxonnxruntime cannot run {label} at batch shape {list(x.shape)}: "
                    f"{cv._first_line(e)}; {EXPORT_HINT}") from e
            cache[key] = fn
        try:
            return cache[key](p, [x])[0]
        except Exception as e:
            raise cv.ModelImportError(
                f"jaxonnxruntime cannot run {label} at batch shape {list(x.shape)}: "
                f"{cv._first_line(e)}; {EXPORT_HINT}") from e

    return params, run
