"""The layers a network declares for the sparse forward pass, and the graph they make.

A module declares itself with ``sparse_layers(self) -> list`` of the layers below, in
the order its ``__call__`` applies them; ``models.from_module`` picks the method up.
For example, ``tiny``::

    [Normalize(MEAN, STD), *stem.sparse_layers(), MaxPool(2), ..., Head(fn)]

Spatial layers (``Conv``, ``MaxPool``, ``AvgPool``, ``Residual``) get a node of their
own; per-position layers (``Normalize``, ``BatchNorm``, ``Relu``, ``Act``) are fused
into the node before them. ``Head`` is whatever follows the last spatial layer (global
pooling, flatten, dense layers): it always runs dense. Shapes are NHWC; every function
here also accepts a single unbatched ``[H, W, C]`` crop, since the sparse pass vmaps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _cast(x, dtype):
    return x if dtype is None else x.astype(dtype)


# ---- per-position layers -------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Normalize:
    """``(x - mean) / std`` per channel, after casting the uint8 image to float32."""

    mean: Any
    std: Any

    def __call__(self, x):
        x = x.astype(jnp.float32)
        return (x - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.std, jnp.float32)


@dataclasses.dataclass(frozen=True)
class BatchNorm:
    """Inference BatchNorm with running statistics, as ``flax.nnx.BatchNorm`` computes it."""

    mean: Any
    var: Any
    scale: Any = None
    bias: Any = None
    epsilon: float = 1e-5
    dtype: Any = None

    @classmethod
    def of(cls, bn) -> BatchNorm:
        """From an ``nnx.BatchNorm`` in eval mode."""
        val = lambda v: None if v is None else v[...]  # noqa: E731
        return cls(val(bn.mean), val(bn.var), val(bn.scale), val(bn.bias), bn.epsilon,
                   bn.dtype)

    def __call__(self, x):
        dt = self.dtype
        x, mean, var = _cast(x, dt), _cast(self.mean, dt), _cast(self.var, dt)
        y = x - mean
        mul = jax.lax.rsqrt(var + self.epsilon)
        if self.scale is not None:
            mul = mul * _cast(self.scale, dt)
        y = y * mul
        if self.bias is not None:
            y = y + _cast(self.bias, dt)
        return y


@dataclasses.dataclass(frozen=True)
class Act:
    """Any function applied to each position on its own (an activation, a cast)."""

    fn: Callable

    def __call__(self, x):
        return self.fn(x)


def Relu() -> Act:  # noqa: N802 - reads as a layer
    return Act(jax.nn.relu)


@dataclasses.dataclass(frozen=True)
class PadChannels:
    """Zero channels before and after (ResNet's option-A shortcut)."""

    lo: int
    hi: int

    def __call__(self, x):
        return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(self.lo, self.hi)])


POINTWISE = (Normalize, BatchNorm, Act, PadChannels)

# Window convolutions with at most this many input channels run as XLA's convolution
# on the batch of crops; wider ones as im2col + one matmul. Measured on the 2-core CPU
# (XLA:CPU with YNNPACK, jax 0.10.2; ``benchmarks/sparse_forward.py``, k = 1, the
# handover of each model, both ways in one process): XLA's convolution took the sparse
# pass from 1.45x to 1.71x over the dense forward on ``tiny`` (32-64 channels) and from
# 1.42x to 1.74x on ``resnet20`` (16-64), but from 4.90x to 3.32x on ``nin`` (5x5,
# 96-192) and 3.80x to 3.03x on ``allcnn`` (96-192); ``vgg16`` was level. Not measured
# on an accelerator.
WINDOW_XLA_MAX_CHANNELS = 64


def _im2col_dense(node) -> bool:
    """Whether the dense part runs a convolution as im2col + matmul rather than XLA's
    convolution: only on maps of at most 4x4 (XLA:CPU's convolution is ~30x slower
    there, as vgg16's shifted matmuls show). Tried and measured slower in the whole
    network on the 2-core CPU: im2col from 64 input channels on (tiny 788 ms vs 325 ms
    per 400 images), or everywhere (863 ms)."""
    return max(node.shape[:2]) <= 4


# ---- spatial layers ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Conv:
    """A 2-D convolution, HWIO ``kernel``; ``padding`` "SAME", "VALID" or explicit pairs."""

    kernel: Any
    bias: Any = None
    strides: tuple[int, int] = (1, 1)
    padding: Any = "SAME"
    dtype: Any = None

    @classmethod
    def of(cls, conv) -> Conv:
        """From an ``nnx.Conv`` (no dilation, no feature groups)."""
        if any(d not in (None, 1) for d in _pair(conv.kernel_dilation) + _pair(
                conv.input_dilation)) or conv.feature_group_count != 1:
            raise ValueError("sparse Conv supports no dilation and no feature groups")
        bias = None if conv.bias is None else conv.bias[...]
        return cls(conv.kernel[...], bias, _pair(conv.strides), conv.padding, conv.dtype)

    def pads(self, size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
        if isinstance(self.padding, str):
            return tuple(jax.lax.padtype_to_pads(size, self.kernel.shape[:2], self.strides,
                                                 self.padding))
        return tuple(tuple(p) for p in self.padding)


def _pair(v) -> tuple[int, int]:
    if v is None:
        return (1, 1)
    return (v, v) if isinstance(v, int) else tuple(v)


@dataclasses.dataclass(frozen=True)
class MaxPool:
    """``window x window`` max pool with stride ``window`` (no padding)."""

    window: int = 2


@dataclasses.dataclass(frozen=True)
class AvgPool:
    """``window x window`` average pool with stride ``window`` (no padding)."""

    window: int = 2


@dataclasses.dataclass(frozen=True)
class Subsample:
    """``x[::stride, ::stride]`` (a strided identity shortcut)."""

    stride: int = 2


@dataclasses.dataclass(frozen=True)
class Residual:
    """``post(main(x) + shortcut(x))``; each part a list of layers (``shortcut`` empty:
    the identity)."""

    main: Sequence
    shortcut: Sequence = ()
    post: Sequence = ()


@dataclasses.dataclass(frozen=True)
class Head:
    """The rest of the network from the last spatial layer's output (always dense)."""

    fn: Callable


# ---- the graph -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Node:
    """One tensor of the graph and how it is computed from earlier ones.

    ``kind``: "input" (the image as float), "conv", "pool" (max/avg), "pick" (a strided
    identity: kernel 1), "add" or "map" (per-position only). ``inputs`` index earlier
    nodes. Each output position reads a ``kernel`` window of its inputs at ``stride``
    after padding by ``pads`` (zeros), so window geometry is one rule for every kind.
    ``post`` is the fused chain of per-position layers. ``shape`` is ``(H, W, C)``.
    """

    kind: str
    inputs: tuple[int, ...]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[tuple[int, int], tuple[int, int]]
    shape: tuple[int, int, int]
    layer: Any = None
    post: tuple = ()

    @property
    def im2col(self) -> bool:
        """Whether this node's windows run as im2col + matmul (a convolution wider than
        1 x 1 with more than ``WINDOW_XLA_MAX_CHANNELS`` input channels) rather than as
        XLA's convolution; their crops then need materialising (``plan._materialise``)."""
        return (self.kind == "conv" and self.kernel[0] * self.kernel[1] > 1
                and self.layer.kernel.shape[2] > WINDOW_XLA_MAX_CHANNELS)

    def apply(self, *xs, post: bool = True):
        """This node on already padded inputs (VALID semantics): a whole map or a crop
        (``post`` false: without its fused per-position layers)."""
        x = xs[0]
        if self.kind == "conv":
            small = self.kernel[0] * self.kernel[1] == 1 or self.im2col
            x = (conv_valid if small else conv_dense)(x, self.layer)
        elif self.kind == "pool":
            x = pool(x, self.layer)
        elif self.kind == "pick":
            s = self.stride
            x = x[..., ::s[0], ::s[1], :]
        elif self.kind == "add":
            x = xs[0] + xs[1]
        return self.activate(x) if post else x

    def activate(self, x):
        """This node's fused per-position layers (``post``) on ``x``."""
        for fn in self.post:
            x = fn(x)
        return x

    @property
    def macs(self) -> float:
        """Multiply-adds per output position (other kinds: per-element work ~ channels)."""
        if self.kind == "conv":
            kh, kw, cin, cout = self.layer.kernel.shape
            return float(kh * kw * cin * cout)
        return float(self.shape[2] * max(1, self.kernel[0] * self.kernel[1]))


def conv_valid(x, layer: Conv):
    """A VALID convolution of padded ``x`` ([..., H, W, Cin]) as im2col plus one matmul:
    on XLA:CPU faster than its convolution on small maps, and batched by vmap into one
    large matmul."""
    w = _cast(layer.kernel, layer.dtype)
    x = _cast(x, layer.dtype)
    kh, kw, cin, cout = w.shape
    sh, sw = layer.strides
    h = (x.shape[-3] - kh) // sh + 1
    wd = (x.shape[-2] - kw) // sw + 1
    if kh == kw == 1:
        patches = x[..., : (h - 1) * sh + 1: sh, : (wd - 1) * sw + 1: sw, :]
    else:
        cols = [x[..., i: i + (h - 1) * sh + 1: sh, j: j + (wd - 1) * sw + 1: sw, :]
                for i in range(kh) for j in range(kw)]
        patches = jnp.concatenate(cols, axis=-1)
    y = jnp.einsum("...k,ko->...o", patches, w.reshape(kh * kw * cin, cout))
    if layer.bias is not None:
        y = y + _cast(layer.bias, layer.dtype)
    return y


def conv_dense(x, layer: Conv):
    """The same convolution as XLA's own, on padded ``x`` ([N, H, W, Cin] or [H, W, Cin])."""
    w = _cast(layer.kernel, layer.dtype)
    x = _cast(x, layer.dtype)
    y = jax.lax.conv_general_dilated(x if x.ndim == 4 else x[None], w, layer.strides,
                                     "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = y if x.ndim == 4 else y[0]
    if layer.bias is not None:
        y = y + _cast(layer.bias, layer.dtype)
    return y


def pool(x, layer):
    n = layer.window
    *lead, h, w, c = x.shape
    x = x[..., : h // n * n, : w // n * n, :].reshape(*lead, h // n, n, w // n, n, c)
    return x.max(axis=(-4, -2)) if isinstance(layer, MaxPool) else x.mean(axis=(-4, -2))


def compile_graph(layers: Sequence, image_shape: tuple[int, int, int]):
    """``(nodes, head)`` of a declared layer list for images ``(H, W, C)``.

    Raises ValueError naming the first layer the sparse pass cannot take.
    """
    nodes = [Node("input", (), (1, 1), (1, 1), ((0, 0), (0, 0)), tuple(image_shape))]
    head = _chain(nodes, 0, list(layers), top=True)
    if head is None:
        raise ValueError("the declared layers end without a Head (the dense rest of the "
                         "network after the last spatial layer)")
    return tuple(nodes), head


def _chain(nodes: list, cur: int, layers: list, top: bool = False):
    """Append ``layers`` after node ``cur``; returns the Head's function (top level) or
    the last node's index. A branch of a Residual never fuses into the node it starts
    from (the other branch reads that node as it is)."""
    for i, layer in enumerate(layers):
        if isinstance(layer, Head):
            if not top or i != len(layers) - 1:
                raise ValueError("Head must be the last declared layer")
            return layer.fn
        cur = _add(nodes, cur, layer, fuse=top or i > 0)
    return None if top else cur


def _add(nodes: list, cur: int, layer, fuse: bool = True) -> int:
    prev = nodes[cur]
    h, w, c = prev.shape
    if isinstance(layer, POINTWISE):
        out_c = c + layer.lo + layer.hi if isinstance(layer, PadChannels) else c
        if (fuse and prev.kind != "input" and cur == len(nodes) - 1
                and not _consumed(nodes, cur)):
            nodes[cur] = dataclasses.replace(prev, post=prev.post + (layer,),
                                             shape=(h, w, out_c))
            return cur
        nodes.append(Node("map", (cur,), (1, 1), (1, 1), ((0, 0), (0, 0)), (h, w, out_c),
                          post=(layer,)))
    elif isinstance(layer, Conv):
        kh, kw, cin, cout = layer.kernel.shape
        if cin != c:
            raise ValueError(f"a Conv with {cin} input channels follows a {c}-channel map")
        pads = layer.pads((h, w))
        oh = (h + sum(pads[0]) - kh) // layer.strides[0] + 1
        ow = (w + sum(pads[1]) - kw) // layer.strides[1] + 1
        nodes.append(Node("conv", (cur,), (kh, kw), tuple(layer.strides), pads,
                          (oh, ow, cout), layer))
    elif isinstance(layer, MaxPool | AvgPool):
        n = layer.window
        nodes.append(Node("pool", (cur,), (n, n), (n, n), ((0, 0), (0, 0)),
                          (h // n, w // n, c), layer))
    elif isinstance(layer, Subsample):
        s = layer.stride
        nodes.append(Node("pick", (cur,), (1, 1), (s, s), ((0, 0), (0, 0)),
                          (-(-h // s), -(-w // s), c), layer))
    elif isinstance(layer, Residual):
        a = _chain(nodes, cur, list(layer.main))
        b = _chain(nodes, cur, list(layer.shortcut)) if layer.shortcut else cur
        if nodes[a].shape != nodes[b].shape:
            raise ValueError(f"Residual adds maps of shapes {nodes[a].shape} and "
                             f"{nodes[b].shape}")
        nodes.append(Node("add", (a, b), (1, 1), (1, 1), ((0, 0), (0, 0)), nodes[a].shape))
        return _chain(nodes, len(nodes) - 1, list(layer.post))
    else:
        raise ValueError(f"the sparse forward does not support layer {type(layer).__name__}")
    return len(nodes) - 1


def _consumed(nodes: list, i: int) -> bool:
    """Whether a later node already reads node ``i`` (then its output cannot change)."""
    return any(i in n.inputs for n in nodes[i + 1:])


def dense(nodes: Sequence[Node], head, image, start: int = 0, values: dict | None = None):
    """Every node from ``start`` on, on whole maps ``[N, H, W, C]``; ``values`` holds the
    maps of the earlier nodes that later ones read. Returns the head's output."""
    values = dict(values or {})
    if start == 0:
        values[0] = image.astype(jnp.float32)
        start = 1
    for i in range(start, len(nodes)):
        node = nodes[i]
        xs = [_pad(values[j], node.pads) for j in node.inputs]
        if node.kind == "conv":
            x = (conv_valid if _im2col_dense(node) else conv_dense)(xs[0], node.layer)
            values[i] = node.activate(x)
        else:
            values[i] = node.apply(*xs)
    return head(values[len(nodes) - 1])


def _pad(x, pads):
    if not any(np.ravel(pads)):
        return x
    return jnp.pad(x, [(0, 0)] * (x.ndim - 3) + [tuple(pads[0]), tuple(pads[1]), (0, 0)])
