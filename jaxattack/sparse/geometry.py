"""Receptive-field cones, window sizes and the cost model that picks the handover.

Per node and axis, the changed output range of an input pixel at coordinate ``y`` is
``lo(y) .. hi(y)``: a node reading its input's range ``a .. b`` through a ``kernel``
at ``stride`` after ``pad_lo`` zeros changes outputs ``ceil((a + pad_lo - kernel + 1)
/ stride) .. floor((b + pad_lo) / stride)`` (clipped to the map); an addition takes the
union of its inputs' ranges. The sparse pass computes a window of fixed size ``S`` (the
largest range over all ``y``) starting at ``clip(lo(y), 0, N - S)``: it holds the whole
range wherever it is clipped, so every changed value lies inside some window.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxattack.sparse.nodes import Node

# The cost model, in multiply-add equivalents: a multiply-add in a window costs
# SPARSE_MAC times one in the dense part (smaller matmuls), and each element copied
# while building crops, im2col patches and the handover map costs COPY. Fit to tiny's
# timed handovers at k = 1 and 3 (``benchmarks/sparse_forward.py --handovers``) on the
# shared 2-core CPU: rms error of the modelled speed-up about 15 %. On an accelerator
# the balance differs; ``sparse.plan(..., handover=)`` overrides the choice.
SPARSE_MAC = 2.0
COPY = 20.0
# A window convolution run as XLA's convolution (``Node.im2col`` false: at most
# ``layers.WINDOW_XLA_MAX_CHANNELS`` input channels) copies no patches, but XLA:CPU runs
# it on one thread: its multiply-adds cost this much instead of SPARSE_MAC. Fit to tiny's
# timed handovers at k = 1 and 3 after that change (2026-12-05): it keeps every zoo
# model's handover where it was, except tiny at k = 3 (node 4, measured 1.24x, rather
# than node 5, measured 0.82x; modelled below the auto gain either way).
XLA_WINDOW_MAC = 3.0
# The delta form of a window convolution (``plan._delta``) is costed with the same two
# constants: SPARSE_MAC per multiply-add of its one matmul, COPY per element of the
# input's change, of its products with every tap and of the sums into the output
# windows. Not fitted on its own: on every zoo model its modelled speed-ups came out
# at or below the measured ones (2026-12-05, benchmarks/README.md).


@dataclasses.dataclass(frozen=True)
class Cones:
    """Per node: window sizes ``(Sh, Sw)`` and start tables ``starts[axis][coord]``."""

    sizes: tuple[tuple[int, int], ...]
    starts: tuple[tuple[np.ndarray, np.ndarray], ...]


def cones(nodes: Sequence[Node]) -> Cones:
    h, w = nodes[0].shape[:2]
    ranges = [[(np.arange(h), np.arange(h)), (np.arange(w), np.arange(w))]]
    sizes, starts = [(1, 1)], [(np.arange(h), np.arange(w))]
    for node in nodes[1:]:
        per_axis, size, start = [], [], []
        for ax in (0, 1):
            n, k, s, pl = node.shape[ax], node.kernel[ax], node.stride[ax], node.pads[ax][0]
            los, his = [], []
            for u in node.inputs:
                a, b = ranges[u][ax]
                los.append(-((-(a + pl - k + 1)) // s))  # ceil division
                his.append((b + pl) // s)
            lo = np.clip(np.min(los, axis=0), 0, n - 1)
            hi = np.clip(np.max(his, axis=0), 0, n - 1)
            hi = np.maximum(hi, lo)  # an empty range (a pixel a pool drops): any window
            sz = int(min(n, (hi - lo + 1).max()))
            per_axis.append((lo, hi))
            size.append(sz)
            start.append(np.clip(lo, 0, n - sz).astype(np.int32))
        ranges.append(per_axis)
        sizes.append(tuple(size))
        starts.append(tuple(start))
    return Cones(tuple(sizes), tuple(starts))


def crop_size(node: Node, size: tuple[int, int]) -> tuple[int, int]:
    """The input crop an output window of ``size`` reads."""
    return tuple((size[a] - 1) * node.stride[a] + node.kernel[a] for a in (0, 1))


def cuts(nodes: Sequence[Node], head: Sequence[int] = ()) -> list[int]:
    """Nodes after which the network (and the ``head``, reading those nodes) reads
    nothing earlier: where the dense part may start from one map."""
    out = []
    for i in range(1, len(nodes)):
        if all(u >= i for n in nodes[i + 1:] for u in n.inputs) and all(u >= i for u in head):
            out.append(i)
    return out


def delta_ok(nodes: Sequence[Node], i: int) -> bool:
    """Whether node ``i``'s windows can run as clean + conv(change) (``plan._delta``): a
    stride-1, undilated, ungrouped float32 convolution of one windowed map (not the raw
    image, whose windows are colours painted over each other rather than values)."""
    node = nodes[i]
    conv = node.conv
    if (conv is None or node.stride != (1, 1) or node.inputs[0] < 1 or conv.groups != 1
            or conv.dilation != (1, 1) or node.pad_value != 0):
        return False
    return np.dtype(conv.dtype) == np.float32


def costs(nodes: Sequence[Node], cone: Cones, k: int, delta: bool | None = None,
          head: Sequence[int] = ()) -> tuple[dict[int, float], frozenset[int]]:
    """Modelled cost of one candidate per handover node (0: all dense), and the nodes
    whose windows run in the delta form: where it is modelled cheaper (``delta`` None),
    wherever it can (True) or nowhere (False)."""
    def area(shape):
        return shape[0] * shape[1]

    dense = [0.0] + [area(n.shape) * n.macs for n in nodes[1:]]
    sparse, deltas = [0.0], set()
    for i, node in enumerate(nodes[1:], 1):
        crop = crop_size(node, cone.sizes[i])
        # per pixel: each input's crop gathered and k windows selected over it (none
        # where the node reads its input's windows as they are), and for an im2col
        # convolution its patches
        copies = 0 if node.direct else sum(
            nodes[u].shape[2] * area(crop) * (1 + k) for u in node.inputs)
        mac = SPARSE_MAC
        if node.im2col:
            copies += area(cone.sizes[i]) * node.kernel[0] * node.kernel[1] * \
                nodes[node.inputs[0]].shape[2]
        elif node.conv is not None and node.conv.window_form() == "xla":
            mac = XLA_WINDOW_MAC
        cost = k * (mac * area(cone.sizes[i]) * node.macs + COPY * copies)
        if delta is not False and delta_ok(nodes, i):
            u = node.inputs[0]
            src, taps, cout = area(cone.sizes[u]), node.kernel[0] * node.kernel[1], \
                node.shape[2]
            # the input's change (k windows, each masked by the earlier ones), its
            # products with every tap, and k sums into each of the k output windows
            moved = (src * nodes[u].shape[2] * (1 + k) + src * taps * cout
                     + k * area(cone.sizes[i]) * cout)
            alt = k * (SPARSE_MAC * src * node.macs + COPY * moved)
            if delta or alt < cost:
                cost = alt
                deltas.add(i)
        sparse.append(cost)
    out = {0: float(sum(dense))}
    for cut in cuts(nodes, head):
        paste = COPY * nodes[cut].shape[2] * area(nodes[cut].shape) * (1 + k)
        out[cut] = float(sum(sparse[1:cut + 1]) + paste + sum(dense[cut + 1:]))
    return out, frozenset(deltas)
