"""No forward pass spent on finished problems: queries/s and utilisation through attack().

    python benchmarks/tail.py --images 20 --pixels 3 --out benchmarks/results/tail_cpu

The paper's DE (population 400, 100 generations) and Sparse-RS (population 20, up to 500
generations, margin loss) on the same images, with the engine's tail shrinking off and
on (``engine.run(shrink=False | "auto")``), all in one run. Queries are what the
problems were charged; queries/s divides them by the attack's wall time (compile
included); utilisation is useful slot-generations over computed ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

SETTINGS = {  # name: (strategy, population, generations, loss)
    "de": ("de", 400, 100, "prob"),
    "sparse-rs": ("sparse-rs", 20, 500, "margin"),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--data", default="sample")
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--pixels", type=int, default=3)
    ap.add_argument("--strategies", default="de,sparse-rs")
    ap.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = ap.parse_args(argv)

    import numpy as np
    from engine_overhead import machine

    import jaxattack as ja
    from jaxattack import engine

    clf = ja.models.load(args.model)
    x, y, _ = ja.data.load(args.data, limit=args.images)
    ids = np.arange(len(x))
    rows, run = [], engine.run
    for name in args.strategies.split(","):
        strategy, pop, gens, loss = SETTINGS[name]
        cfg = ja.AttackConfig(pixels=args.pixels, population=pop, generations=gens, loss=loss,
                              strategy=strategy)
        results = {}
        for shrink in (False, "auto"):
            stats = []

            def recorded(*a, shrink=shrink, stats=stats, **kw):
                stats.append(run(*a, **kw | {"shrink": shrink}))
                return stats[-1]

            engine.run = recorded
            try:
                t0 = time.perf_counter()
                res = ja.attack(clf, x, y, cfg, image_ids=ids)
                seconds = time.perf_counter() - t0
            finally:
                engine.run = run
            queries = int(res.queries.sum())
            results[shrink] = res
            rows.append(dict(strategy=name, population=pop, generations=gens, loss=loss,
                             shrink=str(shrink), seconds=round(seconds, 2), queries=queries,
                             queries_per_s=round(queries / seconds, 1),
                             utilisation=round(stats[0].utilisation, 4),
                             resized=stats[0].resized, fooled=int(res.success.sum()),
                             clean_correct=int(res.clean_correct.sum())))
            print(json.dumps(rows[-1]), flush=True)
        same = all(np.array_equal(getattr(results[False], f), getattr(results["auto"], f))
                   for f in ("pixels", "queries", "success"))
        if not same:
            sys.exit(f"{name}: results differ with and without shrinking")
    de = {r["shrink"]: r["queries_per_s"] for r in rows if r["strategy"] == "de"}
    lines = ["| strategy | population x generations | tail shrink | fooled | queries | s | "
             "queries/s | utilisation | resized |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['strategy']} | {r['population']} x {r['generations']} | {r['shrink']} | "
              f"{r['fooled']}/{r['clean_correct']} | {r['queries']:,} | {r['seconds']:.1f} | "
              f"{r['queries_per_s']:,.0f} | {r['utilisation']:.1%} | {r['resized']} |"
              for r in rows]
    ratio = {r["shrink"]: r["queries_per_s"] / de[r["shrink"]] for r in rows
             if r["strategy"] == "sparse-rs" and r["shrink"] in de}
    md = (f"{args.model}, {len(x)} {args.data} images, k = {args.pixels}, untargeted, "
          f"through `attack()`; machine: {machine()}.\n\n" + "\n".join(lines) +
          "\n\nSparse-RS queries/s relative to DE: " +
          ", ".join(f"{v:.2f}x (shrink {k})" for k, v in ratio.items()) + "\n")
    print(md)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(
            {"rows": rows, "machine": machine(), "images": len(x), "pixels": args.pixels,
             "model": args.model, "sparse_rs_over_de": ratio}, indent=1) + "\n")
        out.with_suffix(".md").write_text(md)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
