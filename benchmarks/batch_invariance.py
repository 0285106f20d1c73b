"""Does a result depend on the batch size? The same problems at two slot counts.

    python benchmarks/batch_invariance.py --images 32 --slots 4,82 --json OUT/repro.json

Attacks the first ``--images`` sample images twice, with the engine holding a different
number of slots (so a different forward-pass batch), and compares every problem's
final pixels, queries and verified success. On CPU they are identical (the tests check
it bit for bit); on a GPU the convolution algorithm chosen per batch shape may change
the last bits of a probability and with them a DE selection, which this measures.
"""

from __future__ import annotations

from common import machine, parser, print_record


def main(argv=None) -> dict:
    args = parser(__doc__, model="tiny", images=32,
                  slots=("4,82", "two slot counts (problems per batch)"), population=400,
                  generations=100, json=(None, "write the record here")).parse_args(argv)
    a, b = (int(s) for s in args.slots.split(","))

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
    return print_record(record, args.json)


if __name__ == "__main__":
    main()
