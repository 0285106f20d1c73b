"""Dense vs sparse forward: candidates/s per model and k, measured side by side.

    python benchmarks/sparse_forward.py --models tiny,allcnn --pixels 1,3,5
    python benchmarks/sparse_forward.py --models tests/fixtures/mixed.onnx,lite.onnx
    python benchmarks/sparse_forward.py --attack-images 20   # also a whole attack each way

``--models`` takes zoo names and model files (``models.from_file``; a file listed in
``tests/fixtures/manifest.json`` gets its conventions from there, any other
``input_scale=1``); images are the built-in sample for 32 x 32 models and random
otherwise. Each row times the same batch (``--problems`` images x ``--candidates``
random candidates each) through paint + the classifier's own forward and through the
sparse plan (caches prepared once, outside the timing), alternating the two, and checks
that they agree. Another column times the plan with every window computed from a crop
(``delta=False``, its own best handover), which separates the delta form's gain; the
last ones are what ``forward="auto"`` chose on this machine, with the two times it
measured on the engine's call size (``evaluation.auto_choice``). Results name the
machine.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from common import ROOT, best_of, machine, parser, write_outputs

from jaxattack import data, models, sparse
from jaxattack.engine import slots
from jaxattack.pixels import evaluation
from jaxattack.strategies import codec

MANIFEST = ROOT / "tests" / "fixtures" / "manifest.json"


# The test fixtures' conventions that the manifest's "sparse" section does not hold.
FIXTURE_CONVENTIONS = {"cnn.onnx": dict(input_scale=1, mean="cifar10", std="cifar10"),
                       "cnn.keras": dict(input_scale=255)}


def load(spec: str):
    """A zoo model by name, or a model file (conventions from the fixture manifest)."""
    if spec in models.ARCHITECTURES:
        return models.load(spec)
    conventions = dict(FIXTURE_CONVENTIONS.get(Path(spec).name, {"input_scale": 1}))
    if MANIFEST.exists():
        known = json.loads(MANIFEST.read_text()).get("sparse", {}).get(Path(spec).name, {})
        conventions.update({k: v for k, v in known.items() if k in ("mean", "std",
                                                                   "input_scale")})
    return models.from_file(spec, **conventions)


def images_for(clf, n: int):
    shape = clf.input_shape or (32, 32, 3)
    if shape == (32, 32, 3):
        return data.load("sample", limit=n)[0]
    return np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8)


def row(clf, k, images, candidates, reps, handover=None):
    name = clf.name
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

    out = {"model": name, "k": k, "batch": s * candidates,
           "modelled_auto": "sparse" if auto else "dense"}
    choice = evaluation.auto_choice(clf, codec.PixelSpace(k, *shape), 400)
    out.update(auto=choice.forward, auto_dense_s=choice.dense_s, auto_sparse_s=choice.sparse_s)
    if plan is None:
        out["dense_s"] = best_of({"dense": lambda: dense(clf.params, imgs, px)}, reps)["dense"]
        out.update(sparse_s=None, speedup=None, note=sparse.why_not(clf, k, shape))
        return out
    caches = jax.jit(jax.vmap(plan.prepare, (None, 0)))(clf.params, imgs)
    fn = jax.jit(plan.probs)
    err = float(jnp.abs(fn(clf.params, caches, px) - dense(clf.params, imgs, px)).max())
    # the same, every window computed from a crop (no delta form): its own best handover
    plain = sparse.plan(clf, k, shape, gain=0, delta=False)
    plain_caches = jax.jit(jax.vmap(plain.prepare, (None, 0)))(clf.params, imgs)
    plain_fn = jax.jit(plain.probs)
    out.update(best_of({"dense_s": lambda: dense(clf.params, imgs, px),
                        "sparse_s": lambda: fn(clf.params, caches, px),
                        "windows_only_s": lambda: plain_fn(clf.params, plain_caches, px)},
                       reps))
    out.update(speedup=out["dense_s"] / out["sparse_s"], modelled=plan.speedup,
               handover=plan.handover, deltas=list(plan.deltas), max_abs_err=err,
               plan=plan.describe(), windows_only_handover=plain.handover)
    return out


def attack_row(clf, k, images, labels, generations, population):
    """A whole attack (the paper's DE, untargeted) each way: seconds (without the
    engine's measured compile time, reported apart) and queries/s."""
    import jaxattack as ja

    out = {"model": clf.name, "k": k, "images": len(images), "population": population,
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
    if out:
        write_outputs(out, result, markdown(result), echo=False)
    return result


def markdown(result) -> str:
    rows, attacks = result["rows"], result["attacks"]
    lines = [f"Machine: {result['machine']}", "",
             "| model | k | batch | dense ms | sparse ms | speed-up | modelled | handover "
             "| delta nodes | windows only ms | err | auto runs | auto's dense ms | auto's "
             "sparse ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---:|---:|"]
    for r in rows:
        sp = "—" if r["sparse_s"] is None else f"{1e3 * r['sparse_s']:.1f}"
        su = "—" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        mo = f"{r['modelled']:.2f}x" if r.get("modelled") else "—"
        er = f"{r['max_abs_err']:.1e}" if r.get("max_abs_err") is not None else "—"
        ad = f"{1e3 * r['auto_dense_s']:.1f}" if r.get("auto_dense_s") else "—"
        asp = f"{1e3 * r['auto_sparse_s']:.1f}" if r.get("auto_sparse_s") else "—"
        wo = (f"{1e3 * r['windows_only_s']:.1f} (node {r['windows_only_handover']})"
              if r.get("windows_only_s") else "—")
        de = ",".join(map(str, r.get("deltas", []))) or "—"
        lines.append(f"| {r['model']} | {r['k']} | {r['batch']} | "
                     f"{1e3 * r['dense_s']:.1f} | {sp} | {su} | {mo} | {r.get('handover', '—')} "
                     f"| {de} | {wo} | {er} | {r.get('auto', '—')} | {ad} | {asp} |")
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
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parser(
        __doc__, models="tiny,resnet20,allcnn,nin,vgg16", pixels="1,3,5", problems=4,
        candidates=100, reps=10,
        handovers=(False, "time every possible handover node (to check the cost model)"),
        attack_images=(0, "also attack this many sample images each way (0: no)"),
        attack_models="tiny", attack_pixels="1", attack_generations=100,
        attack_population=400, out=(None, "write OUT.json and OUT.md")).parse_args(argv)
    rows, attacks = [], []
    for spec in args.models.split(","):
        clf = load(spec)
        images = images_for(clf, args.problems)
        for k in map(int, args.pixels.split(",")):
            if args.handovers:
                p = sparse.plan(clf, k, images.shape[1:], gain=0)  # also where auto is dense
                for h in sorted(p.costs) if p else []:
                    if h:
                        r = row(clf, k, images, args.candidates, args.reps, handover=h)
                        r["model_cost"] = p.costs[h] / p.costs[0]
                        rows.append(r)
                        print(json.dumps(r), flush=True)
                        write(args.out, rows, attacks, args)
                continue
            r = row(clf, k, images, args.candidates, args.reps)
            rows.append(r)
            print(json.dumps(r), flush=True)
            write(args.out, rows, attacks, args)
    if args.attack_images:
        x, y = data.load("sample", limit=args.attack_images)[:2]
        for spec in args.attack_models.split(","):
            clf = load(spec)
            for k in map(int, args.attack_pixels.split(",")):
                r = attack_row(clf, k, x, y, args.attack_generations, args.attack_population)
                attacks.append(r)
                print(json.dumps(r), flush=True)
                write(args.out, rows, attacks, args)
    return write(args.out, rows, attacks, args)


if __name__ == "__main__":
    main()
