"""How many more images can any search fool? Stronger searches on the images that earlier
runs of ``strategies.py`` left standing (issue 17, item 3).

    python benchmarks/ceiling.py --runs benchmarks/results/learned_rs_tiny300_10k_cpu.json \\
        benchmarks/results/learned_rs_tiny300_40k_cpu.json --pixels 3 \\
        --probes learned-rs:untargeted:50000:1,learned-rs:all-targets:10000:0 \\
        --out benchmarks/results/ceiling_tiny300_k3_cpu

The images are those of the first run (same ``--model``, ``--data``, ``--images`` and
``--outside-sample``); "standing" means clean-correct and fooled by no row of any
``--runs`` file at ``--pixels``. Each probe (``strategy:mode:budget:seed``; the budget
per problem, so ``all-targets`` spends up to 9x it per CIFAR-10 image) runs on them, and
the result says how many of them any probe fools: an upper-bound reading of what a
stronger search could still gain over those runs (no search here is exhaustive, so it is
a lower bound on the true ceiling). Writes JSON + markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from common import machine, parser, write_outputs

# What must match between the --runs files: they attacked the same images, same model.
_SAME_IMAGES = ("model", "data", "images", "outside_sample")


def main(argv=None):
    ap = parser(__doc__, pixels=3, probes=("learned-rs:untargeted:50000:1",
                                           "comma-separated strategy:mode:budget:seed"),
                out="benchmarks/results/ceiling_cpu")
    ap.add_argument("--runs", nargs="+", required=True, help="strategies.py JSON files")
    args = ap.parse_args(argv)

    import numpy as np
    from strategies import _config, _images

    import jaxattack as ja

    records = [json.loads(Path(p).read_text()) for p in args.runs]
    first = argparse.Namespace(**records[0]["args"])
    for path, rec in zip(args.runs, records, strict=True):  # the same images, same model
        differ = [a for a in _SAME_IMAGES if rec["args"].get(a) != getattr(first, a)]
        if differ:
            raise SystemExit(f"{path} differs from {args.runs[0]} in {', '.join(differ)}")
    rows = [r for rec in records for r in rec["rows"] if r["pixels"] == args.pixels]
    if not rows:
        raise SystemExit(f"no rows at k = {args.pixels} in {args.runs}")
    correct = set(rows[0]["image_id"])
    fooled = {i for r in rows for i, s in zip(r["image_id"], r["success"], strict=True) if s}
    x, y, ids = _images(first)
    keep = np.flatnonzero([i in correct and i not in fooled for i in ids])
    print(f"{len(correct)} correct, {len(fooled)} fooled by {len(rows)} runs, "
          f"{keep.size} standing", flush=True)
    clf = ja.models.load(first.model)
    found, probes, started = set(), [], time.time()
    for spec in args.probes.split(","):
        name, mode, budget, seed = spec.split(":")
        cfg = dataclasses.replace(_config(name, args.pixels, int(budget), x.shape[1:]),
                                  mode=mode, seed=int(seed))
        r = ja.attack(clf, x[keep], y[keep], cfg, image_ids=ids[keep], progress=True)
        hit = {int(i) for i, s in zip(r.image_id, r.success, strict=True) if s}
        found |= hit
        probes.append(dict(probe=spec, fooled=sorted(hit), seconds=r.seconds,
                           queries=int(np.asarray(r.queries).sum())))
        print(spec, f"fooled {len(hit)} of {keep.size}", f"{r.seconds:.0f} s", flush=True)
    record = dict(args=vars(args), first_run=vars(first), machine=machine(),
                  pixels=args.pixels, correct=len(correct), fooled_by_runs=len(fooled),
                  runs=[dict(strategy=r["strategy"], budget=r["run_budget"],
                             fooled=int(sum(r["success"]))) for r in rows],
                  standing=int(keep.size), probes=probes, fooled_by_probes=len(found),
                  wall_seconds=time.time() - started)
    lines = [f"{first.model}, k = {args.pixels}: {len(correct)} clean-correct images, "
             f"{len(fooled)} fooled by the runs below, {keep.size} standing; machine: "
             f"{record['machine']}.", "", "| run | budget | fooled |", "|---|---:|---:|"]
    lines += [f"| {r['strategy']} | {r['budget']:,} | {r['fooled']} |" for r in record["runs"]]
    lines += ["", f"Probes on the {keep.size} standing images:", "",
              "| probe (strategy:mode:budget:seed) | fooled | queries | s |",
              "|---|---:|---:|---:|"]
    lines += [f"| {p['probe']} | {len(p['fooled'])} | {p['queries']:,} | {p['seconds']:.0f} |"
              for p in probes]
    lines += ["", f"Any probe: {len(found)} of the {keep.size} standing images; all runs and "
                  f"probes together: {len(fooled) + len(found)} of {len(correct)}."]
    write_outputs(args.out, record, "\n".join(lines) + "\n", indent=1)
    return record


if __name__ == "__main__":
    main()
