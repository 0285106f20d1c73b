"""Search strategies compared at equal query budgets (issue: beyond the paper).

    python benchmarks/strategies.py --model tiny --images 30 --pixels 1,3

Each strategy runs once per k with a budget of about 40,000 queries and early stop on
success; since a problem stops at its first success, "fooled within q queries" is
``success and queries <= q``, read off the same run for every q. DE variants use the
paper's population (400); Sparse-RS evaluates 20 resamplings per step (so it takes 2000
steps), with the margin loss as in its paper. Writes JSON + markdown (and a figure).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

BUDGETS = (1000, 4000, 10000, 40000)
# name -> (population, generations, loss): about 40,000 queries each.
SETTINGS = {
    "de": (400, 100, "prob"),
    "de-bin": (400, 100, "prob"),
    "jde": (400, 100, "prob"),
    "de-margin": (400, 100, "margin"),
    "sparse-rs": (20, 2000, "margin"),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--data", default="sample")
    ap.add_argument("--images", type=int, default=30)
    ap.add_argument("--pixels", default="1,3")
    ap.add_argument("--strategies", default=",".join(SETTINGS))
    ap.add_argument("--out", default="benchmarks/results/strategies_cpu")
    args = ap.parse_args(argv)

    import numpy as np
    from engine_overhead import machine

    import jaxattack as ja
    from jaxattack import data, models
    from jaxattack.data import select_images

    clf = models.load(args.model)
    x, y, _ = data.load(args.data)
    sel = select_images(np.asarray(y), args.images)
    x, y = x[sel], np.asarray(y)[sel]
    rows = []
    for k in [int(v) for v in args.pixels.split(",")]:
        for name in args.strategies.split(","):
            pop, gens, loss = SETTINGS[name]
            cfg = ja.AttackConfig(pixels=k, population=pop, generations=gens, loss=loss,
                                  strategy=name.replace("-margin", ""))
            r = ja.attack(clf, x, y, cfg, image_ids=sel, progress=True)
            ok = r.clean_correct
            row = dict(strategy=name, pixels=k, population=pop, generations=gens, loss=loss,
                       images=int(ok.sum()), seconds=r.seconds,
                       curve={q: float((r.success & (r.queries <= q))[ok].mean())
                              for q in BUDGETS + (cfg.max_queries,)},
                       queries=r.queries[ok].tolist(), success=r.success[ok].tolist())
            rows.append(row)
            print(name, k, {q: f"{v:.1%}" for q, v in row["curve"].items()}, flush=True)
    head = "| k | strategy | loss | " + " | ".join(f"{q:,} q" for q in BUDGETS) + " | s |"
    lines = [head, "|" + "---|" * (len(BUDGETS) + 4)]
    for r in rows:
        cells = " | ".join(f"{100 * r['curve'][q]:.1f}%" for q in BUDGETS)
        lines.append(f"| {r['pixels']} | {r['strategy']} | {r['loss']} | {cells} | "
                     f"{r['seconds']:.0f} |")
    md = (f"Success rate (clean-correct images, {args.model}, {args.data}, "
          f"{args.images} images) fooled within q queries.\n\n" + "\n".join(lines)
          + f"\n\nMachine: {machine()}.\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "machine": machine()}))
    out.with_suffix(".md").write_text(md)
    _figure(rows, out.with_suffix(".png"))
    print(md)


def _figure(rows, path):
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.5))
    axes = fig.subplots(1, len({r["pixels"] for r in rows}), squeeze=False)[0]
    for ax, k in zip(axes, sorted({r["pixels"] for r in rows}), strict=True):
        for r in (r for r in rows if r["pixels"] == k):
            q = np.array(r["queries"])[np.array(r["success"], bool)]
            grid = np.geomspace(100, 40400, 200)
            n = max(len(r["queries"]), 1)
            ax.plot(grid, [(q <= g).sum() / n for g in grid], label=r["strategy"])
        ax.set_xscale("log")
        ax.set_title(f"k = {k}")
        ax.set_xlabel("queries")
        ax.set_ylabel("fooled")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
