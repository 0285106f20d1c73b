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
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import conventions as cv

ONNX_EXTRA_HINT = 'pip install "jaxattack[onnx]"'
EXPORT_HINT = (
    "export from PyTorch with torch.onnx.export(model, (x,), path, dynamo=True, "
    "dynamic_shapes=({0: torch.export.Dim('batch')},)) (or the legacy exporter with "
    "nn.Flatten and dynamic_axes={'input': {0: 'batch'}}); the legacy exporter's "
    "x.view(x.size(0), -1) and a static batch size break other batch sizes in "
    "jaxonnxruntime (jaxattack's own interpreter handles both)")
TO_NCHW = (0, 3, 1, 2)  # NHWC array -> ONNX (NCHW) tensor
TO_NHWC = (0, 2, 3, 1)  # ONNX (NCHW) tensor -> NHWC array
NHWC_AXIS = (0, 3, 1, 2)  # ONNX axis -> axis of the NHWC array


def _import_onnx():
    try:
        import onnx
    except ImportError as e:
        raise ImportError(f"from_onnx needs the onnx package: {ONNX_EXTRA_HINT}") from e
    return onnx


# ----------------------------------------------------------------------------- values


@dataclasses.dataclass
class V:
    """A tensor while interpreting: ``x`` is a numpy array (static: known while tracing,
    always in the ONNX layout) or a jax array; ``nhwc``: ``x`` holds the 4-D ONNX tensor
    transposed to channels-last."""

    x: Any
    nhwc: bool = False

    @property
    def static(self) -> bool:
        return isinstance(self.x, np.ndarray | np.generic)

    @property
    def shape(self) -> tuple[int, ...]:
        """The ONNX shape."""
        s = tuple(int(d) for d in np.shape(self.x))
        return (s[0], s[3], s[1], s[2]) if self.nhwc else s

    @property
    def ndim(self) -> int:
        return np.ndim(self.x)

    def onnx(self):
        """The array in the ONNX layout."""
        return jnp.transpose(self.x, TO_NCHW) if self.nhwc else self.x

    def as_nhwc(self):
        """A 4-D tensor as a channels-last array."""
        return self.x if self.nhwc else jnp.transpose(self.x, TO_NHWC)


def _xp(*vals):
    return np if all(v is None or v.static for v in vals) else jnp


def _np_dtype(onnx_type: int):
    from onnx import helper

    return np.dtype(helper.tensor_dtype_to_np_dtype(onnx_type))


def _to_rank4(v: V):
    """An operand of an op on NHWC tensors, as a channels-last array (broadcast rules of
    the ONNX shape kept: a [C, 1, 1] constant becomes [1, 1, 1, C])."""
    if v.nhwc:
        return v.x
    s = v.shape
    arr = v.x.reshape((1,) * (4 - len(s)) + s) if len(s) < 4 else v.x
    return (np if v.static else jnp).transpose(arr, TO_NHWC)


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
        try:
            from jaxonnxruntime import call_onnx
            from jaxonnxruntime.core import onnx_node
        except ImportError as e:
            raise cv.ModelImportError(
                f"{self.g.name} uses the ONNX op {node.op_type!r}, which jaxattack does not "
                f"implement; jaxonnxruntime would: {ONNX_EXTRA_HINT}") from e
        handlers = call_onnx._get_all_handlers(self.g.model.opset_import)
        handler = handlers.get(node.domain, {}).get(node.op_type)
        if handler is None:
            raise cv.ModelImportError(
                f"{self.g.name} uses the ONNX op {node.op_type!r} (domain "
                f"{node.domain or 'ai.onnx'!r}), which neither jaxattack nor jaxonnxruntime "
                f"implements")
        wrapped = onnx_node.OnnxNode(node)
        args = [None if v is None else (v.x if v.static else v.onnx()) for v in ins]
        fn = handler.handle(wrapped, args)
        out = fn(*args, **wrapped.attrs_dict)
        out = out if isinstance(out, list | tuple) else [out]
        return [V(o) for o in out]


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


# ----------------------------------------------------------------------------- ops

OPS: dict[str, Any] = {}


def op(*names):
    def deco(fn):
        for n in names:
            OPS[n] = fn
        return fn

    return deco


def _const(v: V) -> np.ndarray:
    if v is None:
        return None
    if not v.static:
        raise cv.ModelImportError(
            "a shape, axes or pads input of the ONNX graph depends on the data; jaxattack "
            f"needs it to be known while tracing ({EXPORT_HINT})")
    return np.asarray(v.x)


def _unary(f_np, f_jnp=None):
    def run(ctx, node, ins, attrs):
        v = ins[0]
        f = f_np if v.static else (f_jnp or f_np)
        return V(f(v.x, attrs), v.nhwc)

    return run


for _name, _f in {
    "Sigmoid": lambda x, a: jax.nn.sigmoid(x),
    "Tanh": lambda x, a: jnp.tanh(x),
    "Exp": lambda x, a: jnp.exp(x),
    "Log": lambda x, a: jnp.log(x),
    "Sqrt": lambda x, a: jnp.sqrt(x),
    "Erf": lambda x, a: jax.scipy.special.erf(x),
    "Reciprocal": lambda x, a: 1 / x,
    "Softplus": lambda x, a: jax.nn.softplus(x),
    "Softsign": lambda x, a: x / (1 + jnp.abs(x)),
    "Elu": lambda x, a: jax.nn.elu(x, a.get("alpha", 1.0)),
    "Selu": lambda x, a: a.get("gamma", 1.0507009873554805) * jnp.where(
        x > 0, x, a.get("alpha", 1.6732632423543772) * jnp.expm1(jnp.minimum(x, 0))),
    "LeakyRelu": lambda x, a: jnp.where(x >= 0, x, a.get("alpha", 0.01) * x),
    "HardSigmoid": lambda x, a: jnp.clip(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0, 1),
    "HardSwish": lambda x, a: x * jnp.clip(x / 6 + 0.5, 0, 1),
    "Mish": lambda x, a: x * jnp.tanh(jax.nn.softplus(x)),
    "Gelu": lambda x, a: jax.nn.gelu(x, approximate=a.get("approximate", "none") == "tanh"),
}.items():
    OPS[_name] = _unary(_f)

for _name, _f in {
    "Relu": lambda x, a: (np if isinstance(x, np.ndarray) else jnp).maximum(x, 0),
    "Neg": lambda x, a: -x, "Abs": lambda x, a: abs(x),
    "Floor": lambda x, a: (np if isinstance(x, np.ndarray) else jnp).floor(x),
    "Ceil": lambda x, a: (np if isinstance(x, np.ndarray) else jnp).ceil(x),
    "Sign": lambda x, a: (np if isinstance(x, np.ndarray) else jnp).sign(x),
    "Not": lambda x, a: (np if isinstance(x, np.ndarray) else jnp).logical_not(x),
    "Identity": lambda x, a: x,
}.items():
    OPS[_name] = _unary(_f, _f)


@op("Dropout")
def _dropout(ctx, node, ins, attrs):
    v = ins[0]
    return [v, V(np.ones(v.shape, bool))]


@op("Cast")
def _cast(ctx, node, ins, attrs):
    v, dt = ins[0], _np_dtype(attrs["to"])
    return V(v.x.astype(dt), v.nhwc)


@op("CastLike")
def _castlike(ctx, node, ins, attrs):
    return V(ins[0].x.astype(ins[1].x.dtype), ins[0].nhwc)


@op("Clip")
def _clip(ctx, node, ins, attrs):
    v = ins[0]
    lo = attrs.get("min") if len(ins) < 2 else (None if ins[1] is None else ins[1].x)
    hi = attrs.get("max") if len(ins) < 3 else (None if ins[2] is None else ins[2].x)
    xp = _xp(*ins)
    x = v.x
    if lo is not None:
        x = xp.maximum(x, xp.asarray(lo, x.dtype))
    if hi is not None:
        x = xp.minimum(x, xp.asarray(hi, x.dtype))
    return V(x, v.nhwc)


def _broadcast(ins: list[V]):
    """Operands of an element-wise op: channels-last arrays if any operand is NHWC."""
    if any(v.nhwc for v in ins) and all(len(v.shape) <= 4 for v in ins):
        return [_to_rank4(v) for v in ins], True
    return [v.onnx() for v in ins], False


def _variadic(f_np, f_jnp):
    def run(ctx, node, ins, attrs):
        ins = [v for v in ins if v is not None]
        xp = _xp(*ins)
        args, nhwc = _broadcast(ins)
        f = f_np if xp is np else f_jnp
        out = args[0]
        for a in args[1:]:
            out = f(out, a)
        return V(out, nhwc)

    return run


def _div(a, b):
    if isinstance(a, np.ndarray) and a.dtype.kind in "iu":
        return (a // b).astype(a.dtype)
    return a / b


for _name, (_fn, _fj) in {
    "Add": (np.add, jnp.add), "Sub": (np.subtract, jnp.subtract),
    "Mul": (np.multiply, jnp.multiply), "Div": (_div, jnp.divide),
    "Pow": (np.power, jnp.power), "Max": (np.maximum, jnp.maximum),
    "Min": (np.minimum, jnp.minimum), "Sum": (np.add, jnp.add),
    "Equal": (np.equal, jnp.equal), "Less": (np.less, jnp.less),
    "Greater": (np.greater, jnp.greater), "LessOrEqual": (np.less_equal, jnp.less_equal),
    "GreaterOrEqual": (np.greater_equal, jnp.greater_equal),
    "And": (np.logical_and, jnp.logical_and), "Or": (np.logical_or, jnp.logical_or),
}.items():
    OPS[_name] = _variadic(_fn, _fj)


@op("Mean")
def _mean(ctx, node, ins, attrs):
    s = _variadic(np.add, jnp.add)(ctx, node, ins, attrs)
    return V(s.x / len(ins), s.nhwc)


@op("Where")
def _where(ctx, node, ins, attrs):
    xp = _xp(*ins)
    args, nhwc = _broadcast(ins)
    return V(xp.where(*args), nhwc)


@op("PRelu")
def _prelu(ctx, node, ins, attrs):
    (x, slope), nhwc = _broadcast(ins)
    return V(jnp.where(x >= 0, x, slope * x), nhwc)


# -- convolution, normalisation, pooling


def _spatial_pads(attrs, in_hw, kernel, strides, dilations):
    """((lo, hi) per spatial dim) from ONNX pads/auto_pad."""
    n = len(kernel)
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for i in range(n):
            o = -(-in_hw[i] // strides[i])
            total = max((o - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - in_hw[i], 0)
            lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
            out.append((lo, total - lo))
        return out
    if auto == "VALID":
        return [(0, 0)] * n
    pads = list(attrs.get("pads", [0] * (2 * n)))
    return [(pads[i], pads[i + n]) for i in range(n)]


@op("Conv")
def _conv(ctx, node, ins, attrs):
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    wshape = w.shape
    nsp = len(wshape) - 2
    kernel = tuple(attrs.get("kernel_shape", wshape[2:]))
    strides = tuple(attrs.get("strides", (1,) * nsp))
    dil = tuple(attrs.get("dilations", (1,) * nsp))
    group = int(attrs.get("group", 1))
    in_sp = x.shape[2:]
    pads = _spatial_pads(attrs, in_sp, kernel, strides, dil)
    wx = w.x if not w.static else jnp.asarray(w.x)
    if ctx.g.nhwc and nsp == 2:
        rhs = ctx.weight_hwio(node.input[1], V(wx))
        y = lax.conv_general_dilated(x.as_nhwc(), rhs, strides, pads, rhs_dilation=dil,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     feature_group_count=group)
        if b is not None:
            y = y + b.x
        return V(y, True)
    spec = {1: ("NCH", "OIH", "NCH"), 2: ("NCHW", "OIHW", "NCHW"),
            3: ("NCDHW", "OIDHW", "NCDHW")}[nsp]
    if ctx.g.nhwc and node.input[1] + ":hwio" in ctx.params:
        wx = jnp.transpose(ctx.params[node.input[1] + ":hwio"], (3, 2, 0, 1))
    y = lax.conv_general_dilated(x.onnx(), wx, strides, pads, rhs_dilation=dil,
                                 dimension_numbers=spec, feature_group_count=group)
    if b is not None:
        y = y + b.x.reshape((1, -1) + (1,) * nsp)
    return V(y)


@op("BatchNormalization")
def _batchnorm(ctx, node, ins, attrs):
    if attrs.get("training_mode", 0):
        raise cv.ConventionError(
            f"{ctx.g.name} has a BatchNormalization in training mode; export the model "
            f"in eval mode (model.eval())")
    x, scale, bias, mean, var = ins[:5]
    eps = attrs.get("epsilon", 1e-5)
    mul = scale.x * lax.rsqrt(var.x + jnp.asarray(eps, var.x.dtype))
    add = bias.x - mean.x * mul
    if x.nhwc:
        return [V(x.x * mul + add, True)]
    shape = (1, -1) + (1,) * (len(x.shape) - 2)
    return [V(x.x * mul.reshape(shape) + add.reshape(shape))]


def _pool(ctx, node, ins, attrs, kind):
    x = ins[0]
    nd = len(x.shape) - 2
    kernel = tuple(attrs["kernel_shape"])
    strides = tuple(attrs.get("strides", (1,) * nd))
    dil = tuple(attrs.get("dilations", (1,) * nd))
    in_sp = x.shape[2:]
    pads = _spatial_pads(attrs, in_sp, kernel, strides, dil)
    if attrs.get("ceil_mode", 0):  # extend the end padding so the last window fits
        new = []
        for i in range(nd):
            span = in_sp[i] + pads[i][0] + pads[i][1] - dil[i] * (kernel[i] - 1) - 1
            out = -(-span // strides[i]) + 1
            if (out - 1) * strides[i] >= in_sp[i] + pads[i][0]:
                out -= 1
            need = (out - 1) * strides[i] + dil[i] * (kernel[i] - 1) + 1
            extra = max(need - (in_sp[i] + pads[i][0] + pads[i][1]), 0)
            new.append((pads[i], extra))
    else:
        new = [(p, 0) for p in pads]
    nhwc = ctx.g.nhwc and nd == 2
    arr = x.as_nhwc() if nhwc else x.onnx()

    def full(sp):  # window tuple over all dims
        return (1, *sp, 1) if nhwc else (1, 1, *sp)

    pad_all = [(lo, hi + extra) for (lo, hi), extra in new]
    padding = ([(0, 0)] + pad_all + [(0, 0)]) if nhwc else ([(0, 0), (0, 0)] + pad_all)
    if kind == "max":
        init = -jnp.inf if jnp.issubdtype(arr.dtype, jnp.floating) else jnp.iinfo(arr.dtype).min
        y = lax.reduce_window(arr, jnp.asarray(init, arr.dtype), lax.max, full(kernel),
                              full(strides), padding, window_dilation=full(dil))
        return V(y, nhwc)
    zero = jnp.asarray(0, arr.dtype)
    total = lax.reduce_window(arr, zero, lax.add, full(kernel), full(strides), padding,
                              window_dilation=full(dil))
    if attrs.get("count_include_pad", 0):
        # explicit pads count, the ceil-mode extension does not (as in PyTorch)
        ones = jnp.ones(arr.shape, arr.dtype)
        explicit = ([(0, 0)] + [p for p, _ in new] + [(0, 0)]) if nhwc else \
            ([(0, 0), (0, 0)] + [p for p, _ in new])
        ones = jnp.pad(ones, explicit, constant_values=1)
        rest = ([(0, 0)] + [(0, e) for _, e in new] + [(0, 0)]) if nhwc else \
            ([(0, 0), (0, 0)] + [(0, e) for _, e in new])
        count = lax.reduce_window(ones, zero, lax.add, full(kernel), full(strides), rest,
                                  window_dilation=full(dil))
    else:
        shape = (1, *arr.shape[1:3], 1) if nhwc else (1, 1, *arr.shape[2:])
        count = lax.reduce_window(jnp.ones(shape, arr.dtype), zero, lax.add, full(kernel),
                                  full(strides), padding, window_dilation=full(dil))
    return V(total / count, nhwc)


@op("MaxPool")
def _maxpool(ctx, node, ins, attrs):
    if len(node.output) > 1 and node.output[1]:
        return ctx.fallback(node, ins)  # indices output
    if attrs.get("storage_order", 0):
        return ctx.fallback(node, ins)
    return _pool(ctx, node, ins, attrs, "max")


@op("AveragePool")
def _avgpool(ctx, node, ins, attrs):
    return _pool(ctx, node, ins, attrs, "avg")


@op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx, node, ins, attrs):
    x = ins[0]
    f = jnp.mean if node.op_type == "GlobalAveragePool" else jnp.max
    if x.nhwc:
        return V(f(x.x, axis=(1, 2), keepdims=True), True)
    return V(f(x.x, axis=tuple(range(2, x.ndim)), keepdims=True))


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


@op("LRN")
def _lrn(ctx, node, ins, attrs):
    return ctx.fallback(node, [V(ins[0].onnx())])


# -- reductions, softmax


def _axes(ctx, node, ins, attrs, input_index=1):
    if len(ins) > input_index and ins[input_index] is not None:
        return [int(a) for a in _const(ins[input_index]).reshape(-1)]
    a = attrs.get("axes")
    return None if a is None else [int(i) for i in a]


@op("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2",
    "ReduceSumSquare")
def _reduce(ctx, node, ins, attrs):
    x = ins[0]
    axes = _axes(ctx, node, ins, attrs)
    keep = bool(attrs.get("keepdims", 1))
    rank = len(x.shape)
    if not axes:
        if attrs.get("noop_with_empty_axes", 0):
            return x
        axes = list(range(rank))
    axes = sorted(a % rank for a in axes)
    xp = _xp(x)
    fns = {"ReduceMean": xp.mean, "ReduceSum": xp.sum, "ReduceMax": xp.max,
           "ReduceMin": xp.min, "ReduceProd": xp.prod}
    op_type = node.op_type

    def f(arr, ax):
        if op_type == "ReduceL2":
            return xp.sqrt(xp.sum(arr * arr, axis=ax, keepdims=keep))
        if op_type == "ReduceSumSquare":
            return xp.sum(arr * arr, axis=ax, keepdims=keep)
        return fns[op_type](arr, axis=ax, keepdims=keep)

    if x.nhwc:
        mapped = tuple(NHWC_AXIS[a] for a in axes)
        if keep:
            return V(f(x.x, mapped), True)
        remaining = [a for a in range(4) if a not in axes]
        if sorted(remaining, key=lambda a: NHWC_AXIS[a]) == remaining:
            return V(f(x.x, mapped))  # e.g. mean over H, W: [N, C] either way
    return V(f(x.onnx(), tuple(axes)))


def _softmax(ctx, node, ins, attrs, log=False):
    x = ins[0]
    rank = len(x.shape)
    fn = jax.nn.log_softmax if log else jax.nn.softmax
    if ctx.g.opset_ai >= 13:
        axis = attrs.get("axis", -1) % rank
        if x.nhwc:
            return V(fn(x.x, axis=NHWC_AXIS[axis]), True)
        return V(fn(x.x, axis=axis))
    axis = attrs.get("axis", 1) % rank
    arr = x.onnx()
    flat = arr.reshape(int(np.prod(arr.shape[:axis])), -1)
    return V(fn(flat, axis=-1).reshape(arr.shape))


OPS["Softmax"] = lambda ctx, node, ins, attrs: _softmax(ctx, node, ins, attrs)
OPS["LogSoftmax"] = lambda ctx, node, ins, attrs: _softmax(ctx, node, ins, attrs, True)


# -- dense


@op("Gemm")
def _gemm(ctx, node, ins, attrs):
    a, b = ins[0].onnx(), ins[1].onnx()
    c = ins[2] if len(ins) > 2 else None
    if attrs.get("transA", 0):
        a = a.T
    if attrs.get("transB", 0):
        b = b.T
    y = jnp.matmul(a, b)
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + (c.onnx() if beta == 1.0 else beta * c.onnx())
    return V(y)


@op("MatMul")
def _matmul(ctx, node, ins, attrs):
    xp = _xp(*ins)
    return V(xp.matmul(ins[0].onnx(), ins[1].onnx()))


@op("Einsum")
def _einsum(ctx, node, ins, attrs):
    return V(jnp.einsum(attrs["equation"], *[v.onnx() for v in ins]))


# -- shapes (numpy while tracing)


@op("Constant")
def _constant(ctx, node, ins, attrs):
    for key in ("value", "value_float", "value_int", "value_floats", "value_ints"):
        if key in attrs:
            v = attrs[key]
            if key == "value_float" or key == "value_floats":
                return V(np.asarray(v, np.float32))
            if key == "value_int" or key == "value_ints":
                return V(np.asarray(v, np.int64))
            return V(np.asarray(v))
    raise cv.ModelImportError(f"{ctx.g.name}: unsupported Constant attributes {list(attrs)}")


@op("Shape")
def _shape(ctx, node, ins, attrs):
    s = np.asarray(ins[0].shape, np.int64)
    start, end = attrs.get("start", 0), attrs.get("end", None)
    return V(s[start:end])


@op("Size")
def _size(ctx, node, ins, attrs):
    return V(np.asarray(int(np.prod(ins[0].shape)), np.int64))


@op("ConstantOfShape")
def _constant_of_shape(ctx, node, ins, attrs):
    shape = tuple(int(d) for d in _const(ins[0]))
    value = attrs.get("value", np.zeros(1, np.float32))
    return V(np.full(shape, value.reshape(-1)[0], value.dtype))


@op("Range")
def _range(ctx, node, ins, attrs):
    start, limit, delta = (_const(v) for v in ins)
    return V(np.arange(start, limit, delta, dtype=np.asarray(start).dtype))


@op("Reshape")
def _reshape(ctx, node, ins, attrs):
    x = ins[0]
    shape = [int(d) for d in _const(ins[1]).reshape(-1)]
    src = x.shape
    if not attrs.get("allowzero", 0):
        shape = [src[i] if d == 0 else d for i, d in enumerate(shape)]
    total = int(np.prod(src))
    if -1 in shape:
        known = int(np.prod([d for d in shape if d != -1]))
        if known == 0 or total % known:
            raise _reshape_error(ctx, src, shape)
        shape[shape.index(-1)] = total // known
    if int(np.prod(shape)) != total:
        raise _reshape_error(ctx, src, shape)
    if x.static:
        return V(x.x.reshape(shape))
    return V(jnp.reshape(x.onnx(), shape))


def _reshape_error(ctx, src, shape):
    return cv.ModelImportError(
        f"{ctx.g.name}: cannot reshape a tensor of shape {list(src)} to {shape}: the graph "
        f"hard-codes a size (a static batch size?); {EXPORT_HINT}")


@op("Flatten")
def _flatten(ctx, node, ins, attrs):
    x = ins[0]
    axis = attrs.get("axis", 1) % max(len(x.shape), 1)
    xp = _xp(x)
    arr = x.x if x.static else x.onnx()
    lead = int(np.prod(x.shape[:axis]))
    return V(xp.reshape(arr, (lead, -1)))


@op("Transpose")
def _transpose(ctx, node, ins, attrs):
    x = ins[0]
    rank = len(x.shape)
    perm = tuple(attrs.get("perm", tuple(reversed(range(rank)))))
    if x.static:
        return V(np.transpose(x.x, perm))
    base = TO_NCHW if x.nhwc else tuple(range(rank))
    untagged = tuple(base[p] for p in perm)  # array axes -> ONNX output
    if ctx.g.nhwc and rank == 4:
        tagged = tuple(untagged[p] for p in TO_NHWC)
        if tagged == tuple(range(4)) or untagged != tuple(range(4)):
            return V(jnp.transpose(x.x, tagged), True)
    return V(jnp.transpose(x.x, untagged))


def _squeeze_axes(ctx, node, ins, attrs):
    return _axes(ctx, node, ins, attrs)


@op("Squeeze")
def _squeeze(ctx, node, ins, attrs):
    x = ins[0]
    axes = _squeeze_axes(ctx, node, ins, attrs)
    xp = _xp(x)
    arr = x.x if x.static else x.onnx()
    if axes is None:
        return V(xp.squeeze(arr))
    return V(xp.squeeze(arr, axis=tuple(a % len(x.shape) for a in axes)))


@op("Unsqueeze")
def _unsqueeze(ctx, node, ins, attrs):
    x = ins[0]
    axes = _squeeze_axes(ctx, node, ins, attrs)
    xp = _xp(x)
    arr = x.x if x.static else x.onnx()
    rank = len(x.shape) + len(axes)
    for a in sorted(ax % rank for ax in axes):
        arr = xp.expand_dims(arr, a)
    return V(arr)


@op("Concat")
def _concat(ctx, node, ins, attrs):
    ins = [v for v in ins if v is not None]
    rank = len(ins[0].shape)
    axis = attrs["axis"] % rank
    if all(v.static for v in ins):
        return V(np.concatenate([v.x for v in ins], axis=axis))
    if ctx.g.nhwc and rank == 4 and any(v.nhwc for v in ins):
        return V(jnp.concatenate([v.as_nhwc() for v in ins], axis=NHWC_AXIS[axis]), True)
    return V(jnp.concatenate([jnp.asarray(v.onnx()) for v in ins], axis=axis))


@op("Gather")
def _gather(ctx, node, ins, attrs):
    data, idx = ins[0], ins[1]
    axis = attrs.get("axis", 0) % len(data.shape)
    if data.static and idx.static:
        return V(np.take(data.x, idx.x, axis=axis))
    arr = data.onnx()
    i = idx.x
    i = (np if idx.static else jnp).where(i < 0, i + arr.shape[axis], i)
    return V(jnp.take(arr, i, axis=axis, mode="clip"))


@op("Slice")
def _slice(ctx, node, ins, attrs):
    x = ins[0]
    if ctx.g.opset_ai < 10:
        starts, ends = attrs["starts"], attrs["ends"]
        axes = attrs.get("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = _const(ins[1]).tolist(), _const(ins[2]).tolist()
        axes = _const(ins[3]).tolist() if len(ins) > 3 and ins[3] is not None \
            else list(range(len(starts)))
        steps = _const(ins[4]).tolist() if len(ins) > 4 and ins[4] is not None \
            else [1] * len(starts)
    rank = len(x.shape)
    index = [slice(None)] * rank
    big = 2**62
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        s = int(max(min(s, big), -big))
        e = int(max(min(e, big), -big))
        index[a % rank] = slice(s, e, int(st))
    if x.static:
        return V(x.x[tuple(index)])
    if x.nhwc and rank == 4:
        return V(x.x[tuple(index[a] for a in TO_NHWC)], True)
    return V(x.onnx()[tuple(index)])


@op("Split")
def _split(ctx, node, ins, attrs):
    x = ins[0]
    rank = len(x.shape)
    axis = attrs.get("axis", 0) % rank
    if len(ins) > 1 and ins[1] is not None:
        sizes = _const(ins[1]).tolist()
    elif "split" in attrs:
        sizes = list(attrs["split"])
    else:
        n = attrs.get("num_outputs", len(node.output))
        size = -(-x.shape[axis] // n)
        sizes = [size] * (n - 1) + [x.shape[axis] - size * (n - 1)]
    cuts = np.cumsum(sizes)[:-1].tolist()
    if x.nhwc and rank == 4:
        return [V(p, True) for p in jnp.split(x.x, cuts, axis=NHWC_AXIS[axis])]
    xp = _xp(x)
    return [V(p) for p in xp.split(x.x if x.static else x.onnx(), cuts, axis=axis)]


@op("Expand")
def _expand(ctx, node, ins, attrs):
    x = ins[0]
    shape = np.broadcast_shapes(x.shape, tuple(int(d) for d in _const(ins[1])))
    xp = _xp(x)
    return V(xp.broadcast_to(x.x if x.static else x.onnx(), shape))


@op("Pad")
def _pad(ctx, node, ins, attrs):
    x = ins[0]
    rank = len(x.shape)
    mode = attrs.get("mode", "constant")
    if ctx.g.opset_ai < 11:
        pads, value = list(attrs["pads"]), attrs.get("value", 0.0)
        axes = list(range(rank))
    else:
        pads = _const(ins[1]).tolist()
        value = 0.0
        if len(ins) > 2 and ins[2] is not None:
            value = _const(ins[2]).reshape(-1)[0] if ins[2].static else ins[2].x
        axes = _const(ins[3]).tolist() if len(ins) > 3 and ins[3] is not None \
            else list(range(rank))
    n = len(axes)
    widths = [(0, 0)] * rank
    for i, a in enumerate(axes):
        widths[a % rank] = (int(pads[i]), int(pads[i + n]))
    if any(lo < 0 or hi < 0 for lo, hi in widths):
        return ctx.fallback(node, ins)
    kw = {"constant_values": value} if mode == "constant" else {}
    jmode = {"constant": "constant", "reflect": "reflect", "edge": "edge",
             "wrap": "wrap"}[mode]
    if x.nhwc and rank == 4:
        return V(jnp.pad(x.x, [widths[a] for a in TO_NHWC], mode=jmode, **kw), True)
    xp = _xp(x)
    return V(xp.pad(x.x if x.static else x.onnx(), widths, mode=jmode, **kw))


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
    input_scale=1.0,
    mean=None,
    std=None,
    layout: str = "auto",
    outputs: str = "auto",
    num_classes: int | None = None,
    class_names=None,
    name: str | None = None,
    backend: str = "jaxattack",
    nhwc: bool = True,
    check: bool = True,
    check_images=None,
    check_labels=None,
):
    """An ONNX model (a path or an ``onnx.ModelProto``) as a :class:`Classifier`.

    Args:
      input_scale, mean, std: the input convention (see :func:`conventions.make`):
        PyTorch models usually want ``input_scale=1`` (0..1) with ``mean``/``std``
        (``"imagenet"`` and ``"cifar10"`` name the usual statistics).
      layout: the layout of the graph's input; ``"auto"`` reads it from the declared
        input shape (``[batch, 3, H, W]`` is channels-first).
      outputs: ``"auto"`` (probabilities if the outputs on the check images are),
        ``"probs"`` or ``"logits"``.
      backend: ``"jaxattack"`` (this module's interpreter) or ``"jaxonnxruntime"``
        (jaxonnxruntime's, channels-first, re-traced for each batch shape).
      nhwc: run channels-first graphs channels-last (the fast path; ``False`` keeps
        the ONNX layout, for comparison).
      check: run the convention checks (:func:`conventions.check`) on real images.
    """
    from ..classifier import Classifier

    onnx = _import_onnx()
    label = name or (Path(model_or_path).stem if isinstance(model_or_path, str | os.PathLike)
                     else "onnx")
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
    lay, hwc = cv.infer_layout(declared, layout, label_src, default="NCHW")
    conv = cv.make(input_scale, mean, std, lay, channels=hwc[2] if hwc else None)
    dtype = graph.input_dtype()
    if dtype.kind != "f":
        raise cv.ModelImportError(f"{label_src} takes {dtype} input; jaxattack feeds floats")
    static_batch = declared[0] if declared and declared[0] else None
    out_dim = model.graph.output[0].type.tensor_type.shape.dim
    k_declared = out_dim[-1].dim_value if out_dim and out_dim[-1].HasField("dim_value") \
        else None

    if backend == "jaxonnxruntime":
        params, run = _jort(model, label_src)
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

    if check:
        res = cv.check(build, params, conv, name=label_src, outputs=outputs,
                       num_classes=num_classes or k_declared, input_shape=hwc,
                       images=check_images, labels=check_labels)
        outs, k = res.outputs, res.num_classes
    else:
        outs = cv.unchecked_outputs(outputs)
        k = num_classes or k_declared
        if k is None:
            raise ValueError("pass num_classes= (the graph's output size is dynamic)")
    names = tuple(class_names) if class_names is not None else None
    return Classifier(build(conv), params, int(k), outputs=outs, input_shape=hwc,
                      class_names=names, name=label)


def _jort(model, label):
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
