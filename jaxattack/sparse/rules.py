"""The network as the sparse forward sees it, read from its jaxpr: one rule per primitive.

``graph(classifier, image_shape)`` traces ``classifier.apply_fn`` on one image
(``jaxprs.trace``: every jit, custom_jvp and other call inlined) and walks its
equations in order. An equation that does not depend on the image (a weight transpose,
BatchNorm's ``rsqrt(var + eps)``) is a constant, computed from the params. Each
equation on the image goes to the rule of its primitive in ``RULES``:

- ``conv_general_dilated`` (any stride, padding, dilation, feature groups; any
  dimension numbers), ``reduce_window`` max/min/sum (pooling with any window, stride,
  padding), a reshape that splits H and W into blocks followed by a max/min/sum over
  the blocks (pooling written as ``x.reshape(n, h/2, 2, w/2, 2, c).max((2, 4))``),
  a strided ``slice`` and a ``pad`` of H and W: each a **node** whose output position
  reads a window of its input;
- elementwise ops with constants broadcast (BatchNorm, ReLU, ReLU6, clamp, sigmoid,
  swish, ``select_n``, ``integer_pow``, casts), and a concatenation, pad or slice of
  channels: per-position, **fused** into the node they follow; with operands from two
  nodes (a residual add, a gate, a concatenation) they make a node of their own;
- ``transpose`` (and ``copy``): the same values in another layout.

Every map is held channels-last inside (``[..., H, W, C]``), whatever layout the model
uses, so an ONNX graph's transposes cost nothing. The walk stops at the first equation
on the image without a rule, or with one that mixes positions globally (a reduction
over H and W, a flatten, a matmul): the **head**, from there to the output, runs
dense, as the model's own equations replayed per candidate. ``Graph.stop`` says where
and why. A map the head reads is a node too.

A node's fused per-position equations (``Expr``) are the ones every reader of the node
reads through; where two readers read different functions of one node (a
pre-activation residual: ``conv(relu(x)) + x``), the others become ``map`` nodes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxattack.caches import memoize
from jaxattack.programs import jaxprs
from jaxattack.sparse.nodes import (
    IDENTITY,
    Blocked,
    ConvOp,
    Expr,
    Graph,
    MixOp,
    Node,
    Operand,
    PickOp,
    PoolOp,
    PosEqn,
    Sp,
    Stop,
)

ELEMENTWISE = frozenset("""
    abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp convert_element_type
    copy copy_p cos cosh div eq erf erf_inv erfc exp exp2 expm1 floor ge gt imag
    integer_pow is_finite le log log1p logistic lt max min mul ne neg nextafter not or pow
    real reduce_precision rem round rsqrt select_n sign sin sinh sqrt square sub tan tanh
    xor""".split())
# host calls: no jaxpr inside (jaxattack_host_forward: models.from_torch's primitive)
CALLBACKS = frozenset({"pure_callback", "io_callback", "callback", "jaxattack_host_forward"})


@memoize(32)
def graph(classifier, image_shape: tuple) -> Graph:
    """The sparse graph of ``classifier`` for images ``(H, W, C)`` (traced on one image)."""
    image = jax.ShapeDtypeStruct((1, *image_shape), jnp.uint8)
    try:
        prog = jaxprs.trace(classifier.apply_fn, classifier.params, image)
    except Exception as e:  # noqa: BLE001 - any failure to trace: no plan, say why
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return _empty(classifier, f"its apply_fn does not trace ({type(e).__name__}: "
                                  f"{first[:200]})")
    return _Walk(prog, classifier.name).graph()


def _empty(classifier, reason) -> Graph:
    node = Node("input", (), (1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1, 1))
    prog = jaxprs.Program((), (), (), {}, {})
    return Graph((node,), prog, (), (), (), reason, classifier.name)


class _Sym:
    """A node while walking: its map operands are values (refs), not nodes yet."""

    def __init__(self, kind, ins, kernel, stride, pads, out, op=None, pad_value=0.0):
        self.kind, self.ins, self.kernel, self.stride = kind, list(ins), kernel, stride
        self.pads, self.out, self.op, self.pad_value = pads, out, op, pad_value
        self.folded = False


class _Walk:
    def __init__(self, prog: jaxprs.Program, name: str):
        self.prog, self.name = prog, name
        self.image = prog.inputs[-1]
        self.dep = jaxprs.depends_on(prog, [self.image])
        self.producer = {r: e for e in prog.eqns for r in e.outs if r >= 0}
        self.info: dict[int, Sp | Blocked] = {self.image: Sp(0, (0, 1, 2, 3))}
        self.syms = [_Sym("input", (), (1, 1), (1, 1), ((0, 0), (0, 0)), self.image)]
        self.stop = "the output (a map)"

    # -- helpers used by the rules
    def shape(self, ref):
        return self.prog.shape(ref)

    def sp(self, ref) -> Sp | None:
        info = None if isinstance(ref, jaxprs.Lit) else self.info.get(ref)
        return info if isinstance(info, Sp) else None

    def on_image(self, ref) -> bool:
        return not isinstance(ref, jaxprs.Lit) and ref in self.dep

    def static(self, ref):
        """The value of a scalar computed from literals alone (a pad value cast by
        ``jnp.pad``), else None."""
        if isinstance(ref, jaxprs.Lit):
            return np.asarray(ref.val)
        if self.shape(ref) != () or self.on_image(ref):
            return None
        if ref in self.prog.consts:
            return np.asarray(self.prog.consts[ref])
        e = self.producer.get(ref)
        if e is None:
            return None
        ins = [self.static(i) for i in e.ins]
        if any(v is None for v in ins):
            return None
        return np.asarray(jaxprs.bind(e, *ins)[e.outs.index(ref)])

    def canonical(self, ref) -> int:
        while self.info[ref].src is not None:
            ref = self.info[ref].src
        return ref

    def hwc(self, ref, layout) -> tuple[int, int, int]:
        s = self.shape(ref)
        return (s[layout[1]], s[layout[2]], s[layout[3]])

    def node(self, kind, ins, kernel, stride, pads, out, layout, op=None, pad_value=0.0):
        self.syms.append(_Sym(kind, ins, tuple(kernel), tuple(stride),
                              tuple(tuple(int(v) for v in p) for p in pads), out, op,
                              pad_value))
        self.info[out] = Sp(len(self.syms) - 1, tuple(layout))

    def operands(self, eqn, layout, channels=True):
        """The equation's operands as Operands (maps numbered in order) and the map refs."""
        ops, maps = [], []
        out_shape = self.shape(eqn.outs[0])
        for ref in eqn.ins:
            s = self.sp(ref)
            if s is not None:
                ops.append(Operand(index=len(maps)))
                maps.append(ref)
            elif self.on_image(ref):
                raise Stop("of a reshaped map")
            else:
                ops.append(self.constant(ref, layout, out_shape, channels))
        return ops, maps

    def constant(self, ref, layout, out_shape, channels=True) -> Operand:
        """A constant operand broadcast against maps of ``out_shape`` (``channels``
        false: of any channel count, as in a concatenation)."""
        shape = self.prog.shape(ref)
        if len(shape) == 0:
            return Operand(ref=ref)
        if len(shape) != 4:
            raise Stop(f"a constant of shape {shape} broadcast against a map")
        expand = None
        e = self.producer.get(ref) if not isinstance(ref, jaxprs.Lit) else None
        if e is not None and e.name == "broadcast_in_dim" and not isinstance(e.ins[0],
                                                                             jaxprs.Lit):
            # the smaller operand, with 1s where it was broadcast
            src_shape = self.prog.shape(e.ins[0])
            dims = tuple(e.params["broadcast_dimensions"])
            expand = tuple(src_shape[dims.index(a)] if a in dims else 1 for a in range(4))
            ref, shape = e.ins[0], expand
        internal = tuple(shape[a] for a in layout)
        if internal[0] != 1:
            raise Stop(f"a constant varies over the batch ({shape})")
        spatial = internal[1] > 1 or internal[2] > 1
        full = tuple(out_shape[a] for a in layout)
        if any(internal[a] not in (1, full[a]) for a in ((1, 2, 3) if channels else (1, 2))):
            raise Stop(f"a constant of shape {shape} broadcast against a map")
        return Operand(ref=ref, perm=tuple(layout), expand=expand, spatial=spatial)

    def per_position(self, eqn, how, layout, arg=None, out_layout=None):
        """A per-position equation: fused into its maps' node, or a "mix" node."""
        ops, maps = self.operands(eqn, layout, channels=how != "concat")
        if not maps:
            raise Stop("on the image without a map operand")
        layouts = {self.sp(m).layout for m in maps}
        if len(layouts) > 1:
            raise Stop("of maps in different layouts")
        pe = PosEqn(eqn, tuple(ops), how, arg)
        out = eqn.outs[0]
        layout = out_layout or layout
        bases = {self.sp(m).base for m in maps}
        if len(bases) == 1:
            self.info[out] = Sp(bases.pop(), tuple(layout), pos=pe, args=tuple(maps))
        else:
            self.node("mix", maps, (1, 1), (1, 1), ((0, 0), (0, 0)), out, layout, MixOp(pe))

    # -- the walk
    def graph(self) -> Graph:
        for eqn in self.prog.eqns:
            if not any(self.on_image(i) for i in eqn.ins):
                continue  # a constant
            rule = RULES.get(eqn.name)
            try:
                if eqn.name in CALLBACKS:
                    raise Stop("a call back to the host, as a torch module makes: no jaxpr "
                               "to read")
                if rule is None:
                    raise Stop("no sparse rule")
                rule(self, eqn)
            except Stop as s:
                self.stop = f"{eqn.name} ({s})"
                break
        return self._materialise()

    def _materialise(self) -> Graph:
        prog = self.prog
        known = {r for r, v in self.info.items() if isinstance(v, Sp)}
        head_eqns = jaxprs.needed(prog, prog.outputs, known)
        head_refs = []
        for ref in [i for e in head_eqns for i in e.ins] + list(prog.outputs):
            if not isinstance(ref, jaxprs.Lit) and ref in known and ref not in head_refs:
                head_refs.append(ref)
        self._fold_pads(head_refs)
        # every value read as a map, by node: its canonical (un-aliased) form
        reads: dict[int, list[int]] = {}
        for sym in self.syms[1:]:
            for r in sym.ins:
                reads.setdefault(self.info[r].base, []).append(self.canonical(r))
        for r in head_refs:
            reads.setdefault(self.info[r].base, []).append(self.canonical(r))
        nodes, index, const_refs = [], {}, set()
        for b, sym in enumerate(self.syms):
            if sym.folded:
                continue
            wanted = list(dict.fromkeys(reads.get(b, [])))
            fused = sym.out if b == 0 else self._fused(sym.out, wanted)
            post = None if fused == sym.out else self._expr(fused, sym.out, b)
            ins = tuple(index[self.canonical(r)] for r in sym.ins)
            layout = self.info[fused].layout
            nodes.append(self._node(sym, ins, post, fused, layout))
            index[fused] = len(nodes) - 1
            for g in wanted:
                if g == fused:
                    continue
                expr = self._expr(g, fused, b)
                lay = self.info[g].layout
                nodes.append(Node("map", (index[fused],), (1, 1), (1, 1), ((0, 0), (0, 0)),
                                  self.hwc(g, lay), None, expr,
                                  dtype=self.prog.dtype(g)))
                index[g] = len(nodes) - 1
        for nd in nodes:
            const_refs.update(_consts_of(nd))
        head_inputs = tuple((index[self.canonical(r)], self.info[r].layout) for r in head_refs)
        return Graph(tuple(nodes), prog, tuple(head_refs), head_inputs,
                     tuple(sorted(const_refs)), self.stop, self.name)

    def _node(self, sym, ins, post, fused, layout) -> Node:
        if sym.kind == "input":
            h, w, c = self.hwc(sym.out, (0, 1, 2, 3))
            return Node("input", (), (1, 1), (1, 1), ((0, 0), (0, 0)), (h, w, c),
                        dtype=jnp.float32)
        return Node(sym.kind, ins, sym.kernel, sym.stride, sym.pads,
                    self.hwc(fused, layout), sym.op, post, sym.pad_value,
                    self.prog.dtype(fused))

    def _fold_pads(self, head_refs):
        """A zero pad of H and W whose one reader is a convolution or a sum pool, as that
        node's own padding (the pad node is then ``folded``: it makes no node)."""
        reads: dict[int, list] = {}  # node -> (reader, value read)
        for sym in self.syms[1:]:
            for r in sym.ins:
                reads.setdefault(self.info[r].base, []).append((sym, self.canonical(r)))
        for r in head_refs:
            reads.setdefault(self.info[r].base, []).append((None, self.canonical(r)))
        for b, p in enumerate(self.syms):
            users = reads.get(b, [])
            if (p.kind != "pad" or len(users) != 1 or users[0][1] != p.out
                    or not isinstance(p.pad_value, float) or p.pad_value != 0
                    or any(v < 0 for pr in p.pads for v in pr)):
                continue
            user = users[0][0]
            zero_padded = isinstance(getattr(user, "op", None), ConvOp) or (
                isinstance(getattr(user, "op", None), PoolOp) and user.op.reducer == "sum")
            if not zero_padded or user.pad_value != 0 or len(user.ins) != 1:
                continue
            user.ins = [p.ins[0]]
            user.pads = tuple((a[0] + c[0], a[1] + c[1]) for a, c in zip(
                p.pads, user.pads, strict=True))
            p.folded = True

    def _deps(self, g, leaf) -> bool:
        """Whether ``g`` is computed from ``leaf`` alone (per position, with constants)."""
        if g == leaf:
            return True
        info = self.info[g]
        if info.pos is None:
            return False  # another raw output (the node's own, when leaf is past it)
        return all(self._deps(self.canonical(a), leaf) for a in info.args)

    def _fused(self, raw, wanted) -> int:
        """The value a node's post ends at: one that every read value is a function of
        (the furthest such), else the raw output."""
        ok = [f for f in wanted if all(self._deps(g, f) for g in wanted)]
        return max(ok, default=raw)

    def _expr(self, out, leaf, base) -> Expr:
        steps, seen = [], set()

        def visit(ref):
            if ref == leaf or ref in seen:
                return
            seen.add(ref)
            info = self.info[ref]
            args = tuple(self.canonical(a) for a in info.args)
            for a in args:
                visit(a)
            steps.append((ref, info.pos, args))

        visit(out)
        steps.sort(key=lambda s: s[0])
        spatial = any(o.spatial for _, pe, _ in steps for o in pe.operands)
        # maps of integers (the uint8 image) are held as float32: cast back first
        dt = np.dtype(self.prog.dtype(leaf))
        leaf_dtype = None if np.issubdtype(dt, np.floating) else dt
        return Expr(tuple(steps), leaf, out, leaf_dtype, spatial)


def _consts_of(node: Node) -> set:
    refs = set()
    pos = [s[1] for s in node.post.steps] if node.post is not None else []
    if isinstance(node.op, MixOp):
        pos.append(node.op.pos)
    for pe in pos:
        refs.update(o.ref for o in pe.operands
                    if o.index is None and not isinstance(o.ref, jaxprs.Lit))
    if isinstance(node.op, ConvOp):
        refs.add(node.op.ref)
    if not isinstance(node.pad_value, float):
        refs.add(node.pad_value)
    return refs


# ---- the rules ---------------------------------------------------------------------------

RULES: dict = {}


def rule(*names):
    def deco(fn):
        for n in names:
            RULES[n] = fn
        return fn
    return deco


@rule(*ELEMENTWISE)
def _elementwise(w: _Walk, eqn):
    maps = [w.sp(r) for r in eqn.ins if w.sp(r) is not None]
    if not maps:
        raise Stop("of a reshaped map")
    layout = maps[0].layout
    out_shape = w.shape(eqn.outs[0])
    if any(w.shape(r) != out_shape for r in eqn.ins if w.sp(r) is not None):
        raise Stop("a map broadcast to another shape")
    if eqn.name in ("copy", "copy_p"):
        w.info[eqn.outs[0]] = Sp(maps[0].base, layout, src=eqn.ins[0])
        return
    w.per_position(eqn, "elementwise", layout)


@rule("transpose")
def _transpose(w: _Walk, eqn):
    s = w.sp(eqn.ins[0])
    perm = tuple(eqn.params["permutation"])
    layout = tuple(perm.index(a) for a in s.layout)
    w.info[eqn.outs[0]] = Sp(s.base, layout, src=eqn.ins[0])


@rule("broadcast_in_dim")
def _broadcast(w: _Walk, eqn):
    s = w.sp(eqn.ins[0])
    if (s is None or tuple(eqn.params["broadcast_dimensions"]) != tuple(range(4))
            or w.shape(eqn.outs[0]) != w.shape(eqn.ins[0])):
        raise Stop("a map broadcast to another shape")
    w.info[eqn.outs[0]] = Sp(s.base, s.layout, src=eqn.ins[0])


@rule("conv_general_dilated")
def _conv(w: _Walk, eqn):
    x, k = eqn.ins
    s = w.sp(x)
    if s is None or w.on_image(k):
        raise Stop("a convolution by a kernel computed from the image")
    p = eqn.params
    if p["batch_group_count"] != 1 or tuple(p["lhs_dilation"]) != (1, 1):
        raise Stop("a transposed (input-dilated) or batch-grouped convolution")
    dn = p["dimension_numbers"]
    lhs, rhs, out = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    if len(lhs) != 4 or lhs[0] != s.layout[0] or lhs[1] != s.layout[3]:
        raise Stop("a convolution whose batch or feature axis is not the map's")
    if (lhs[2], lhs[3]) == (s.layout[1], s.layout[2]):
        swap = False
    elif (lhs[2], lhs[3]) == (s.layout[2], s.layout[1]):
        swap = True
    else:
        raise Stop("a convolution over axes that are not the map's H and W")

    def hw(pair):  # the model's spatial order -> (H, W)
        return tuple(pair[::-1]) if swap else tuple(pair)

    perm = (rhs[2], rhs[3], rhs[1], rhs[0])
    kshape = w.shape(k)
    hwio = tuple(kshape[a] for a in perm)
    if swap:
        hwio = (hwio[1], hwio[0], *hwio[2:])
    dil = hw(p["rhs_dilation"])
    eff = tuple((hwio[a] - 1) * dil[a] + 1 for a in (0, 1))
    layout = (out[0], *hw((out[2], out[3])), out[1])
    op = ConvOp(k, perm, swap, hw(p["window_strides"]), dil, p["feature_group_count"],
                p["precision"], p["preferred_element_type"], hwio, w.prog.dtype(x))
    w.node("conv", [x], eff, op.strides, hw(tuple(tuple(q) for q in p["padding"])),
           eqn.outs[0], layout, op)


def _pool_node(w: _Walk, eqn, x, reducer, window, strides, pads, init, layout):
    op = PoolOp(reducer, tuple(window), tuple(strides), init)
    w.node("pool", [x], window, strides, pads, eqn.outs[0], layout, op,
           pad_value=init)


def _reducer_of(eqn) -> str | None:
    name = eqn.name
    if name in ("reduce_window_max", "reduce_window_min", "reduce_window_sum"):
        return name.rsplit("_", 1)[1]
    jaxpr = eqn.params.get("jaxpr")
    inner = getattr(jaxpr, "jaxpr", jaxpr)
    if inner is not None and len(inner.eqns) == 1 and not eqn.params.get("consts"):
        return {"max": "max", "min": "min", "add": "sum"}.get(inner.eqns[0].primitive.name)
    return None


@rule("reduce_window_max", "reduce_window_min", "reduce_window_sum", "reduce_window")
def _reduce_window(w: _Walk, eqn):
    x = eqn.ins[0]
    s = w.sp(x)
    reducer = _reducer_of(eqn)
    if s is None or reducer is None:
        raise Stop("a window reduction other than max, min or sum")
    if eqn.name == "reduce_window":
        known = w.static(eqn.ins[1])
        if known is None:
            raise Stop("a window reduction whose initial value is not a constant")
        init = float(known)
    else:
        init = IDENTITY[reducer]
    p = eqn.params
    L = s.layout
    win, strides, pads = p["window_dimensions"], p["window_strides"], p["padding"]
    if (any(d != 1 for d in p["base_dilation"]) or any(d != 1 for d in p["window_dilation"])
            or any(win[a] != 1 or strides[a] != 1 or tuple(pads[a]) != (0, 0)
                   for a in (L[0], L[3]))):
        raise Stop("a window reduction over the batch or channels, or a dilated one")
    _pool_node(w, eqn, x, reducer, (win[L[1]], win[L[2]]), (strides[L[1]], strides[L[2]]),
               (tuple(pads[L[1]]), tuple(pads[L[2]])), init, L)


@rule("reshape")
def _reshape(w: _Walk, eqn):
    x = eqn.ins[0]
    s = w.sp(x)
    if s is None or eqn.params.get("dimensions") is not None:
        raise Stop("a reshape of a map (a flatten)")
    old, new = w.shape(x), w.shape(eqn.outs[0])
    if old == new:
        w.info[eqn.outs[0]] = Sp(s.base, s.layout, src=x)
        return
    groups = _reshape_groups(old, new)
    if groups is None:
        raise Stop("a reshape that mixes axes (a flatten)")
    n, h, wd, c = s.layout
    if any(len(groups[a]) != 1 for a in (n, c)) or not all(1 <= len(groups[a]) <= 2
                                                           for a in (h, wd)):
        raise Stop("a reshape other than splitting H and W into blocks")
    gh, gw = groups[h], groups[wd]
    axes = (groups[n][0], gh[0], gh[1] if len(gh) == 2 else None, gw[0],
            gw[1] if len(gw) == 2 else None, groups[c][0])
    block = (new[gh[1]] if len(gh) == 2 else 1, new[gw[1]] if len(gw) == 2 else 1)
    w.info[eqn.outs[0]] = Blocked(x, axes, block)


def _reshape_groups(old, new):
    """Per old axis the new axes it becomes (consecutive, same product), or None."""
    groups, j = [], 0
    for size in old:
        g, prod = [], 1
        if size == 1:
            if j >= len(new) or new[j] != 1:
                return None
            groups.append([j])
            j += 1
            continue
        while prod < size and j < len(new):
            prod *= new[j]
            g.append(j)
            j += 1
        if prod != size:
            return None
        groups.append(g)
    return groups if j == len(new) else None


@rule("reduce_max", "reduce_min", "reduce_sum")
def _reduce(w: _Walk, eqn):
    x = eqn.ins[0]
    info = w.info.get(x)
    axes = set(eqn.params["axes"])
    reducer = eqn.name.split("_", 1)[1]
    if isinstance(info, Blocked):
        n, ho, hi, wo, wi, c = info.axes
        inner = {a for a in (hi, wi) if a is not None}
        if axes == inner:
            kept = [a for a in range(len(w.shape(x))) if a not in axes]
            layout = tuple(kept.index(a) for a in (n, ho, wo, c))
            src = w.sp(info.src)
            # the reshape needs H and W divisible by the block: no remainder to drop
            _pool_node(w, eqn, info.src, reducer, info.block, info.block,
                       ((0, 0), (0, 0)), IDENTITY[reducer], layout)
            assert src is not None
            return
    s = w.sp(x)
    if s is not None and axes & {s.layout[1], s.layout[2]}:
        raise Stop("mixes positions: a reduction over H and W")
    raise Stop("a reduction over channels")


@rule("slice")
def _slice(w: _Walk, eqn):
    x = eqn.ins[0]
    s = w.sp(x)
    if s is None:
        raise Stop("a slice of a reshaped map")
    p = eqn.params
    start, limit = p["start_indices"], p["limit_indices"]
    strides = p["strides"] or (1,) * len(start)
    shape = w.shape(x)
    n, h, wd, c = s.layout

    def whole(a):
        return start[a] == 0 and limit[a] == shape[a] and strides[a] == 1

    if not whole(n):
        raise Stop("a slice of the batch")
    if whole(h) and whole(wd):  # channels only: per position
        w.per_position(eqn, "slice", s.layout, (start[c], limit[c], strides[c]))
        return
    if not whole(c):
        raise Stop("a slice of both positions and channels")
    out = w.shape(eqn.outs[0])
    pads = []
    for a in (h, wd):
        lo = -start[a]
        hi = (out[a] - 1) * strides[a] + 1 - shape[a] - lo
        pads.append((lo, hi))
    w.node("pick", [x], (1, 1), (strides[h], strides[wd]), pads, eqn.outs[0], s.layout,
           PickOp((strides[h], strides[wd])))


@rule("pad")
def _pad(w: _Walk, eqn):
    x, value = eqn.ins
    s = w.sp(x)
    if s is None or w.on_image(value):
        raise Stop("a pad with a value computed from the image")
    cfg = eqn.params["padding_config"]
    n, h, wd, c = s.layout
    if any(cfg[a][2] for a in range(4)) or tuple(cfg[n]) != (0, 0, 0):
        raise Stop("an interior pad, or a pad of the batch")
    if tuple(cfg[h]) == (0, 0, 0) and tuple(cfg[wd]) == (0, 0, 0):
        w.per_position(eqn, "pad", s.layout, tuple(cfg[c]))
        return
    if tuple(cfg[c]) != (0, 0, 0):
        raise Stop("a pad of both positions and channels")
    known = w.static(value)
    val = float(known) if known is not None else value
    w.node("pad", [x], (1, 1), (1, 1), ((cfg[h][0], cfg[h][1]), (cfg[wd][0], cfg[wd][1])),
           eqn.outs[0], s.layout, None, pad_value=val)


@rule("concatenate")
def _concatenate(w: _Walk, eqn):
    maps = [w.sp(r) for r in eqn.ins if w.sp(r) is not None]
    if not maps:
        raise Stop("a concatenation of reshaped maps")
    layout = maps[0].layout
    if eqn.params["dimension"] != layout[3]:
        raise Stop("a concatenation along H or W")
    w.per_position(eqn, "concat", layout)
