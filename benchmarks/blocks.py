"""How many candidates per evaluation call: engine queries/s of the paper's DE at several
blocks (``engine.run``'s ``block``, ``sizing.BLOCK_CANDIDATES``), measured side by side.

    python benchmarks/blocks.py --models tiny,resnet20,allcnn,nin,vgg16 --pixels 1 \\
        --blocks 400,200,100,50 --out benchmarks/results/blocks_cpu

One slot (one population of 400 on one image, early stop off) per engine; each engine
runs ``--generations`` generations per measurement, the engines of one model in turn,
``--repeats`` rounds; the table gives the median queries/s and its ratio to a whole
population per call (the largest block). ``--forwards auto,dense`` measures the sparse
forward and the dense one. Results are the same at every block (the engine tests check
it); only the speed differs.
"""

from __future__ import annotations

import json
import statistics
import time

from common import machine, parser, write_outputs


def main(argv=None):
    args = parser(__doc__, models="tiny", pixels=("1", "comma-separated k"), forwards="auto",
                  blocks="400,200,100,50", population=400, generations=10, repeats=3,
                  out=(None, "write OUT.json and OUT.md")).parse_args(argv)

    import numpy as np

    import jaxattack as ja
    from jaxattack import engine
    from jaxattack.engine.sharding import make_mesh
    from jaxattack.pixels import problems

    mesh = make_mesh(1)
    blocks = [int(b) for b in args.blocks.split(",")]
    rows = []
    x, y, _ = ja.data.load("sample", limit=1)
    todo = problems.image_problems(x, y, np.arange(1), np.full(1, -1, np.int32))
    keys = problems.keys(0, np.arange(1), np.full(1, -1))
    for model in args.models.split(","):
        clf = ja.models.load(model)
        for k in map(int, args.pixels.split(",")):
            for forward in args.forwards.split(","):
                cfg = ja.AttackConfig(pixels=k, population=args.population, forward=forward,
                                      generations=10**6, early_stop="none")
                search = cfg.search(clf, x.shape[1:])
                engines = {}
                for b in blocks:
                    engines[b] = engine.Engine(search, clf.params, mesh, 1, todo, block=b)
                    engines[b].load(np.ones(1, bool), keys, todo)
                    engines[b].evolve(1, 1)  # warm up
                rates = {b: [] for b in blocks}
                for _ in range(args.repeats):
                    for b, e in engines.items():
                        t0 = time.perf_counter()
                        _, computed = e.evolve(1, args.generations)
                        rates[b].append(computed * args.population / (time.perf_counter() - t0))
                whole = statistics.median(rates[max(blocks)])
                for b in blocks:
                    q = statistics.median(rates[b])
                    rows.append(dict(model=model, pixels=k, forward=search.evaluate.forward,
                                     block=b, queries_per_s=round(q, 1),
                                     over_whole=round(q / whole, 3),
                                     runs=[round(r, 1) for r in rates[b]]))
                    print(json.dumps(rows[-1]), flush=True)
    lines = ["| model | k | forward | " + " | ".join(f"block {b}" for b in blocks) + " |",
             "|---|---:|---|" + "---:|" * len(blocks)]
    for key in dict.fromkeys((r["model"], r["pixels"], r["forward"]) for r in rows):
        got = {r["block"]: r for r in rows if (r["model"], r["pixels"], r["forward"]) == key}
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(
            f"{got[b]['queries_per_s']:,.0f} ({got[b]['over_whole']:.2f}x)" for b in blocks)
            + " |")
    md = (f"The paper's DE (population {args.population}, one image, early stop off), engine "
          f"queries/s by candidates per evaluation call (median of {args.repeats} rounds of "
          f"{args.generations} generations; in brackets: over a whole population per call); "
          f"machine: {machine()}.\n\n" + "\n".join(lines) + "\n")
    write_outputs(args.out, {"rows": rows, "machine": machine(), "population": args.population,
                             "generations": args.generations, "repeats": args.repeats},
                  md, indent=1)


if __name__ == "__main__":
    main()
