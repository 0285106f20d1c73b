"""Element-wise ops: unary functions, casts, clipping, and the broadcasting binary and
variadic ops (NHWC operands stay channels-last)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .core import OPS, V, _np_dtype, _to_rank4, _xp, op


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

