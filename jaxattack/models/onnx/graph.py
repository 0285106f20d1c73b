"""The graph walk: an ONNX graph prepared for tracing (params, static constants,
pre-transposed conv weights), the node loop with its op dispatch, and ``If``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import conventions as cv
from . import jort, ops_math, ops_nn, ops_shape  # noqa: F401  (ops_*: the ops register on import)
from .core import OPS, V, _np_dtype, op

# ----------------------------------------------------------------------------- the graph


class Graph:
    """An ONNX graph prepared for tracing: initializers split into params (float) and
    static constants (int, bool, small), conv weights pre-transposed."""

    def __init__(self, model, nhwc: bool = True, name: str = "onnx"):
        from onnx import numpy_helper

        self.model = model
        self.graph = model.graph
        self.name = name
        self.nhwc = nhwc
        self.opset = {o.domain or "": o.version for o in model.opset_import}
        self.opset_ai = self.opset.get("", self.opset.get("ai.onnx", 13))
        init = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        if len(self.graph.sparse_initializer):
            raise cv.ModelImportError(f"{name}: sparse initializers are not supported")
        self.inputs = [i for i in self.graph.input if i.name not in init]
        if len(self.inputs) != 1:
            raise cv.ModelImportError(
                f"{name} has {len(self.inputs)} inputs "
                f"({[i.name for i in self.inputs]}); jaxattack needs one image input")
        self.input = self.inputs[0]
        self.outputs = [o.name for o in self.graph.output]
        conv_weights = {n.input[1] for n in self.graph.node
                        if n.op_type == "Conv" and n.domain in ("", "ai.onnx")
                        and len(n.input) > 1 and n.input[1] in init
                        and init[n.input[1]].ndim == 4}
        other_uses = {i for n in self.graph.node for j, i in enumerate(n.input)
                      if not (n.op_type == "Conv" and j == 1)}
        self.params: dict[str, jax.Array] = {}
        self.static: dict[str, np.ndarray] = {}
        for k, a in init.items():
            if a.dtype.kind == "f" and a.size > 1:
                if nhwc and k in conv_weights:
                    self.params[k + ":hwio"] = jnp.asarray(a.transpose(2, 3, 1, 0))
                    if k in other_uses:
                        self.params[k] = jnp.asarray(a)
                else:
                    self.params[k] = jnp.asarray(a)
            else:
                self.static[k] = a
        self.nodes = list(self.graph.node)
        self.fallback_ops = sorted({n.op_type for n in self.nodes
                                    if (n.op_type not in OPS or n.domain not in ("", "ai.onnx"))})

    def input_shape(self) -> list:
        dims = self.input.type.tensor_type.shape.dim
        return [d.dim_value if d.HasField("dim_value") else None for d in dims]

    def input_dtype(self):
        return _np_dtype(self.input.type.tensor_type.elem_type)

    def __call__(self, params, x, x_nhwc: bool):
        """Outputs (ONNX layout) for input ``x`` (NHWC-transposed if ``x_nhwc``)."""
        env: dict[str, V] = {k: V(v) for k, v in self.static.items()}
        for k, v in params.items():
            if k.endswith(":hwio"):  # the ONNX view of a pre-transposed weight (unused
                base = k[: -len(":hwio")]  # by the convolution, so XLA drops it)
                if base not in params:
                    env[base] = V(jnp.transpose(v, (3, 2, 0, 1)))
            else:
                env[k] = V(v)
        env[self.input.name] = V(x, nhwc=x_nhwc)
        Ctx(self, params).run_nodes(self.nodes, env)
        return [env[o].onnx() if not env[o].static else jnp.asarray(env[o].x)
                for o in self.outputs]


class Ctx:
    def __init__(self, graph: Graph, params):
        self.g = graph
        self.params = params
        self.env: dict[str, V] = {}

    def run_nodes(self, nodes, env: dict[str, V]) -> None:
        """Run ``nodes`` in order, reading and writing ``env`` (tensor name -> V)."""
        outer, self.env = self.env, env
        try:
            for node in nodes:
                ins = [env.get(i) if i else None for i in node.input]
                for i, name in zip(ins, node.input, strict=True):
                    if name and i is None:
                        raise cv.ModelImportError(f"{self.g.name}: tensor {name!r} is "
                                                  f"undefined")
                outs = self.run(node, ins)
                for name, val in zip(node.output, outs, strict=False):
                    if name:
                        env[name] = val
        finally:
            self.env = outer

    def subgraph(self, graph) -> list[V]:
        """The outputs of a branch graph (``If``), which sees the enclosing tensors."""
        from onnx import numpy_helper

        env = dict(self.env)
        for t in graph.initializer:
            env[t.name] = V(numpy_helper.to_array(t))
        self.run_nodes(list(graph.node), env)
        return [env[o.name] for o in graph.output]

    def run(self, node, ins: list[V | None]) -> list[V]:
        attrs = _attrs(node)
        op = OPS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if op is None:
            return self.fallback(node, ins)
        if not self.g.nhwc:  # plain ONNX layout throughout
            ins = [None if v is None else (v if not v.nhwc else V(v.onnx())) for v in ins]
        out = op(self, node, ins, attrs)
        return out if isinstance(out, list) else [out]

    def weight_hwio(self, name: str, w: V):
        key = name + ":hwio"
        if key in self.params:
            return self.params[key]
        return jnp.transpose(w.x, (2, 3, 1, 0))

    def fallback(self, node, ins: list[V | None]) -> list[V]:
        """An op this module does not implement: jaxonnxruntime's handler, ONNX layout."""
        return jort.fallback(self, node, ins)


def _attrs(node) -> dict[str, Any]:
    from onnx import helper, numpy_helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if a.type == a.TENSOR:
            v = numpy_helper.to_array(v)
        elif isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [s.decode() for s in v]
        out[a.name] = v
    return out


@op("If")
def _if(ctx, node, ins, attrs):
    cond = ins[0]
    if cond.static:  # e.g. a test on a shape: only the branch taken is traced
        taken = bool(np.asarray(cond.x).reshape(-1)[0])
        return ctx.subgraph(attrs["then_branch" if taken else "else_branch"])
    then, other = ctx.subgraph(attrs["then_branch"]), ctx.subgraph(attrs["else_branch"])
    if any(a.shape != b.shape for a, b in zip(then, other, strict=True)):
        raise cv.ModelImportError(f"{ctx.g.name}: an If on the data whose branches differ "
                                  f"in shape cannot be traced")
    c = jnp.reshape(cond.x, ())
    return [V(jnp.where(c, a.onnx(), b.onnx())) for a, b in zip(then, other, strict=True)]

