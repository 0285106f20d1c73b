"""Network ops: convolution, BatchNorm, pooling, reductions, softmax and the dense ops.
2-D convolutions and pools run channels-last on NHWC arrays."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .. import conventions as cv
from .core import NHWC_AXIS, OPS, V, _axes, _xp, op

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


@op("LRN")
def _lrn(ctx, node, ins, attrs):
    return ctx.fallback(node, [V(ins[0].onnx())])


# -- reductions, softmax


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


