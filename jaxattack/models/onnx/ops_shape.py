"""Shape ops, evaluated with numpy while tracing when their inputs are static
(``Shape``, ``Gather``, ``Concat``... on shapes), and the layout-aware tensor ops:
reshape, transpose, squeeze, concat, gather, slice, split, expand, pad."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .. import conventions as cv
from .core import EXPORT_HINT, NHWC_AXIS, TO_NCHW, TO_NHWC, V, _axes, _const, _xp, op

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

