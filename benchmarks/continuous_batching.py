"""Continuous batching vs fixed batches on the same problems.

    python benchmarks/continuous_batching.py --model tiny --images 64 --slots 4

Both runs use one compiled engine with the same number of slots. "fixed" loads a batch,
runs it until its slowest problem finishes, then loads the next; "continuous" refills
a slot as soon as its problem finishes. Utilisation is useful slot-generations over
computed ones. Per-problem results are identical (checked here).
"""

from __future__ import annotations

import json
import time

from common import machine, parser, write_outputs


def main(argv=None):
    args = parser(__doc__, model="tiny", data="sample", images=64, slots=4, pixels=1,
                  population=400, generations=100,
                  out=(None, "write OUT.json")).parse_args(argv)

    import numpy as np

    from jaxattack import AttackConfig, data, engine, models
    from jaxattack.data import select_images
    from jaxattack.engine.sharding import make_mesh
    from jaxattack.pixels import problems
    from jaxattack.pixels.verify import Collector

    clf = models.load(args.model)
    x, y, _ = data.load(args.data)
    sel = select_images(np.asarray(y), args.images)
    x, y = x[sel], np.asarray(y)[sel].astype(np.int32)
    cfg = AttackConfig(pixels=args.pixels, population=args.population,
                       generations=args.generations)
    mesh = make_mesh()
    tgt = np.full(len(x), -1, np.int32)
    keys = problems.keys(0, sel, tgt)
    probs = problems.image_problems(x, y, np.arange(len(x)), tgt)
    search = cfg.search(clf, x.shape[1:])
    slots = engine.default_slots(cfg.population, len(x), mesh, args.slots)
    out = {}
    for name, refill in (("fixed", False), ("continuous", True)):
        kept = Collector(len(x), search.strategy.dims)
        run = dict(mesh=mesh, num_slots=slots)
        engine.run(search, clf.params, keys[:1], problems.image_problems(
            x, y, np.arange(1), tgt[:1]), lambda *a: None, **run)  # compile
        t0 = time.perf_counter()
        util = engine.run(search, clf.params, keys, probs, kept, refill=refill,
                          **run).utilisation
        sec = time.perf_counter() - t0
        found, gens = kept.found, kept.generations
        queries = int(args.population * (gens + 1).sum())
        out[name] = dict(seconds=sec, utilisation=util, queries=queries, q_s=queries / sec,
                         fooled=int(found.sum()), found=found.tolist(), gens=gens.tolist())
        print(name, {k: v for k, v in out[name].items() if k not in ("found", "gens")},
              flush=True)
    assert out["fixed"]["gens"] == out["continuous"]["gens"], "results differ"
    meta = dict(model=args.model, images=args.images, slots=args.slots, pixels=args.pixels,
                population=args.population, generations=args.generations,
                machine=machine(),
                speedup=out["fixed"]["seconds"] / out["continuous"]["seconds"])
    print(json.dumps(meta))
    for v in out.values():
        v.pop("found"), v.pop("gens")
    write_outputs(args.out, {"meta": meta, **out}, None, indent=1)


if __name__ == "__main__":
    main()
