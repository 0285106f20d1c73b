"""Wall time of one whole attack run, for the test-set targets.

    python benchmarks/timed_attack.py --model tiny --images 10000 \
        --data shared/datasets/cifar10-jpeg --target-seconds 120 --json OUT/tiny_10k.json

One sweep cell (model, k pixels, mode) over ``--images`` images, start to finish:
loading the data and the model, the clean forward pass, compilation, the search and
the verification of every result. A fresh ``--out`` folder is required, so a resumed
store can never shorten the time. Writes one JSON record and prints it as a line.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import machine, parser, print_record


def main(argv=None) -> dict:
    ap = parser(__doc__, model="tiny", data="sample", images=1000, pixels=1, mode="untargeted",
                population=400, generations=100,
                out=(None, "fresh run folder (default: a temporary one)"),
                json=(None, "write the record here"))
    ap.add_argument("--target-seconds", type=float, default=None,
                    help="the target to report against (met: seconds <= target)")
    args = ap.parse_args(argv)

    from jaxattack.reports import report
    from jaxattack.runs import sweep

    out = Path(args.out or tempfile.mkdtemp(prefix="timed_attack_"))
    if out.exists() and any(out.iterdir()):
        ap.error(f"--out {out} is not empty: a resumed run would time only part of the work")
    from jaxattack import AttackConfig

    exp = sweep.Experiment(args.model, AttackConfig(
        pixels=args.pixels, mode=args.mode, population=args.population,
        generations=args.generations), data=args.data)
    t0 = time.perf_counter()
    store = sweep.run([exp], out, args.images, save_images="none", progress=False)
    seconds = time.perf_counter() - t0
    rows = store.rows()
    (agg,) = report.aggregate(rows)
    queries = sum(int(r["queries"]) for r in rows)
    record = {
        "model": args.model, "data": args.data, "pixels": args.pixels, "mode": args.mode,
        "population": args.population, "generations": args.generations,
        "images": agg["n_images"], "clean_correct": agg["n_clean_correct"],
        "success_rate": agg["success_rate"], "mean_queries": agg["mean_queries"],
        "queries": queries, "seconds": round(seconds, 2),
        "queries_per_s": round(queries / seconds, 1),
        "target_seconds": args.target_seconds,
        "met": None if args.target_seconds is None else seconds <= args.target_seconds,
        "machine": machine(),
    }
    return print_record(record, args.json)


if __name__ == "__main__":
    main()
