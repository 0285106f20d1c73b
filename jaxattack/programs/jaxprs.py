"""A traced function as a flat program of equations, and a replay with per-primitive rules.

    prog = jaxprs.trace(apply_fn, params, images)   # jax.make_jaxpr, calls inlined
    outs = jaxprs.run(prog, jax.tree.leaves((params, images)), rules={"conv_general_dilated":
                      my_conv})

``trace`` flattens ``jax.make_jaxpr``'s output into one list of equations: every call
primitive (``jit``, ``custom_jvp_call`` as in ``jax.nn.relu``, ``custom_vjp_call``,
``closed_call``, ``remat``) is inlined, its inner equations taking its place, so a
reader sees each convolution, pooling window and elementwise op wherever the model's
code put it. Values are numbered (``int``); literals stay ``Lit``. Forward evaluation
is all jaxattack needs, so a custom derivative rule is dropped with its call.

``run`` evaluates such a program the way ``jax.core.eval_jaxpr`` does, except that a
rule (``rules[primitive name](*inputs, **params) -> output``) may compute an equation
instead of binding its primitive. The sparse forward reads models through ``trace``
(``sparse/graph.py``); the convolution lowering replays them through ``run``
(``convs.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.extend import core as jcore

# Call primitives whose inner jaxpr computes exactly the equation (same inputs, same
# outputs): inlined by ``trace``. Control flow (cond, while, scan) is not among them.
CALLS = frozenset({"jit", "pjit", "closed_call", "core_call", "custom_jvp_call",
                   "custom_vjp_call", "custom_vjp_call_jaxpr", "remat", "remat2",
                   "checkpoint"})


class Lit(NamedTuple):
    """A literal operand (a Python or numpy scalar)."""

    val: Any


class Eqn(NamedTuple):
    """One equation: ``outs = prim.bind(*ins, **params)``; ``outs`` holds -1 for an output
    nobody reads."""

    prim: Any
    params: dict
    ins: tuple  # int (a value) or Lit
    outs: tuple[int, ...]

    @property
    def name(self) -> str:
        return self.prim.name


@dataclasses.dataclass(frozen=True, eq=False)
class Program:
    """A flat program: ``eqns`` in order; ``inputs`` the values of the flattened
    arguments, ``outputs`` those of the flattened result (``out_tree``); ``consts`` the
    closed-over arrays; ``avals`` every value's shape and dtype."""

    eqns: tuple[Eqn, ...]
    inputs: tuple[int, ...]
    outputs: tuple
    consts: Mapping[int, Any]
    avals: Mapping[int, Any]
    out_tree: Any = None

    def shape(self, ref) -> tuple[int, ...]:
        return tuple(np.shape(ref.val)) if isinstance(ref, Lit) else tuple(self.avals[ref].shape)

    def dtype(self, ref):
        return np.asarray(ref.val).dtype if isinstance(ref, Lit) else self.avals[ref].dtype


def inner_jaxpr(eqn) -> jcore.ClosedJaxpr | None:
    """The inner jaxpr of a call primitive (``CALLS``) as a ClosedJaxpr, else None."""
    if eqn.primitive.name not in CALLS:
        return None
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        j = eqn.params.get(key)
        if isinstance(j, jcore.Jaxpr):
            j = jcore.ClosedJaxpr(j, ())
        if (isinstance(j, jcore.ClosedJaxpr) and len(j.jaxpr.invars) == len(eqn.invars)
                and len(j.jaxpr.outvars) == len(eqn.outvars)):
            return j
    return None


def trace(fn: Callable, *args) -> Program:
    """``fn(*args)`` as a flat Program (``args`` may be arrays or ShapeDtypeStructs)."""
    closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    return flatten(closed, jax.tree.structure(shape))


def flatten(closed: jcore.ClosedJaxpr, out_tree=None) -> Program:
    """``closed`` with every call primitive inlined (see the module docstring)."""
    eqns, consts, avals = [], {}, {}
    counter = iter(range(1 << 62))

    def new(aval) -> int:
        ref = next(counter)
        avals[ref] = aval
        return ref

    def walk(jaxpr, const_vals, env: dict):
        def read(v):
            return Lit(v.val) if isinstance(v, jcore.Literal) else env[v]

        for v, c in zip(jaxpr.constvars, const_vals, strict=True):
            env[v] = new(v.aval)
            consts[env[v]] = c
        for e in jaxpr.eqns:
            ins = tuple(read(v) for v in e.invars)
            sub = inner_jaxpr(e)
            if sub is not None:
                inner_env = dict(zip(sub.jaxpr.invars, ins, strict=True))
                outs = walk(sub.jaxpr, sub.consts, inner_env)
                for v, o in zip(e.outvars, outs, strict=True):
                    if not isinstance(v, jcore.DropVar):
                        env[v] = o
                continue
            outs = []
            for v in e.outvars:
                if isinstance(v, jcore.DropVar):
                    outs.append(-1)
                else:
                    env[v] = new(v.aval)
                    outs.append(env[v])
            eqns.append(Eqn(e.primitive, dict(e.params), ins, tuple(outs)))
        return [read(v) for v in jaxpr.outvars]

    env = {}
    inputs = []
    for v in closed.jaxpr.invars:
        env[v] = new(v.aval)
        inputs.append(env[v])
    outputs = walk(closed.jaxpr, closed.consts, env)
    return Program(tuple(eqns), tuple(inputs), tuple(outputs), consts, avals, out_tree)


def bind(eqn: Eqn, *ins) -> list:
    """The equation's primitive on ``ins``: its outputs as a list."""
    out = eqn.prim.bind(*ins, **eqn.prim.get_bind_params(eqn.params))
    return list(out) if eqn.prim.multiple_results else [out]


def run(program: Program, args, rules: Mapping[str, Callable] | None = None,
        env: dict | None = None, outputs=None) -> list:
    """Evaluate ``program`` on the flattened ``args``: each equation by its rule in
    ``rules`` (by primitive name) or by binding its primitive. ``env`` may hold values
    already known (they are not recomputed, nor is anything only they need);
    ``outputs`` (default: the program's) says which values to return. Only the
    equations those outputs need are evaluated."""
    rules = rules or {}
    env = dict(env or {})
    env.update(program.consts)
    env.update(zip(program.inputs, args, strict=False))
    wanted = program.outputs if outputs is None else outputs
    for eqn in needed(program, wanted, set(env)):
        ins = [i.val if isinstance(i, Lit) else env[i] for i in eqn.ins]
        rule = rules.get(eqn.name)
        outs = [rule(*ins, **eqn.params)] if rule is not None else bind(eqn, *ins)
        for ref, val in zip(eqn.outs, outs, strict=True):
            if ref >= 0:
                env[ref] = val
    return [w.val if isinstance(w, Lit) else env[w] for w in wanted]


def needed(program: Program, wanted, known) -> list[Eqn]:
    """The equations (in order) that ``wanted`` depends on, given the ``known`` values."""
    producer = {ref: e for e in program.eqns for ref in e.outs if ref >= 0}
    want = {w for w in wanted if not isinstance(w, Lit)} - set(known)
    keep = set()
    stack = list(want)
    while stack:
        ref = stack.pop()
        e = producer.get(ref)
        if e is None or id(e) in keep:
            continue
        keep.add(id(e))
        stack += [i for i in e.ins if not isinstance(i, Lit) and i not in known]
    return [e for e in program.eqns if id(e) in keep]


def depends_on(program: Program, roots) -> set[int]:
    """Every value computed from the values ``roots`` (they included)."""
    out = set(roots)
    for e in program.eqns:
        if any(not isinstance(i, Lit) and i in out for i in e.ins):
            out.update(r for r in e.outs if r >= 0)
    return out


def replayed(fn: Callable, rules: Mapping[str, Callable], wants: Callable[[Program], bool]
             ) -> Callable:
    """``fn`` traced on each call and replayed with ``rules`` where ``wants(program)``
    (else ``fn`` itself runs: nothing changes for a program no rule applies to). The
    decision is kept per argument shapes and platform, so such a program is traced once
    per call, as ``fn`` alone would be."""
    decided: dict = {}

    def wrapped(*args):
        leaves, tree = jax.tree.flatten(args)
        key = (tree, jax.default_backend(),
               tuple((np.shape(a), np.result_type(a)) for a in leaves))
        if decided.get(key) is False:
            return fn(*args)
        prog = trace(fn, *args)
        decided[key] = bool(wants(prog))
        if not decided[key]:
            return fn(*args)
        return jax.tree.unflatten(prog.out_tree, run(prog, leaves, rules))

    wrapped.__wrapped__ = fn
    return wrapped


def value_sizes(program: Program) -> list[int]:
    """Bytes of every value the program computes, in order."""
    return [int(np.prod(program.avals[r].shape)) * program.avals[r].dtype.itemsize
            for e in program.eqns for r in e.outs
            if r >= 0 and hasattr(program.avals[r], "shape")]
