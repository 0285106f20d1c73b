"""The sparse forward's graph: nodes, their per-position parts and how each is computed.

``Node`` is one map (channels-last ``[..., H, W, C]`` inside, whatever layout the model
uses) with the window geometry of how it reads its inputs, an operation (``ConvOp``,
``PoolOp``, ``PickOp``, ``MixOp``) and a fused per-position part (``Expr``: the model's
own elementwise equations, replayed on windows). ``Graph`` holds the nodes of the
spatial prefix and the head after them. ``rules.py`` builds both from a jaxpr.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxattack.programs import convs, jaxprs

# Window convolutions with at most this many input channels run as XLA's convolution
# on the batch of crops; wider ones as im2col + one matmul. Measured on the 2-core CPU
# (XLA:CPU with YNNPACK, jax 0.10.2; ``benchmarks/sparse_forward.py``, k = 1, the
# handover of each model, both ways in one process): XLA's convolution took the sparse
# pass from 1.45x to 1.71x over the dense forward on ``tiny`` (32-64 channels) and from
# 1.42x to 1.74x on ``resnet20`` (16-64), but from 4.90x to 3.32x on ``nin`` (5x5,
# 96-192) and 3.80x to 3.03x on ``allcnn`` (96-192); ``vgg16`` was level. Not measured
# on an accelerator.
WINDOW_XLA_MAX_CHANNELS = 64

IDENTITY = {"max": -np.inf, "min": np.inf, "add": 0.0, "sum": 0.0}


class Stop(Exception):
    """The spatial prefix ends at this equation (the message says why)."""


# ---- what the walk knows about a value --------------------------------------------------

class Operand(NamedTuple):
    """An operand of a per-position equation: a map (``index``: which one) or a
    constant (``ref``) and how to bring it to the channels-last layout."""

    index: int | None = None  # position among the equation's map operands
    ref: Any = None  # a value of the program (an int) or a jaxprs.Lit
    perm: tuple | None = None  # value axes of (N, H, W, C) for a rank-4 constant
    expand: tuple | None = None  # reshape first (a broadcast_in_dim's operand, 1s added)
    spatial: bool = False  # varies over H or W: sliced at the window's origin


class PosEqn(NamedTuple):
    """A per-position equation on channels-last values: ``how`` is "elementwise" (its
    primitive on operands broadcast together), "concat", "pad" or "slice" (of the
    channels, ``arg`` the parameters)."""

    eqn: jaxprs.Eqn
    operands: tuple[Operand, ...]
    how: str
    arg: Any = None


@dataclasses.dataclass(frozen=True)
class Sp:
    """A map of the prefix: derived per position from node ``base``'s raw output,
    ``layout`` the value's axes of (N, H, W, C); an alias of ``src`` (a transpose) or the
    result of ``pos`` (whose map operands are ``args``), or the raw output itself."""

    base: int
    layout: tuple
    src: int | None = None
    pos: PosEqn | None = None
    args: tuple = ()


@dataclasses.dataclass(frozen=True)
class Blocked:
    """A map reshaped to split H and W into blocks: ``axes`` the new value's axes of
    (N, H outer, H inner, W outer, W inner, C) (None: not split)."""

    src: int
    axes: tuple
    block: tuple[int, int]


def _const_value(consts, op: Operand):
    v = op.ref.val if isinstance(op.ref, jaxprs.Lit) else consts[op.ref]
    v = jnp.asarray(v)
    if op.expand is not None:
        v = v.reshape(op.expand)
    if v.ndim == 4:
        v = jnp.transpose(v, op.perm)[0]  # [h, w, c], broadcasting against [..., h, w, c]
    return v


def _slice_at(v, origin, shape):
    """A spatially varying constant ``[H, W, c]`` (or 1 on an axis) at ``origin``."""
    if origin is None:
        return v
    start = tuple(origin[a] if v.shape[a] > 1 else 0 for a in (0, 1)) + (0,)
    size = tuple(shape[a] if v.shape[a] > 1 else 1 for a in (0, 1)) + (v.shape[2],)
    return lax.dynamic_slice(v, start, size)


def _apply_pos(pe: PosEqn, maps: Sequence, consts, origin):
    """A per-position equation on channels-last ``maps`` ``[..., h, w, c]`` at
    ``origin`` (None: whole maps)."""
    like = maps[0]
    args = []
    for op in pe.operands:
        if op.index is not None:
            args.append(maps[op.index])
        else:
            v = _const_value(consts, op)
            args.append(_slice_at(v, origin, like.shape[-3:-1]) if op.spatial else v)
    if pe.how == "elementwise":
        shape = jnp.broadcast_shapes(*(jnp.shape(a) for a in args))
        return jaxprs.bind(pe.eqn, *(jnp.broadcast_to(a, shape) for a in args))[0]
    if pe.how == "concat":
        lead = jnp.broadcast_shapes(*(jnp.shape(a)[:-1] for a in args))
        return lax.concatenate([jnp.broadcast_to(a, lead + a.shape[-1:]) for a in args],
                               len(lead))
    x = args[0]
    if pe.how == "pad":
        return lax.pad(x, jnp.asarray(args[1], x.dtype), [(0, 0, 0)] * (x.ndim - 1) + [pe.arg])
    if pe.how == "slice":
        return lax.slice_in_dim(x, *pe.arg, axis=x.ndim - 1)
    raise AssertionError(pe.how)


@dataclasses.dataclass(frozen=True, eq=False)
class Expr:
    """Per-position equations from one value (``leaf``) to another (``out``)."""

    steps: tuple  # (out ref, PosEqn, map operand refs), in program order
    leaf: int
    out: int
    leaf_dtype: Any = None  # the leaf is held as float32; cast to this first (uint8)
    spatial: bool = False  # some constant varies over H or W

    def __call__(self, consts, x, origin=None):
        """On ``x`` ``[..., h, w, c]`` whose top-left position is ``origin`` (int32 [2],
        or [B, 2] for a batch ``x`` [B, h, w, c]; None: whole maps)."""
        if self.spatial and origin is not None and origin.ndim == 2:
            return jax.vmap(lambda xi, oi: self(consts, xi, oi))(x, origin)
        env = {self.leaf: x if self.leaf_dtype is None else x.astype(self.leaf_dtype)}
        for out, pe, args in self.steps:
            env[out] = _apply_pos(pe, [env[a] for a in args], consts, origin)
        return env[self.out]


# ---- node operations ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ConvOp:
    """A convolution of the node's (padded) input: kernel ``ref`` (transposed to HWIO by
    ``perm``, its spatial axes swapped where the model's order is W, H)."""

    ref: Any
    perm: tuple
    swap: bool
    strides: tuple
    dilation: tuple
    groups: int
    precision: Any
    preferred: Any
    shape: tuple  # HWIO
    dtype: Any  # of the input and kernel

    def kernel(self, consts):
        w = jnp.transpose(jnp.asarray(consts[self.ref]), self.perm)
        return jnp.swapaxes(w, 0, 1) if self.swap else w

    def window_form(self) -> str:
        """How a batch of window crops is convolved (see WINDOW_XLA_MAX_CHANNELS)."""
        kh, kw, cin, _ = self.shape
        if self.groups > 1:
            return "depthwise" if cin == 1 else "grouped"
        if (kh, kw) == (1, 1) and self.strides == (1, 1):
            return "matmul"
        plain = self.dilation == (1, 1)
        return "im2col" if plain and cin > WINDOW_XLA_MAX_CHANNELS else "xla"

    def __call__(self, consts, xs, origin=None, window=False):
        x, w = xs[0], self.kernel(consts)
        how = self.window_form() if window else None
        if how == "im2col":
            return convs.im2col(x, w, self.strides, self.precision, self.preferred)
        return convs.conv(x, w, self.strides, ((0, 0), (0, 0)), self.dilation, self.groups,
                          self.precision, self.preferred, how)


@dataclasses.dataclass(frozen=True)
class PoolOp:
    """``reducer`` over ``window`` at ``strides`` of the (padded) input, from ``init``."""

    reducer: str
    window: tuple
    strides: tuple
    init: Any

    def __call__(self, consts, xs, origin=None, window=False):
        x = xs[0]
        if self.window == self.strides:  # non-overlapping: a reshape and a reduction
            (a, b), (h, w) = self.window, x.shape[-3:-1]
            x = x[..., : h // a * a, : w // b * b, :]
            x = x.reshape(*x.shape[:-3], h // a, a, w // b, b, x.shape[-1])
            red = {"max": jnp.max, "min": jnp.min, "sum": jnp.sum}[self.reducer]
            y = red(x, axis=(-4, -2))
            init = jnp.asarray(self.init, y.dtype)
            if self.init != IDENTITY[self.reducer]:
                y = {"max": jnp.maximum, "min": jnp.minimum, "sum": jnp.add}[self.reducer](
                    y, init)
            return y
        lead = x.ndim - 3
        fn = {"max": lax.max, "min": lax.min, "sum": lax.add}[self.reducer]
        return lax.reduce_window(x, jnp.asarray(self.init, x.dtype), fn,
                                 (1,) * lead + (*self.window, 1),
                                 (1,) * lead + (*self.strides, 1), "VALID")


@dataclasses.dataclass(frozen=True)
class PickOp:
    """Every ``stride``-th position of the (padded) input: a strided slice."""

    stride: tuple

    def __call__(self, consts, xs, origin=None, window=False):
        return xs[0][..., :: self.stride[0], :: self.stride[1], :]


@dataclasses.dataclass(frozen=True)
class MixOp:
    """A per-position equation of several nodes' maps (a residual add, a gate)."""

    pos: PosEqn

    def __call__(self, consts, xs, origin=None, window=False):
        if origin is not None and origin.ndim == 2 and any(o.spatial for o in self.pos.operands):
            return jax.vmap(lambda o, *x: _apply_pos(self.pos, x, consts, o))(origin, *xs)
        return _apply_pos(self.pos, xs, consts, origin)


@dataclasses.dataclass(frozen=True, eq=False)
class Node:
    """One map of the graph and how it is computed from earlier ones.

    ``kind``: "input" (the image, held as float32), "conv", "pool", "pick" (a strided
    slice), "pad", "mix" (a per-position equation of several maps) or "map" (per
    position of one map). ``inputs`` index earlier nodes. Each output position reads a
    ``kernel`` window of its inputs at ``stride`` after padding by ``pads`` (with
    ``pad_value``; negative pads crop), so window geometry is one rule for every kind.
    ``post`` is the fused per-position part. ``shape`` is ``(H, W, C)`` after it.
    """

    kind: str
    inputs: tuple[int, ...]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[tuple[int, int], tuple[int, int]]
    shape: tuple[int, int, int]
    op: Any = None
    post: Expr | None = None
    pad_value: float | int = 0.0  # a number (float), or a constant of the model (int ref)
    dtype: Any = jnp.float32  # after post

    @property
    def conv(self) -> ConvOp | None:
        return self.op if isinstance(self.op, ConvOp) else None

    @property
    def im2col(self) -> bool:
        """Whether this node's windows run as im2col + matmul on materialised crops."""
        return self.conv is not None and self.conv.window_form() == "im2col"

    @property
    def direct(self) -> bool:
        """Whether its windows are computed from its input's windows as they are (one
        input read per position: a map, a 1x1 convolution), not from crops. Not from
        the image, whose windows are colours painted over each other."""
        return (len(self.inputs) == 1 and self.inputs[0] != 0 and self.kernel == (1, 1)
                and self.stride == (1, 1) and not np.any(self.pads))

    def apply(self, consts, *xs, origin=None, post: bool = True, window: bool = False):
        """This node on already padded inputs (VALID semantics): whole maps (``origin``
        None) or crops whose outputs start at ``origin``; ``post`` false: without its
        fused per-position part; ``window``: the form for batches of small crops."""
        x = xs[0] if self.op is None else self.op(consts, xs, origin, window)
        return self.activate(consts, x, origin) if post else x

    def padding_value(self, consts):
        """The value this node pads its inputs with: a number, or a model constant."""
        v = self.pad_value
        return v if isinstance(v, float) else consts[v]

    def activate(self, consts, x, origin=None):
        """This node's fused per-position part on ``x``."""
        return x if self.post is None else self.post(consts, x, origin)

    @property
    def macs(self) -> float:
        """Multiply-adds per output position (other kinds: per-element work ~ channels)."""
        if self.conv is not None:
            kh, kw, cin, cout = self.conv.shape
            return float(kh * kw * cin * cout)
        return float(self.shape[2] * max(1, self.kernel[0] * self.kernel[1]))


def pad(x, pads, value=0.0):
    """``x`` ``[..., H, W, C]`` padded (negative: cropped) by ``pads`` on H and W."""
    if not np.any(pads):
        return x
    cfg = [(0, 0, 0)] * (x.ndim - 3) + [(*pads[0], 0), (*pads[1], 0), (0, 0, 0)]
    return lax.pad(x, jnp.asarray(value, x.dtype), cfg)


# ---- the graph -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class Graph:
    """The nodes of the spatial prefix and the head after it (see the module docstring).

    ``head_inputs``: per value the head reads, its node and its layout (value axes of
    N, H, W, C); ``stop``: why the prefix ends where it does."""

    nodes: tuple[Node, ...]
    program: jaxprs.Program
    head_refs: tuple[int, ...]
    head_inputs: tuple[tuple[int, tuple], ...]
    const_refs: tuple[int, ...]
    stop: str
    name: str = "classifier"

    def consts(self, params) -> dict:
        """The constants the nodes read, computed from ``params`` (inside a trace)."""
        leaves = jax.tree.leaves(params)
        vals = jaxprs.run(self.program, leaves, outputs=self.const_refs)
        return dict(zip(self.const_refs, vals, strict=True))

    def head(self, params, maps: Sequence):
        """The model's output ``[M, ...]`` from the head's maps (each ``[M, h, w, c]``,
        channels-last): its own equations replayed per candidate (``vmap`` of the
        one-image program), convolutions in their fast forms."""
        leaves = jax.tree.leaves(params)
        rules = {"conv_general_dilated": convs.conv_rule}

        def one(*xs):
            env = {ref: jnp.transpose(x[None], np.argsort(layout)) for x, ref, (_, layout)
                   in zip(xs, self.head_refs, self.head_inputs, strict=True)}
            return jaxprs.run(self.program, leaves, rules, env=env)[0][0]

        return jax.vmap(one)(*maps)

    def rest(self, params, consts, values: dict, start: int):
        """Every node from ``start`` on, on whole maps ``[M, H, W, C]`` (``values``: the
        maps of earlier nodes that later ones read), then the head."""
        values = dict(values)
        for i in range(start, len(self.nodes)):
            node = self.nodes[i]
            value = node.padding_value(consts)
            values[i] = node.apply(consts, *[pad(values[u], node.pads, value)
                                             for u in node.inputs])
        return self.head(params, [values[i] for i, _ in self.head_inputs])

    def dense(self, params, images):
        """The whole forward through the graph on uint8 ``images`` [M, H, W, C]."""
        return self.rest(params, self.consts(params), {0: images.astype(jnp.float32)}, 1)

    def describe(self, upto: int | None = None) -> str:
        """The nodes (up to ``upto``) in one line."""
        n = len(self.nodes) if upto is None else upto + 1
        return ", ".join(f"{i}:{nd.kind}{'x'.join(map(str, nd.shape))}"
                         for i, nd in enumerate(self.nodes[:n]))


