"""Wall time of one whole attack run, for the test-set targets.

    python benchmarks/timed_attack.py --model tiny --images 10000 \
        --data shared/datasets/cifar10-jpeg --target-seconds 120 --json OUT/tiny_10k.json

One sweep cell (model, k pixels, mode) over ``--images`` images, start to finish:
loading the data and the model, the clean forward pass, compilation, the search and
the verification of every result. A fresh ``--out`` folder is required, so a resumed
store can never shorten the time. Writes one JSON record and prints it as a line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--data", default="sample")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--pixels", type=int, default=1)
    ap.add_argument("--mode", default="untargeted")
    ap.add_argument("--population", type=int, default=400)
    ap.add_argument("--generations", type=int, default=100)
    ap.add_argument("--target-seconds", type=float, default=None,
                    help="the target to report against (met: seconds <= target)")
    ap.add_argument("--out", default=None, help="fresh run folder (default: a temporary one)")
    ap.add_argument("--json", default=None, help="write the record here")
    args = ap.parse_args(argv)

    from engine_overhead import machine

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
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
