"""Search strategies compared at equal query budgets (issues 15 and 17).

    python benchmarks/strategies.py --model tiny --images 30 --pixels 1,3
    python benchmarks/strategies.py --model tiny --images 100 --pixels 3,5 \\
        --strategies sparse-rs,learned-rs --budgets 1000,10000 --separate \\
        --data ../shared/datasets/cifar10-jpeg --outside-sample

Each strategy runs once per k with the largest budget and early stop on success; since
a problem stops at its first success, "fooled within q queries" is ``success and
queries <= q``, read off the same run for every q. With ``--separate`` every budget is
a run of its own instead (Sparse-RS's schedule depends on the budget). DE variants use
the paper's population (400); Sparse-RS and learned-rs evaluate 20 resamplings per
step, with the margin loss as in Sparse-RS's paper. ``oracle`` (k = 1 only) enumerates
every position x the 8 corner colours (8,192 queries for 32 x 32); with ``de`` at k = 1
in the same run, the JSON also says how many of DE's successes used a colour that is
not a corner, and how many fooled an image the oracle calls not vulnerable.
``--outside-sample`` skips the first 100 test images of each class (the built-in
sample, on which the strategies were tuned). Writes JSON + markdown + a figure (95%
Wilson intervals).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from common import machine, parser, write_outputs

BUDGETS = (1000, 4000, 10000, 40000)
# name -> (population, loss); the strategy is the name without "-margin".
SETTINGS = {
    "de": (400, "prob"),
    "de-bin": (400, "prob"),
    "de-best": (400, "prob"),
    "de-ctb": (400, "prob"),
    "jde": (400, "prob"),
    "de-margin": (400, "margin"),
    "sparse-rs": (20, "margin"),
    "learned-rs": (20, "margin"),
    "oracle": (None, "margin"),
}


def _images(args):
    import numpy as np

    from jaxattack import data
    from jaxattack.data import select_images

    if not args.outside_sample:
        x, y, _ = data.load(args.data)
        sel = select_images(np.asarray(y), args.images)
        return x[sel], np.asarray(y)[sel], sel
    per_class = 100 + -(-args.images // 10)
    x, y, _ = data.load(args.data, per_class_limit=per_class)
    y = np.asarray(y)
    rank = np.zeros(len(y), int)
    for c in np.unique(y):
        rank[y == c] = np.arange((y == c).sum())
    keep = np.flatnonzero(rank >= 100)
    sel = keep[select_images(y[keep], args.images)]
    return x[sel], y[sel], sel + 100_000  # ids apart from the sample's


def _config(name, k, budget, shape):
    import jaxattack as ja
    from jaxattack.strategies.oracle import oracle_budget

    pop, loss = SETTINGS[name]
    if name == "oracle":
        pop, gens = oracle_budget(*shape)
    else:
        gens = budget // pop - 1
    return ja.AttackConfig(pixels=k, population=pop, generations=gens, loss=loss,
                           strategy=name.replace("-margin", ""))


def main(argv=None):
    args = parser(
        __doc__, model="tiny", data="sample", images=30, pixels="1,3",
        budgets=",".join(map(str, BUDGETS)), separate=(False, "one run per budget"),
        outside_sample=False, strategies=",".join(s for s in SETTINGS if s != "de-margin"),
        out="benchmarks/results/strategies_cpu",
        resume=(False, "keep the rows of --out's JSON from an earlier run with the same "
                "model, data, images and budgets; run only the missing ones"),
    ).parse_args(argv)

    import jaxattack as ja
    from jaxattack import models

    budgets = [int(b) for b in args.budgets.split(",")]
    clf = models.load(args.model)
    x, y, ids = _images(args)
    out = Path(args.out).with_suffix("")  # OUT.json, OUT.md, OUT.png
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, started, spent = _resumed(args, out), time.time(), 0.0
    if rows:
        spent = json.loads(out.with_suffix(".json").read_text())["wall_seconds"]
        print(f"resuming: {len(rows)} rows kept from {out.with_suffix('.json')}", flush=True)
    done = {(r["strategy"], r["pixels"], r["run_budget"]) for r in rows}
    for k in [int(v) for v in args.pixels.split(",")]:
        for name in args.strategies.split(","):
            if name == "oracle" and k != 1:
                continue
            runs = budgets if args.separate and name != "oracle" else [max(budgets)]
            for run_budget in runs:
                if (name, k, run_budget) in done:
                    continue
                cfg = _config(name, k, run_budget, x.shape[1:])
                r = ja.attack(clf, x, y, cfg, image_ids=ids, progress=True)
                ok = r.clean_correct
                read = [run_budget] if args.separate and name != "oracle" else budgets
                row = dict(strategy=name, pixels=k, run_budget=run_budget,
                           population=cfg.population,
                           generations=cfg.generations, loss=cfg.loss,
                           images=int(ok.sum()), seconds=r.seconds,
                           curve={q: float((r.success & (r.queries <= q))[ok].mean())
                                  for q in read},
                           queries=r.queries[ok].tolist(), success=r.success[ok].tolist(),
                           image_id=r.image_id[ok].tolist(),
                           colours=r.pixels[ok][:, :, 2:].tolist())
                rows.append(row)
                print(name, k, {q: f"{v:.1%}" for q, v in row["curve"].items()},
                      f"{r.seconds:.0f} s", flush=True)
                record = _write(out, rows, args, spent + time.time() - started, budgets)
    record = _write(out, rows, args, spent + time.time() - started, budgets)
    md = out.with_suffix(".md").read_text()
    _figure(rows, out.with_suffix(".png"), max(budgets))
    print(md)
    return record


# What must match for --resume to keep an earlier run's rows.
_SAME_RUN = ("model", "data", "images", "budgets", "separate", "outside_sample")


def _resumed(args, out: Path) -> list:
    path = out.with_suffix(".json")
    if not args.resume or not path.exists():
        return []
    old = json.loads(path.read_text())
    differ = [a for a in _SAME_RUN if old["args"].get(a) != getattr(args, a)]
    if differ:
        raise SystemExit(f"--resume: {path} is from a run with other {', '.join(differ)}")
    rows = [r for r in old["rows"] if "run_budget" in r]
    for r in rows:  # JSON made the budgets strings
        r["curve"] = {int(q): v for q, v in r["curve"].items()}
    return rows


def _write(out: Path, rows, args, wall, budgets) -> dict:
    """The rows so far as JSON and markdown (after every row: a run cut short keeps
    them, and ``--resume`` goes on from there)."""
    record = {"rows": rows, "machine": machine(), "args": vars(args),
              "wall_seconds": wall, "coverage": _coverage(rows)}
    write_outputs(out, record, _markdown(record, budgets, args), indent=None, echo=False)
    return record


def _coverage(rows):
    """For DE's k = 1 successes: how many used a non-corner colour, and how many are on
    images the oracle (same images) calls not vulnerable."""
    de = [r for r in rows if r["strategy"] == "de" and r["pixels"] == 1]
    orc = [r for r in rows if r["strategy"] == "oracle"]
    if not de or not orc:
        return None
    de, orc = de[-1], orc[-1]
    vulnerable = {i for i, s in zip(orc["image_id"], orc["success"], strict=True) if s}
    hits = [(i, c) for i, s, c in zip(de["image_id"], de["success"], de["colours"],
                                      strict=True) if s]
    non_corner = [i for i, c in hits if any(v not in (0, 255) for v in c[0])]
    return {"de_successes": len(hits), "de_non_corner_colour": len(non_corner),
            "de_on_images_the_oracle_cannot_fool": len([i for i, _ in hits
                                                        if i not in vulnerable]),
            "oracle_vulnerable": len(vulnerable), "images": len(orc["image_id"]),
            "de_found_of_oracle_vulnerable": len([i for i, _ in hits if i in vulnerable])}


def _markdown(record, budgets, args):
    rows = record["rows"]
    head = "| k | strategy | loss | pop | " + " | ".join(f"{q:,} q" for q in budgets) + " | s |"
    lines = [head, "|" + "---|" * (len(budgets) + 5)]
    keyed = {}
    for r in rows:
        keyed.setdefault((r["pixels"], r["strategy"]), []).append(r)
    for (k, name), group in keyed.items():
        curve = {q: v for r in group for q, v in r["curve"].items()}
        cells = " | ".join(f"{100 * curve[q]:.1f}%" if q in curve else "-" for q in budgets)
        lines.append(f"| {k} | {name} | {group[0]['loss']} | {group[0]['population']} | "
                     f"{cells} | {sum(r['seconds'] for r in group):.0f} |")
    n = rows[0]["images"] if rows else 0
    where = "JPEG test images outside the built-in sample" if args.outside_sample else args.data
    md = (f"Success rate among the {n} clean-correct of {args.images} images ({args.model}, "
          f"{where}) fooled within q queries"
          + (" (each budget a run of its own)" if args.separate else
             " (read off one run at the largest budget)") + ".\n\n" + "\n".join(lines))
    pairs = _paired(rows, budgets)
    if pairs:
        md += ("\n\nPaired with the first strategy on the same images (difference in points, "
               "95 % Wald interval, rough when few images differ; images fooled only by "
               "either; exact McNemar p):\n\n"
               + "\n".join(pairs))
    cov = record["coverage"]
    if cov:
        md += (f"\n\nOracle coverage at k = 1: the oracle (every position x 8 corners) "
               f"fools {cov['oracle_vulnerable']} of {cov['images']}; the paper's DE fools "
               f"{cov['de_successes']}, {cov['de_non_corner_colour']} of them with a "
               f"non-corner colour, {cov['de_on_images_the_oracle_cannot_fool']} of them on "
               f"an image the oracle cannot fool.")
    return md + (f"\n\nWall time {record['wall_seconds'] / 60:.1f} min. Machine: "
                 f"{record['machine']}.\n")


def _within(group, q):
    """Success within ``q`` queries per image, from the run of budget ``q`` (``--separate``)
    or read off the one run at the largest budget; ``None`` if neither is there."""
    import numpy as np

    run = [r for r in group if r["run_budget"] == q] or [
        r for r in group if r["run_budget"] >= q and len(group) == 1]
    if not run:
        return None
    r = run[-1]
    return r["image_id"], np.array(r["success"], bool) & (np.array(r["queries"]) <= q)


def _paired(rows, budgets) -> list[str]:
    """One line per (k, budget, strategy) against the first strategy run at that k."""
    from jaxattack.pixels.stats import paired

    lines = []
    for k in dict.fromkeys(r["pixels"] for r in rows):
        names = list(dict.fromkeys(r["strategy"] for r in rows if r["pixels"] == k))
        group = {n: [r for r in rows if r["pixels"] == k and r["strategy"] == n] for n in names}
        for q in budgets:
            base = _within(group[names[0]], q)
            for name in names[1:]:
                other = _within(group[name], q)
                if base is None or other is None or base[0] != other[0]:
                    continue
                p = paired(base[1], other[1])
                lo, hi = p["interval"]
                lines.append(f"- k = {k}, {q:,} q: {name} vs {names[0]} "
                             f"{100 * p['diff']:+.1f} ({100 * lo:+.1f} to {100 * hi:+.1f}); "
                             f"{p['only_b']} vs {p['only_a']} images; p = {p['p_mcnemar']:.2g}")
    return lines


def _figure(rows, path, top):
    import numpy as np
    from matplotlib.figure import Figure

    from jaxattack.pixels.stats import wilson

    ks = sorted({r["pixels"] for r in rows})
    names = list(dict.fromkeys(r["strategy"] for r in rows))  # one colour per strategy
    fig = Figure(figsize=(4 * len(ks), 3.5))
    axes = fig.subplots(1, len(ks), squeeze=False)[0]
    for ax, k in zip(axes, ks, strict=True):
        for r in rows:
            if r["pixels"] != k or max(r["curve"]) < top and r["strategy"] != "oracle":
                continue
            q = np.array(r["queries"])[np.array(r["success"], bool)]
            grid = np.geomspace(20, top, 200)
            n = max(len(r["queries"]), 1)
            hit = np.array([(q <= g).sum() for g in grid])
            band = np.array([wilson(int(h), n) for h in hit])
            (line,) = ax.plot(grid, hit / n, label=r["strategy"],
                              color=f"C{names.index(r['strategy']) % 10}")
            ax.fill_between(grid, band[:, 0], band[:, 1], color=line.get_color(), alpha=0.15)
        ax.set_xscale("log")
        ax.set_title(f"k = {k}")
        ax.set_xlabel("queries")
        ax.set_ylabel("fooled (95% interval)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
