"""No forward pass spent on finished problems: queries/s and utilisation through attack().

    python benchmarks/tail.py --images 20 --pixels 3 --out benchmarks/results/tail_cpu

The paper's DE (population 400, 100 generations) and Sparse-RS (population 20, up to 500
generations, margin loss) on the same images, all in one run (``--strategies`` may add
``learned-rs``, the evaluation's first attack, with Sparse-RS's settings), Sparse-RS under three
engine settings (``VARIANTS``: every slot every generation; whole engines with the tail
moved to fewer slots, the accelerators' default; this platform's default, on XLA:CPU
chunks of slots with finished ones skipped), DE under the default and with its population
evaluated in one call instead of blocks (``unblocked``). Queries are what the problems were
charged; queries/s divides them by the attack's wall time (compiling included), search
queries/s by the engine's queue time; utilisation is useful slot-generations over
computed ones. The results must be identical under every setting. Each other strategy's
queries/s relative to DE are given per round, as the median of the warm rounds and
pooled over them (all queries over all seconds: a Sparse-RS run is ~8x shorter
than DE's, so a single round's ratio carries the machine's noise on a short run).
"""

from __future__ import annotations

import itertools
import json
import sys
import time

from common import machine, parser, write_outputs

SETTINGS = {  # name: (strategy, population, generations, loss)
    "de": ("de", 400, 100, "prob"),
    "sparse-rs": ("sparse-rs", 20, 500, "margin"),
    "learned-rs": ("learned-rs", 20, 500, "margin"),  # the evaluation's first attack
}
WHOLE = 2**30  # a chunk (block) larger than any engine (population): one call for all
VARIANTS = {  # name: engine.run's (chunk, shrink, block)
    "whole": (WHOLE, False, None),  # every slot every generation (before the fix)
    "whole+shrink": (WHOLE, "auto", None),  # accelerators' default: move to fewer slots
    "default": (None, "auto", None),  # this platform's default (XLA:CPU: chunks, skipped)
    # the default with each population evaluated in one call (XLA:CPU before blocks of
    # sizing.BLOCK_CANDIDATES; the same as "default" for populations within a block)
    "unblocked": (None, "auto", WHOLE),
}


def main(argv=None):
    ap = parser(__doc__, model="tiny", data="sample", images=20, pixels=3,
                strategies="de,sparse-rs",
                variants=("whole,whole+shrink,default",
                          "engine settings for strategies other than DE"),
                de_variants=("default,unblocked", "engine settings for DE"),
                repeat=(2, "run each setting this many times in one process: the first "
                        "compiles (cold), later ones reuse the compiled programs (warm)"),
                out=(None, "write OUT.json and OUT.md"))
    ap.add_argument("--generations", type=int, default=None,
                    help="override every strategy's generations (smoke runs)")
    args = ap.parse_args(argv)

    import numpy as np

    import jaxattack as ja
    from jaxattack import engine

    clf = ja.models.load(args.model)
    x, y, _ = ja.data.load(args.data, limit=args.images)
    ids = np.arange(len(x))
    rows, run, results = [], engine.run, {}
    settings = [(name, variant) for name in args.strategies.split(",")
                for variant in (args.de_variants if name == "de" else args.variants).split(",")]
    # Rounds outermost: each round runs every setting once, so that the ratios compare
    # runs minutes apart, not a strategy's runs with the other's a quarter of an hour later.
    for rep, (name, variant) in itertools.product(range(args.repeat), settings):
        strategy, pop, gens, loss = SETTINGS[name]
        gens = args.generations or gens
        cfg = ja.AttackConfig(pixels=args.pixels, population=pop, generations=gens, loss=loss,
                              strategy=strategy)
        chunk, shrink, block = VARIANTS[variant]
        stats = []

        def recorded(*a, chunk=chunk, shrink=shrink, block=block, stats=stats, **kw):
            stats.append(run(*a, **kw | {"chunk": chunk, "shrink": shrink, "block": block}))
            return stats[-1]

        engine.run = recorded
        try:
            t0 = time.perf_counter()
            res = ja.attack(clf, x, y, cfg, image_ids=ids)
            seconds = time.perf_counter() - t0
        finally:
            engine.run = run
        queries = int(res.queries.sum())
        search_s = sum(st.seconds for st in stats)
        first = results.setdefault(name, res)
        if not all(np.array_equal(getattr(first, f), getattr(res, f))
                   for f in ("pixels", "queries", "success")):
            sys.exit(f"{name}: results differ between engine settings ({variant})")
        rows.append(dict(strategy=name, population=pop, generations=gens, loss=loss,
                         variant=variant, round=rep, run="warm" if rep else "cold",
                         seconds=round(seconds, 2),
                         build_seconds=round(sum(st.build_seconds for st in stats), 2),
                         search_seconds=round(search_s, 2), queries=queries,
                         queries_per_s=round(queries / seconds, 1),
                         search_queries_per_s=round(queries / search_s, 1),
                         utilisation=round(sum(st.useful for st in stats)
                                           / max(sum(st.computed for st in stats), 1), 4),
                         resized=sum(st.resized for st in stats),
                         fooled=int(res.success.sum()),
                         clean_correct=int(res.clean_correct.sum())))
        print(json.dumps(rows[-1]), flush=True)
    lines = ["| strategy | population x generations | engine | round | fooled | queries | "
             "s (build) | queries/s | search queries/s | utilisation | resized |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['strategy']} | {r['population']} x {r['generations']} | {r['variant']} | "
              f"{r['round']} ({r['run']}) | {r['fooled']}/{r['clean_correct']} | "
              f"{r['queries']:,} | {r['seconds']:.1f} ({r['build_seconds']:.1f}) | "
              f"{r['queries_per_s']:,.0f} | {r['search_queries_per_s']:,.0f} | "
              f"{r['utilisation']:.1%} | {r['resized']} |" for r in rows]
    ratio, median, pooled = summarise(rows)
    md = (f"{args.model}, {len(x)} {args.data} images, k = {args.pixels}, untargeted, "
          f"through `attack()`; machine: {machine()}. queries/s divides by the attack's "
          "wall time (compiling, clean and verification passes included); search "
          "queries/s by the engine's queue time only (its first build excluded). cold: the "
          "first run of a setting in the process; warm: a rerun with its programs compiled.\n\n"
          + "\n".join(lines) + "\n\nqueries/s relative to DE (wall, search): " +
          ", ".join(f"{v['wall']:.2f}x, {v['search']:.2f}x ({k})" for k, v in ratio.items())
          + " (each against DE's default run of the same round)"
          + "".join(f"; median of the warm rounds ({k}): {v['wall']:.2f}x, {v['search']:.2f}x"
                    for k, v in median.items())
          + "".join(f"; pooled over the warm rounds ({k}): {v['wall']:.2f}x, {v['search']:.2f}x"
                    for k, v in pooled.items()) + "\n")
    write_outputs(args.out, {"rows": rows, "machine": machine(), "images": len(x),
                             "pixels": args.pixels, "model": args.model, "over_de": ratio,
                             "over_de_warm_median": median, "over_de_warm_pooled": pooled},
                  md, indent=1)


def summarise(rows):
    """Each other strategy's queries/s relative to DE's default run (wall, search): per
    run of a round DE ran, and per (strategy, variant) as the median of the warm rounds
    and pooled over them (all their queries over all their seconds: a Sparse-RS run
    lasts ~10 s against DE's ~80 s, so one round's ratio carries the VM's noise on 10 s;
    pooling weighs every second alike)."""
    import numpy as np

    de = {r["round"]: r for r in rows if r["strategy"] == "de" and r["variant"] == "default"}

    def over_de(r):
        d = de[r["round"]]
        return dict(wall=round(r["queries_per_s"] / d["queries_per_s"], 3),
                    search=round(r["search_queries_per_s"] / d["search_queries_per_s"], 3))

    def rate(rs, time_key):  # all queries of these runs over all their seconds
        return sum(r["queries"] for r in rs) / sum(r[time_key] for r in rs)

    others = [r for r in rows if r["strategy"] != "de" and r["round"] in de]
    ratio = {f"{r['strategy']} {r['variant']}, round {r['round']} ({r['run']})": over_de(r)
             for r in others}
    warm = {}  # "strategy variant" -> its warm runs
    for r in others:
        if r["run"] == "warm":
            warm.setdefault(f"{r['strategy']} {r['variant']}", []).append(r)
    median = {name: {t: float(np.median([over_de(r)[t] for r in rs])) for t in ("wall", "search")}
              for name, rs in warm.items()}
    warm_de = [r for r in de.values() if r["run"] == "warm"]
    pooled = {name: {t: round(rate(rs, key) / rate(warm_de, key), 3) for t, key
                     in (("wall", "seconds"), ("search", "search_seconds"))}
              for name, rs in warm.items()} if warm_de else {}
    return ratio, median, pooled


if __name__ == "__main__":
    main()
