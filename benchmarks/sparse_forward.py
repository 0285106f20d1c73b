"""Dense vs sparse forward: candidates/s per zoo model and k, measured side by side.

    python benchmarks/sparse_forward.py --models tiny,allcnn --pixels 1,3,5
    python benchmarks/sparse_forward.py --attack   # also a whole 20-image attack each way

Each row times the same batch (``--problems`` images x ``--candidates`` random
candidates each) through paint + the classifier's own forward and through
the sparse plan (caches prepared once, outside the timing), alternating the two, and
checks that they agree. A third column times the declared layers all dense (the sparse
pass's dense part, with im2col convolutions where they are faster on the CPU), which
separates that effect from the sparsity; a fourth the plan with every window computed
from a crop (``delta=False``, its own best handover), which separates the delta form's
gain. Results name the machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from engine_overhead import machine  # the benchmarks' one machine line

from jaxattack import codec, data, models, slots, sparse
from jaxattack.sparse.layers import compile_graph
from jaxattack.sparse.layers import dense as dense_part


def timed(fns, reps: int) -> list[float]:
    """Best-of-``reps`` seconds per function, the functions alternated (a load spike on a
    shared machine then hits both, and the minimum is the least disturbed run)."""
    for fn in fns:
        jax.block_until_ready(fn())
    best = [np.inf] * len(fns)
    for _ in range(reps):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            jax.block_until_ready(fn())
            best[i] = min(best[i], time.perf_counter() - t)
    return [float(b) for b in best]


def row(name, k, images, candidates, reps, handover=None):
    clf = models.load(name)
    shape = images.shape[1:]
    plan = sparse.plan(clf, k, shape, handover=handover, gain=0)  # measured even where
    auto = sparse.plan(clf, k, shape) is not None  # forward="auto" would run dense
    rng = np.random.default_rng(k)
    s = len(images)
    px = np.concatenate([rng.integers(0, shape[1], (s, candidates, k, 1)),
                         rng.integers(0, shape[0], (s, candidates, k, 1)),
                         rng.integers(0, 256, (s, candidates, k, shape[2]))], -1)
    px = jnp.asarray(px, jnp.int32)
    imgs = jnp.asarray(images)

    @jax.jit
    def dense(params, imgs, px):
        painted = jax.vmap(jax.vmap(codec.paint, (None, 0)), (0, 0))(imgs, px)
        return clf.probs(params, painted.reshape(-1, *shape)).reshape(s, candidates, -1)

    out = {"model": name, "k": k, "batch": s * candidates, "auto": "sparse" if auto else "dense"}
    if plan is None:
        out["dense_s"] = timed([lambda: dense(clf.params, imgs, px)], reps)[0]
        out.update(sparse_s=None, speedup=None, note=sparse.why_not(clf, k, shape))
        return out
    caches = jax.jit(jax.vmap(plan.prepare, (None, 0)))(clf.params, imgs)
    fn = jax.jit(plan.probs)
    err = float(jnp.abs(fn(clf.params, caches, px) - dense(clf.params, imgs, px)).max())
    # the same, every window computed from a crop (no delta form): its own best handover
    plain = sparse.plan(clf, k, shape, gain=0, delta=False)
    plain_caches = jax.jit(jax.vmap(plain.prepare, (None, 0)))(clf.params, imgs)
    plain_fn = jax.jit(plain.probs)
    @jax.jit
    def declared(params, imgs, px):  # the declared layers, all dense (im2col where faster)
        painted = jax.vmap(jax.vmap(codec.paint, (None, 0)), (0, 0))(imgs, px)
        nodes, head = compile_graph(clf.layers(params), shape)
        return dense_part(nodes, head, painted.reshape(-1, *shape))

    out["dense_s"], out["sparse_s"], out["declared_dense_s"], out["windows_only_s"] = timed(
        [lambda: dense(clf.params, imgs, px), lambda: fn(clf.params, caches, px),
         lambda: declared(clf.params, imgs, px),
         lambda: plain_fn(clf.params, plain_caches, px)], reps)
    out.update(speedup=out["dense_s"] / out["sparse_s"], modelled=plan.speedup,
               handover=plan.handover, deltas=list(plan.deltas), max_abs_err=err,
               plan=plan.describe(), windows_only_handover=plain.handover)
    return out


def attack_row(name, k, images, labels, generations, population):
    """A whole attack (the paper's DE, untargeted) each way: seconds (without the
    engine's measured compile time, reported apart) and queries/s."""
    import jaxattack as ja

    clf = models.load(name)
    out = {"model": name, "k": k, "images": len(images), "population": population,
           "generations": generations}
    results = {}
    for forward in ("dense", "sparse"):
        cfg = ja.AttackConfig(pixels=k, population=population, generations=generations,
                              forward=forward)
        ja.clear_caches()
        t = time.perf_counter()
        res = ja.attack(clf, images, labels, cfg)
        sec = time.perf_counter() - t
        # the engine's compile time of its programs (one per slot count of the tail)
        compile_s = sum(v[1] for v in slots._EXECUTABLES.values())
        results[forward] = res
        out[f"{forward}_compile_s"] = compile_s
        sec -= compile_s
        out[f"{forward}_s"] = sec
        out[f"{forward}_queries_per_s"] = float(res.queries.sum()) / sec
        out[f"{forward}_fooled"] = int(res.success.sum())
    a, b = results["dense"], results["sparse"]
    differ = ((a.pixels != b.pixels).any(axis=(1, 2)) | (a.success != b.success)
              | (a.generations != b.generations))
    out["identical"] = not differ.any()
    out["images_differing"] = int(differ.sum())  # float rounding can steer DE differently
    out["speedup"] = out["dense_s"] / out["sparse_s"]
    return out


def write(out, rows, attacks, args) -> dict:
    """The results so far as JSON and markdown (rewritten after every row, so a run cut
    short by a time cap keeps what it measured)."""
    result = {"machine": machine(), "rows": rows, "attacks": attacks, "args": vars(args)}
    if not out:
        return result
    Path(out + ".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"Machine: {result['machine']}", "",
             "| model | k | batch | dense ms | sparse ms | speed-up | modelled | handover "
             "| delta nodes | windows only ms | declared dense ms | auto runs | err |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---:|"]
    for r in rows:
        sp = "—" if r["sparse_s"] is None else f"{1e3 * r['sparse_s']:.1f}"
        su = "—" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        mo = f"{r['modelled']:.2f}x" if r.get("modelled") else "—"
        er = f"{r['max_abs_err']:.1e}" if r.get("max_abs_err") is not None else "—"
        dd = f"{1e3 * r['declared_dense_s']:.1f}" if r.get("declared_dense_s") else "—"
        wo = (f"{1e3 * r['windows_only_s']:.1f} (node {r['windows_only_handover']})"
              if r.get("windows_only_s") else "—")
        de = ",".join(map(str, r.get("deltas", []))) or "—"
        lines.append(f"| {r['model']} | {r['k']} | {r['batch']} | "
                     f"{1e3 * r['dense_s']:.1f} | {sp} | {su} | {mo} | {r.get('handover', '—')} "
                     f"| {de} | {wo} | {dd} | {r.get('auto', '—')} | {er} |")
    if attacks:
        lines += ["", "| model | k | images | budget | dense s | sparse s | speed-up "
                  "| dense q/s | sparse q/s | fooled (dense/sparse) | identical |",
                  "|---|---:|---:|---|---:|---:|---:|---:|---:|---|---|"]
        for r in attacks:
            lines.append(
                f"| {r['model']} | {r['k']} | {r['images']} | {r['population']} x "
                f"{r['generations'] + 1} | {r['dense_s']:.1f} | {r['sparse_s']:.1f} | "
                f"{r['speedup']:.2f}x | {r['dense_queries_per_s']:,.0f} | "
                f"{r['sparse_queries_per_s']:,.0f} | {r['dense_fooled']}/"
                f"{r['sparse_fooled']} | {r['identical']} |")
    Path(out + ".md").write_text("\n".join(lines) + "\n")
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tiny,resnet20,allcnn,nin,vgg16")
    ap.add_argument("--pixels", default="1,3,5")
    ap.add_argument("--problems", type=int, default=4)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--handovers", action="store_true",
                    help="time every possible handover node (to check the cost model)")
    ap.add_argument("--attack-images", type=int, default=0,
                    help="also attack this many sample images each way (0: no)")
    ap.add_argument("--attack-models", default="tiny")
    ap.add_argument("--attack-pixels", default="1")
    ap.add_argument("--attack-generations", type=int, default=100)
    ap.add_argument("--attack-population", type=int, default=400)
    ap.add_argument("--out", default=None, help="write JSON + markdown here (stem)")
    args = ap.parse_args(argv)
    images = data.load("sample", limit=args.problems)[0]
    rows, attacks = [], []
    for name in args.models.split(","):
        for k in map(int, args.pixels.split(",")):
            if args.handovers:
                clf = models.load(name)
                p = sparse.plan(clf, k, images.shape[1:], gain=0)  # also where auto is dense
                for h in sorted(p.costs) if p else []:
                    if h:
                        r = row(name, k, images, args.candidates, args.reps, handover=h)
                        r["model_cost"] = p.costs[h] / p.costs[0]
                        rows.append(r)
                        print(json.dumps(r), flush=True)
                        write(args.out, rows, attacks, args)
                continue
            r = row(name, k, images, args.candidates, args.reps)
            rows.append(r)
            print(json.dumps(r), flush=True)
            write(args.out, rows, attacks, args)
    if args.attack_images:
        x, y = data.load("sample", limit=args.attack_images)[:2]
        for name in args.attack_models.split(","):
            for k in map(int, args.attack_pixels.split(",")):
                r = attack_row(name, k, x, y, args.attack_generations, args.attack_population)
                attacks.append(r)
                print(json.dumps(r), flush=True)
                write(args.out, rows, attacks, args)
    return write(args.out, rows, attacks, args)


if __name__ == "__main__":
    main()
