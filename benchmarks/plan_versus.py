"""This tree's sparse forward against another checkout's, side by side in one run.

    git worktree add ../baseline 422ddb8      # 0.2.0: the zoo's hand-declared plans
    python benchmarks/plan_versus.py --baseline ../baseline --rounds 2 \
        --out benchmarks/results/plan_versus_cpu

Runs ``benchmarks/sparse_forward.py`` of both trees in alternating processes (rounds
outermost, this tree first in odd rounds), each on the same models, k, images and
candidates, and keeps each tree's fastest dense and sparse time per (model, k). The
dense forward is the same program in both trees up to the convolution lowering, so
its column shows how much the two processes' machine state differed. Results name the
machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from common import ROOT, machine, parser, write_outputs


def run_tree(tree: Path, args) -> list[dict]:
    cmd = [sys.executable, str(tree / "benchmarks" / "sparse_forward.py"), "--models",
           args.models, "--pixels", args.pixels, "--reps", str(args.reps), "--problems",
           str(args.problems), "--candidates", str(args.candidates)]
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main(argv=None):
    ap = parser(__doc__, models="tiny,resnet20,allcnn,nin,vgg16", pixels="1,3,5", rounds=2,
                reps=5, problems=4, candidates=100, out=None)
    ap.add_argument("--baseline", required=True, help="the other checkout")
    args = ap.parse_args(argv)
    trees = {"this": ROOT, "baseline": Path(args.baseline).resolve()}
    best: dict = {}
    for r in range(args.rounds):
        for name in (("this", "baseline") if r % 2 == 0 else ("baseline", "this")):
            for row in run_tree(trees[name], args):
                key = (row["model"], row["k"])
                b = best.setdefault(key, {}).setdefault(name, {})
                for f in ("dense_s", "sparse_s"):
                    if row.get(f) is not None:
                        b[f] = min(b.get(f, float("inf")), row[f])
                b["handover"], b["plan"] = row.get("handover"), row.get("plan")
            print(f"round {r} {name} done", file=sys.stderr, flush=True)
    rows = []
    for (model, k), b in best.items():
        this, base = b.get("this", {}), b.get("baseline", {})
        rows.append({"model": model, "k": k, "this": this, "baseline": base,
                     "sparse_ratio": (base["sparse_s"] / this["sparse_s"]
                                      if this.get("sparse_s") and base.get("sparse_s")
                                      else None)})
    result = {"machine": machine(), "args": vars(args), "rows": rows}
    lines = [f"Machine: {result['machine']}", "",
             "| model | k | dense ms (this / baseline) | sparse ms (this / baseline) | "
             "speed-up over dense (this / baseline) | baseline sparse / this sparse |",
             "|---|---:|---:|---:|---:|---:|"]

    def ms(d, f):
        return f"{1e3 * d[f]:.1f}" if d.get(f) else "—"

    def su(d):
        return f"{d['dense_s'] / d['sparse_s']:.2f}x" if d.get("sparse_s") else "—"

    for row in rows:
        t, b = row["this"], row["baseline"]
        ratio = f"{row['sparse_ratio']:.2f}x" if row["sparse_ratio"] else "—"
        lines.append(f"| {row['model']} | {row['k']} | {ms(t, 'dense_s')} / {ms(b, 'dense_s')}"
                     f" | {ms(t, 'sparse_s')} / {ms(b, 'sparse_s')} | {su(t)} / {su(b)} | "
                     f"{ratio} |")
    write_outputs(args.out, result, "\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()
