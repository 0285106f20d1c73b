"""A sparse forward plan for one classifier, k and image shape: prepare, then probs.

    plan = sparse.plan(classifier, k=1, image_shape=(32, 32, 3))  # None: dense only
    cache = plan.prepare(params, image)          # once per problem: clean activations
    probs = plan.probs(params, caches, pixels)   # [S, N, K] for pixels [S, N, k, 2 + C]

Per candidate and node up to the handover, each of the k pixels gets an output window
(``geometry``), computed from a crop of every input: the clean cached activation with
all k of that input's windows pasted into it, in pixel order. A stride-1 convolution
may instead compute its windows in the delta form (``_delta``, where the cost model
expects it to be cheaper): its clean output plus the convolution of its input's
change. Every window holds all the values its pixel can change and is computed from
exact inputs, so overlapping or repeated pixels stay exact. At the handover node the
k windows are pasted into its clean map and the rest of the network runs dense,
batched over candidates.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxattack.caches import memoize
from jaxattack.classifier import Classifier
from jaxattack.sparse import geometry
from jaxattack.sparse.nodes import Graph, pad
from jaxattack.sparse.rules import graph

# The graph read from the jaxpr must reproduce the classifier within this, run densely
# (checked once per classifier and image shape: a guard against a wrong rule).
GRAPH_TOLERANCE = {"float32": 1e-4, "other": 5e-2}


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
    """Static layout of the sparse pass (see the module docstring)."""

    classifier: Classifier
    pixels: int
    image_shape: tuple[int, int, int]
    graph: Graph
    handover: int  # the node whose map the dense part starts from
    cones: geometry.Cones
    margins: dict  # node -> per-axis padding of its cached map
    costs: dict  # handover node -> modelled cost per candidate
    deltas: tuple = ()  # nodes whose windows run as clean + conv(change) (``_delta``)

    @property
    def speedup(self) -> float:
        """Modelled speed-up over the dense forward."""
        return self.costs[0] / self.costs[self.handover]

    @property
    def nodes(self):
        return self.graph.nodes

    def prepare(self, params, image):
        """The clean activations one problem's candidates read: ``image`` uint8 [H, W, C]
        -> tuple of padded maps (the per-problem cache)."""
        consts = self.graph.consts(params)
        values, pre = {0: image[None].astype(jnp.float32)}, {}
        for i in range(1, self.handover + 1):
            node = self.nodes[i]
            value = node.padding_value(consts)
            x = node.apply(consts, *[pad(values[u], node.pads, value) for u in node.inputs],
                           post=i not in self.deltas)
            if i in self.deltas:  # a delta node's clean map before its per-position part
                pre[i], x = x, node.activate(consts, x)
            values[i] = x
        return tuple(pad(values[i][0], ((m[0], m[0]), (m[1], m[1])))
                     for i, m in sorted(self.margins.items())) + tuple(
                         pre[i][0] for i in self.deltas)

    def cache_bytes(self) -> int:
        """Bytes of one problem's cache."""
        shapes = jax.eval_shape(self.prepare, self.classifier.params,
                                jax.ShapeDtypeStruct(self.image_shape, jnp.uint8))
        return sum(int(np.prod(s.shape)) * s.dtype.itemsize for s in shapes)

    def handover_bytes(self) -> int:
        """Bytes of one candidate's largest map from the handover on (float32)."""
        return 4 * max(int(np.prod(n.shape)) for n in self.nodes[self.handover:])

    def window_bytes(self) -> int:
        """Bytes of one candidate's windows and crops (all nodes, all k pixels)."""
        nodes = self.nodes
        total = 0
        for i in range(1, self.handover + 1):
            crop = geometry.crop_size(nodes[i], self.cones.sizes[i])
            total += 4 * self.pixels * (np.prod(self.cones.sizes[i]) * nodes[i].shape[2]
                                        + sum(np.prod(crop) * nodes[u].shape[2]
                                              for u in nodes[i].inputs))
            if i in self.deltas:  # the input's change times every tap
                src = np.prod(self.cones.sizes[nodes[i].inputs[0]])
                total += 4 * self.pixels * src * nodes[i].macs / nodes[
                    nodes[i].inputs[0]].shape[2]
        return int(total)

    def probs(self, params, caches, pixels):
        """Probabilities ``[S, N, K]``: ``caches`` from ``prepare`` (leading problem axis
        ``S``), ``pixels`` int32 ``[S, N, k, 2 + C]`` (x, y, colour)."""
        nodes, consts = self.nodes, self.graph.consts(params)
        cache = dict(zip(sorted(self.margins), caches[:len(self.margins)], strict=True))
        pre = dict(zip(self.deltas, caches[len(self.margins):], strict=True))
        s, n, k = pixels.shape[:3]
        sizes, starts = self.cones.sizes, self.cones.starts
        ys, xs = pixels[..., 1], pixels[..., 0]
        colour = pixels[..., 2:].astype(jnp.float32)[..., None, None, :]
        wins = {0: (jnp.stack([ys, xs], -1), colour)}  # node -> (starts, values) [S, N, k..]

        def per_candidate(f):  # f(problem's cache, then per-candidate arrays)
            return jax.vmap(jax.vmap(f, (None, 0, 0, 0)))

        def flat(a):  # [S, N, k, ...] -> one batch for the node
            return a.reshape(s * n * k, *a.shape[3:])

        for i in range(1, self.handover + 1):
            node = nodes[i]
            st = jnp.stack([jnp.asarray(starts[i][0])[ys], jnp.asarray(starts[i][1])[xs]], -1)
            if i in self.deltas:
                u = node.inputs[0]

                def change(clean, pre_i, st, w_st, w_val, u=u, node=node, i=i):
                    return _delta(node, consts, clean, self.margins[u], pre_i, w_st, w_val,
                                  st, sizes[i])
                wins[i] = (st, jax.vmap(jax.vmap(change, (None, None, 0, 0, 0)))(
                    cache[u], pre[i], st, *wins[u]))
                continue
            if node.direct:  # the input's windows, as they are: same starts and sizes
                crops = [flat(wins[node.inputs[0]][1])]
            else:
                crops = []
                for u in node.inputs:
                    def crop(clean, st, w_st, w_val, u=u, node=node, i=i):
                        return self._crops(node, sizes[i], st, clean, (w_st, w_val),
                                           self.margins[u], nodes[u].shape[:2],
                                           node.padding_value(consts))
                    crops.append(flat(per_candidate(crop)(cache[u], st, *wins[u])))
            out = node.apply(consts, *crops, origin=flat(st), window=True)
            wins[i] = (st, out.reshape(s, n, k, *out.shape[1:]))
        m = self.margins[self.handover]
        h, w = nodes[self.handover].shape[:2]

        def place(clean, st, vals, _=None):
            full = clean[m[0]:m[0] + h, m[1]:m[1] + w]
            return _paste(full, jnp.zeros(2, jnp.int32), st, vals)

        maps = per_candidate(place)(cache[self.handover], *wins[self.handover], pixels)
        maps = maps.reshape(s * n, *maps.shape[2:])
        out = self.graph.rest(params, consts, {self.handover: maps}, self.handover + 1)
        out = out.astype(jnp.float32)
        if self.classifier.outputs == "logits":
            out = jax.nn.softmax(out, axis=-1)
        return out.reshape(s, n, -1)

    def _crops(self, node, out_size, out_start, clean, wins, margin, in_size, pad_value):
        """The input crops ``[k, ch, cw, C]`` of a node's k windows, from the clean padded
        map of one input with that input's k windows pasted into it (a masked select per
        window, so a window that overlaps a crop only in part lands where it belongs).
        Outside the input map (``in_size``) a crop holds the node's ``pad_value``."""
        crop = geometry.crop_size(node, out_size)
        # crop origin in the input's unpadded coordinates
        origin = out_start * jnp.asarray(node.stride) - jnp.asarray(
            [node.pads[0][0], node.pads[1][0]])
        at = origin + jnp.asarray(margin)
        w_start, w_vals = wins

        def one(at_i, origin_i):
            b = jax.lax.dynamic_slice(clean, (at_i[0], at_i[1], 0), (*crop, clean.shape[2]))
            b = _paste(b, origin_i, w_start, w_vals)
            if not (isinstance(pad_value, float) and pad_value == 0.0) and np.any(node.pads):
                inside = _within(origin_i, crop, jnp.zeros(2, jnp.int32), in_size)
                b = jnp.where(inside[..., None], b, jnp.asarray(pad_value, b.dtype))
            return b

        crops = jax.vmap(one)(at, origin)
        if node.im2col:
            crops = _materialise(crops)
        return crops

    def describe(self) -> str:
        nodes = self.nodes
        sizes = ", ".join(f"{nodes[i].kind}{'x'.join(map(str, self.cones.sizes[i]))}"
                          f"{' (delta)' if i in self.deltas else ''}"
                          for i in range(1, self.handover + 1))
        return (f"sparse forward of {self.classifier.name} at k={self.pixels}: windows "
                f"{sizes}; dense from node {self.handover} of {len(nodes) - 1} "
                f"({'x'.join(map(str, nodes[self.handover].shape))}), the head from "
                f"{self.graph.stop}; modelled speed-up {self.speedup:.2f}x")


def _paste(crop, origin, starts, windows):
    """``crop`` (at ``origin``) with the windows ``[k, *size, C]`` at ``starts [k, 2]``
    written over it, later ones last (as painting does): a masked select per window,
    so a window that overlaps the crop in part lands where it belongs."""
    for j in range(windows.shape[0]):
        inside, vals = _lookup(origin, crop.shape[:2], starts[j], windows[j])
        crop = jnp.where(inside[..., None], vals.astype(crop.dtype), crop)
    return crop


def _within(origin, shape, start, size):
    """Which positions of a ``shape`` grid at ``origin`` lie in the ``size`` window at
    ``start``: bool ``[*shape]``."""
    r = jnp.arange(shape[0]) + origin[0] - start[0]
    c = jnp.arange(shape[1]) + origin[1] - start[1]
    return ((r >= 0) & (r < size[0]))[:, None] & ((c >= 0) & (c < size[1]))[None, :]


def _lookup(origin, shape, start, window):
    """``window [h, w, C]`` placed at ``start``, read at the positions of a ``shape`` grid
    at ``origin``: (``_within`` mask, values ``[*shape, C]``, clamped where outside)."""
    h, w = window.shape[:2]
    r = jnp.clip(jnp.arange(shape[0]) + origin[0] - start[0], 0, h - 1)
    c = jnp.clip(jnp.arange(shape[1]) + origin[1] - start[1], 0, w - 1)
    return _within(origin, shape, start, (h, w)), window[r][:, c]


def _delta(node, consts, clean, margin, pre, starts, windows, out_starts, out_size):
    """The k output windows ``[k, *out_size, Cout]`` at ``out_starts [k, 2]`` of a
    stride-1 convolution, as the clean output ``pre`` (before the node's per-position
    layers) plus the convolution of the input's change: each input window
    ``windows [k, sh, sw, Cin]`` at ``starts`` less the clean input ``clean`` (padded by
    ``margin``), where no earlier window already holds it, times every kernel tap,
    added where it lands. Fewer multiply-adds than convolving a crop for the output
    window (``sh * sw`` rather than ``out_size`` positions, and one matmul)."""
    kernel = node.conv.kernel(consts)
    kh, kw, cin, cout = kernel.shape
    k, sh, sw = windows.shape[:3]
    changes = []
    for j in range(k):
        at = (starts[j, 0] + margin[0], starts[j, 1] + margin[1], 0)
        d = (windows[j].astype(jnp.float32)
             - jax.lax.dynamic_slice(clean, at, (sh, sw, cin)).astype(jnp.float32))
        for e in range(j):  # a position in several windows counts once
            seen = _within(starts[j], (sh, sw), starts[e], (sh, sw))
            d = jnp.where(seen[..., None], 0.0, d)
        changes.append(d)
    y = jnp.einsum("jyxc,abco->jyxabo", jnp.stack(changes), kernel.astype(jnp.float32))
    # [k, sh + kh - 1, sw + kw - 1, Cout]; entry (0, 0) is output (start - (kh - 1) + pad)
    buf = sum(jnp.pad(y[:, :, :, a, b], ((0, 0), (kh - 1 - a, a), (kw - 1 - b, b), (0, 0)))
              for a in range(kh) for b in range(kw))
    origin = starts - jnp.asarray([kh - 1 - node.pads[0][0], kw - 1 - node.pads[1][0]])
    outs = []
    for m in range(k):
        x = jax.lax.dynamic_slice(pre, (out_starts[m, 0], out_starts[m, 1], 0),
                                  (*out_size, cout))
        for j in range(k):
            inside, vals = _lookup(out_starts[m], out_size, origin[j], buf[j])
            x = x + jnp.where(inside[..., None], vals, 0.0)
        outs.append(node.activate(consts, x, out_starts[m]))
    return jnp.stack(outs)


def _materialise(x):
    """``x`` unchanged, as the output of a matmul by the identity (exact: each value
    times 1 plus zeros). Left as a select over gathers, XLA:CPU fuses the crop into
    every im2col slice and recomputes it per slice (measured: 25 recomputations took
    half of NiN's sparse time); a matmul's output is materialised once, and
    ``optimization_barrier`` did not stop the fusion."""
    eye = jnp.eye(x.shape[-1], dtype=x.dtype)
    return jnp.einsum("...c,cd->...d", x, eye, precision=jax.lax.Precision.HIGHEST)


# ``plan()`` returns a plan only where the cost model expects at least this gain (by
# default; forward="auto" times both forwards instead, ``evaluation.auto_choice``).
AUTO_GAIN = 1.1


def why_not(classifier: Classifier, pixels: int, image_shape) -> str | None:
    """Why ``classifier`` has no sparse forward at ``k = pixels`` (None if it has one)."""
    try:
        _build(classifier, pixels, tuple(image_shape))
    except _NoPlan as e:
        return str(e)
    return None


def plan(classifier: Classifier, pixels: int, image_shape, handover: int | None = None,
         gain: float = AUTO_GAIN, delta: bool | None = None) -> Plan | None:
    """The sparse plan (handover from the cost model, or ``handover``), or None where the
    model has none (``why_not`` says why) or where the modelled speed-up is below
    ``gain``. ``delta``: run convolution windows as clean + conv(change) where the cost
    model prefers it (None), wherever possible (True) or never (False)."""
    try:
        out = _build(classifier, pixels, tuple(image_shape), handover, delta)
    except _NoPlan:
        return None
    return out if handover is not None or out.speedup >= gain else None


class _NoPlan(Exception):
    pass


def _build(classifier: Classifier, pixels: int, image_shape, handover=None,
           delta=None) -> Plan:
    plan, why = _plan_or_reason(classifier, pixels, image_shape, handover, delta)
    if plan is None:
        raise _NoPlan(why)
    return plan


@memoize(64)
def _plan_or_reason(classifier, pixels, image_shape, handover, delta):
    """Cached either way: the declared-vs-forward check compiles two forward passes."""
    try:
        return _make(classifier, pixels, image_shape, handover, delta), None
    except _NoPlan as e:
        return None, str(e)


def _make(classifier: Classifier, pixels: int, image_shape, handover=None,
          delta=None) -> Plan:
    g = graph(classifier, image_shape)
    nodes = g.nodes
    if all(n.kind in ("input", "map") for n in nodes):  # per-position work only
        raise _NoPlan(f"no spatial layer before its head, which starts at {g.stop}")
    head = [i for i, _ in g.head_inputs]
    cone = geometry.cones(nodes)
    costs, deltas = geometry.costs(nodes, cone, pixels, delta, head)
    if len(costs) == 1:
        raise _NoPlan(f"no node before its head (at {g.stop}) that the rest reads alone")
    if handover is None:
        handover = min(set(costs) - {0}, key=lambda c: (costs[c], c))
    elif handover not in costs or handover == 0:
        raise ValueError(f"handover must be one of {sorted(set(costs) - {0})}, got {handover}")
    margins = {}
    for i in range(1, handover + 1):
        for u in nodes[i].inputs:
            m = margins.get(u, (0, 0))
            margins[u] = tuple(max(m[a], *nodes[i].pads[a], 0) for a in (0, 1))
    margins.setdefault(handover, (0, 0))
    _check_graph(classifier, image_shape)
    deltas = tuple(sorted(i for i in deltas if i <= handover))
    return Plan(classifier, pixels, image_shape, g, handover, cone, margins, costs, deltas)


@memoize(32)
def _check_graph(classifier, image_shape) -> None:
    """The graph run densely must reproduce the classifier's own forward: a guard
    against a wrong rule (the windows' exactness is what tests/test_sparse.py tests)."""
    g = graph(classifier, image_shape)
    x = jax.random.randint(jax.random.PRNGKey(0), (2, *image_shape), 0, 256).astype(jnp.uint8)
    ref = jax.jit(classifier.probs)(classifier.params, x)

    def replayed(params, x):
        out = g.dense(params, x).astype(jnp.float32)
        return jax.nn.softmax(out, -1) if classifier.outputs == "logits" else out

    got = jax.jit(replayed)(classifier.params, x)
    low = any(n.conv is not None and np.dtype(n.conv.dtype) != np.float32 for n in g.nodes)
    tol = GRAPH_TOLERANCE["other" if low else "float32"]
    err = float(jnp.abs(got - ref).max())
    if not err <= tol:
        raise _NoPlan(f"the graph read from its jaxpr does not reproduce its forward pass "
                      f"(probabilities differ by {err:.2g}; a jaxattack bug, please report "
                      f"it)")
