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
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jaxattack.caches import memoize
from jaxattack.classifier import Classifier
from jaxattack.sparse import geometry
from jaxattack.sparse.layers import _pad, compile_graph, dense

# A declared graph must reproduce the classifier within this (checked once per plan).
DECLARED_TOLERANCE = {"float32": 1e-4, "other": 5e-2}


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
    """Static layout of the sparse pass (see the module docstring)."""

    classifier: Classifier
    pixels: int
    image_shape: tuple[int, int, int]
    handover: int  # the node whose map the dense part starts from
    cones: geometry.Cones
    margins: dict  # node -> per-axis padding of its cached map
    costs: dict  # handover node -> modelled cost per candidate
    deltas: tuple = ()  # nodes whose windows run as clean + conv(change) (``_delta``)

    @property
    def speedup(self) -> float:
        """Modelled speed-up over the dense forward."""
        return self.costs[0] / self.costs[self.handover]

    def _graph(self, params):
        return compile_graph(self.classifier.layers(params), self.image_shape)

    def prepare(self, params, image):
        """The clean activations one problem's candidates read: ``image`` uint8 [H, W, C]
        -> tuple of padded maps (the per-problem cache)."""
        nodes, head = self._graph(params)
        values, pre = {0: image[None].astype(jnp.float32)}, {}
        for i in range(1, self.handover + 1):
            node = nodes[i]
            x = node.apply(*[_pad(values[u], node.pads) for u in node.inputs],
                           post=i not in self.deltas)
            if i in self.deltas:  # a delta node's clean map before its per-position layers
                pre[i], x = x, node.activate(x)
            values[i] = x
        return tuple(_pad(values[i][0], ((m[0], m[0]), (m[1], m[1])))
                     for i, m in sorted(self.margins.items())) + tuple(
                         pre[i][0] for i in self.deltas)

    def cache_bytes(self) -> int:
        """Bytes of one problem's cache."""
        shapes = jax.eval_shape(self.prepare, self.classifier.params,
                                jax.ShapeDtypeStruct(self.image_shape, jnp.uint8))
        return sum(int(np.prod(s.shape)) * s.dtype.itemsize for s in shapes)

    def handover_bytes(self) -> int:
        """Bytes of one candidate's handover map (float32)."""
        nodes = self._graph(self.classifier.params)[0]
        return 4 * int(np.prod(nodes[self.handover].shape))

    def window_bytes(self) -> int:
        """Bytes of one candidate's windows and crops (all nodes, all k pixels)."""
        nodes = self._graph(self.classifier.params)[0]
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
        nodes, head = self._graph(params)
        cache = dict(zip(sorted(self.margins), caches[:len(self.margins)], strict=True))
        pre = dict(zip(self.deltas, caches[len(self.margins):], strict=True))
        s, n, k = pixels.shape[:3]
        sizes, starts = self.cones.sizes, self.cones.starts
        ys, xs = pixels[..., 1], pixels[..., 0]
        colour = pixels[..., 2:].astype(jnp.float32)[..., None, None, :]
        wins = {0: (jnp.stack([ys, xs], -1), colour)}  # node -> (starts, values) [S, N, k..]
        def per_candidate(f):  # f(problem's cache, then per-candidate arrays)
            return jax.vmap(jax.vmap(f, (None, 0, 0, 0)))
        for i in range(1, self.handover + 1):
            node = nodes[i]
            st = jnp.stack([jnp.asarray(starts[i][0])[ys], jnp.asarray(starts[i][1])[xs]], -1)
            if i in self.deltas:
                u = node.inputs[0]

                def change(clean, pre_i, st, w_st, w_val, u=u, node=node, i=i):
                    return _delta(node, clean, self.margins[u], pre_i, w_st, w_val, st,
                                  sizes[i])
                wins[i] = (st, jax.vmap(jax.vmap(change, (None, None, 0, 0, 0)))(
                    cache[u], pre[i], st, *wins[u]))
                continue
            crops = []
            for u in node.inputs:
                def crop(clean, st, w_st, w_val, u=u, node=node, i=i):
                    return self._crops(node, sizes[i], st, clean, (w_st, w_val),
                                       self.margins[u])
                c = per_candidate(crop)(cache[u], st, *wins[u])
                crops.append(c.reshape(s * n * k, *c.shape[3:]))  # one batch for the node
            out = node.apply(*crops)
            wins[i] = (st, out.reshape(s, n, k, *out.shape[1:]))
        m = self.margins[self.handover]
        h, w = nodes[self.handover].shape[:2]

        def place(clean, st, vals, _=None):
            full = clean[m[0]:m[0] + h, m[1]:m[1] + w]
            return _paste(full, jnp.zeros(2, jnp.int32), st, vals)

        maps = per_candidate(place)(cache[self.handover], *wins[self.handover], pixels)
        maps = maps.reshape(s * n, *maps.shape[2:])
        out = dense(nodes, head, None, start=self.handover + 1, values={self.handover: maps})
        out = out.astype(jnp.float32)
        if self.classifier.outputs == "logits":
            out = jax.nn.softmax(out, axis=-1)
        return out.reshape(s, n, -1)

    def _crops(self, node, out_size, out_start, clean, wins, margin):
        """The input crops ``[k, ch, cw, C]`` of a node's k windows, from the clean padded
        map of one input with that input's k windows pasted into it (a masked select per
        window, so a window that overlaps a crop only in part lands where it belongs)."""
        crop = geometry.crop_size(node, out_size)
        # crop origin in the input's unpadded coordinates
        origin = out_start * jnp.asarray(node.stride) - jnp.asarray(
            [node.pads[0][0], node.pads[1][0]])
        at = origin + jnp.asarray(margin)
        w_start, w_vals = wins

        def one(at_i, origin_i):
            b = jax.lax.dynamic_slice(clean, (at_i[0], at_i[1], 0), (*crop, clean.shape[2]))
            return _paste(b, origin_i, w_start, w_vals)

        crops = jax.vmap(one)(at, origin)
        if node.im2col:
            crops = _materialise(crops)
        return crops

    def describe(self) -> str:
        nodes = self._graph(self.classifier.params)[0]
        sizes = ", ".join(f"{nodes[i].kind}{'x'.join(map(str, self.cones.sizes[i]))}"
                          f"{' (delta)' if i in self.deltas else ''}"
                          for i in range(1, self.handover + 1))
        return (f"sparse forward of {self.classifier.name} at k={self.pixels}: windows "
                f"{sizes}; dense from node {self.handover} of {len(nodes) - 1} "
                f"({'x'.join(map(str, nodes[self.handover].shape))}); modelled "
                f"speed-up {self.speedup:.2f}x")


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


def _delta(node, clean, margin, pre, starts, windows, out_starts, out_size):
    """The k output windows ``[k, *out_size, Cout]`` at ``out_starts [k, 2]`` of a
    stride-1 convolution, as the clean output ``pre`` (before the node's per-position
    layers) plus the convolution of the input's change: each input window
    ``windows [k, sh, sw, Cin]`` at ``starts`` less the clean input ``clean`` (padded by
    ``margin``), where no earlier window already holds it, times every kernel tap,
    added where it lands. Fewer multiply-adds than convolving a crop for the output
    window (``sh * sw`` rather than ``out_size`` positions, and one matmul)."""
    kh, kw, cin, cout = node.layer.kernel.shape
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
    y = jnp.einsum("jyxc,abco->jyxabo", jnp.stack(changes), node.layer.kernel)
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
        outs.append(node.activate(x))
    return jnp.stack(outs)


def _materialise(x):
    """``x`` unchanged, as the output of a matmul by the identity (exact: each value
    times 1 plus zeros). Left as a select over gathers, XLA:CPU fuses the crop into
    every im2col slice and recomputes it per slice (measured: 25 recomputations took
    half of NiN's sparse time); a matmul's output is materialised once, and
    ``optimization_barrier`` did not stop the fusion."""
    eye = jnp.eye(x.shape[-1], dtype=x.dtype)
    return jnp.einsum("...c,cd->...d", x, eye, precision=jax.lax.Precision.HIGHEST)


# forward="auto" takes the sparse pass where the cost model expects at least this gain.
AUTO_GAIN = 1.1


def why_not(classifier: Classifier, pixels: int, image_shape) -> str | None:
    """Why ``classifier`` has no sparse forward at ``k = pixels`` (None if it has one)."""
    try:
        _build(classifier, pixels, tuple(image_shape))
    except _NoPlan as e:
        return str(e)
    return None


def plan(classifier: Classifier, pixels: int, image_shape, handover: int | None = None,
         warn: bool = False, gain: float = AUTO_GAIN, delta: bool | None = None
         ) -> Plan | None:
    """The sparse plan (handover from the cost model, or ``handover``), or None where the
    model declares no supported layers (with ``warn``: says why, once per classifier)
    or where the modelled speed-up is below ``gain``. ``delta``: run convolution
    windows as clean + conv(change) where the cost model prefers it (None), wherever
    possible (True) or never (False)."""
    try:
        out = _build(classifier, pixels, tuple(image_shape), handover, delta)
    except _NoPlan as e:
        if warn:
            _warn_once(classifier, str(e))
        return None
    return out if handover is not None or out.speedup >= gain else None


class _NoPlan(Exception):
    pass


@memoize(32)
def _warn_once(classifier, reason):
    warnings.warn(f"forward='auto' runs dense for {classifier.name}: {reason}", stacklevel=3)


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
    if classifier.layers is None:
        raise _NoPlan("it declares no layers for the sparse forward (docs/sparse.md)")
    try:
        nodes, head = compile_graph(classifier.layers(classifier.params), image_shape)
    except ValueError as e:
        raise _NoPlan(str(e)) from None
    cone = geometry.cones(nodes)
    costs, deltas = geometry.costs(nodes, cone, pixels, delta)
    if len(costs) == 1:
        raise _NoPlan("it declares no spatial layer before its Head")
    if handover is None:
        handover = min(set(costs) - {0}, key=lambda c: (costs[c], c))
    elif handover not in costs or handover == 0:
        raise ValueError(f"handover must be one of {sorted(set(costs) - {0})}, got {handover}")
    margins = {}
    for i in range(1, handover + 1):
        for u in nodes[i].inputs:
            m = margins.get(u, (0, 0))
            margins[u] = tuple(max(m[a], *nodes[i].pads[a]) for a in (0, 1))
    margins.setdefault(handover, (0, 0))
    _check_declared(classifier, image_shape)
    deltas = tuple(sorted(i for i in deltas if i <= handover))
    return Plan(classifier, pixels, image_shape, handover, cone, margins, costs, deltas)


@memoize(32)
def _check_declared(classifier, image_shape) -> None:
    """The declared graph's dense forward must match the classifier's own forward."""
    x = jax.random.randint(jax.random.PRNGKey(0), (2, *image_shape), 0, 256).astype(jnp.uint8)
    ref = jax.jit(classifier.probs)(classifier.params, x)

    def declared(params, x):
        nodes, head = compile_graph(classifier.layers(params), image_shape)
        out = dense(nodes, head, x).astype(jnp.float32)
        return jax.nn.softmax(out, -1) if classifier.outputs == "logits" else out

    got = jax.jit(declared)(classifier.params, x)
    nodes = compile_graph(classifier.layers(classifier.params), image_shape)[0]
    low = any(getattr(n.layer, "dtype", None) not in (None, jnp.float32) for n in nodes)
    tol = DECLARED_TOLERANCE["other" if low else "float32"]
    err = float(jnp.abs(got - ref).max())
    if not err <= tol:
        raise _NoPlan(f"its declared layers do not reproduce its forward pass (probabilities "
                      f"differ by {err:.2g})")

