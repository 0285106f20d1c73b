"""Does a result depend on the batch size? The same problems at two slot counts.

    python benchmarks/batch_invariance.py --images 32 --slots 4,82 --json OUT/repro.json

Attacks the first ``--images`` sample images twice, with the engine holding a different
number of slots (so a different forward-pass batch), and compares every problem's
final pixels, queries and verified success. On CPU they are identical (the tests check
it bit for bit); on a GPU the convolution algorithm chosen per batch shape may change
the last bits of a probability and with them a DE selection, which this measures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--slots", default="4,82", help="two slot counts (problems per batch)")
    ap.add_argument("--population", type=int, default=400)
    ap.add_argument("--generations", type=int, default=100)
    ap.add_argument("--json", default=None, help="write the record here")
    args = ap.parse_args(argv)
    a, b = (int(s) for s in args.slots.split(","))

    from engine_overhead import machine

    import jaxattack as ja
    from jaxattack import data, models

    x, y, _ = data.load("sample", limit=args.images)
    clf = models.load(args.model)
    cfg = ja.AttackConfig(population=args.population, generations=args.generations)
    r1, r2 = (ja.attack(clf, x, y, cfg.replace(batch_size=s), progress=False) for s in (a, b))
    same = ((r1.pixels == r2.pixels).all(axis=(1, 2)) & (r1.queries == r2.queries)
            & (r1.success == r2.success))
    record = {
        "model": args.model, "images": len(x), "slots": [a, b],
        "population": args.population, "generations": args.generations,
        "identical": bool(same.all()), "problems_differing": int((~same).sum()),
        "success_rates": [r1.success_rate(), r2.success_rate()], "machine": machine(),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
