"""Throughput of every zoo model: raw forward img/s vs attack queries/s, and FLOP rate.

    python benchmarks/throughput.py --models tiny,resnet20 --slots 1,4 --devices 1,2

Uses `engine_overhead.measure` for each (model, devices, slots). FLOPs per image come
from XLA's cost analysis of the compiled forward pass; with ``--peak-tflops`` (the
device's float32 peak; ``--peak-tflops-bf16`` for bfloat16) the model FLOP utilisation
(MFU) is reported too. ``--dtypes float32,bfloat16`` also runs each model with bfloat16
compute (float32 parameters; ``models.load(name, dtype="bfloat16")``), for accelerators:
XLA:CPU is slow in bfloat16.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def flops_per_image(clf) -> float:
    import jax
    import jax.numpy as jnp

    x = jnp.zeros((64, *(clf.input_shape or (32, 32, 3))), jnp.uint8)
    cost = jax.jit(clf.probs).lower(clf.params, x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", float("nan"))) / 64


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="tiny,resnet20,allcnn,nin,vgg16")
    ap.add_argument("--population", type=int, default=400)
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--slots", default="1,4")
    ap.add_argument("--devices", default="1,2", help="device counts (virtual on CPU)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dtypes", default="float32", help="compute dtypes (comma list)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="float32 peak of one device, for MFU")
    ap.add_argument("--peak-tflops-bf16", type=float, default=None,
                    help="bfloat16 peak of one device, for MFU")
    ap.add_argument("--out", default=None, help="JSON path; a .md is written beside it")
    args = ap.parse_args(argv)
    counts = [int(d) for d in args.devices.split(",")]

    import jax

    jax.config.update("jax_num_cpu_devices", max(counts))  # only affects the CPU backend
    from engine_overhead import machine, markdown, measure

    from jaxattack import models
    from jaxattack.sharding import make_mesh

    counts = [n for n in counts if n <= len(jax.local_devices())]
    rows = []
    peaks = {"float32": args.peak_tflops, "bfloat16": args.peak_tflops_bf16}
    for name in args.models.split(","):
        for dtype in args.dtypes.split(","):
            clf = models.load(name, weights=None, dtype=None if dtype == "float32" else dtype)
            fl = flops_per_image(clf)
            label = name if dtype == "float32" else f"{name} ({dtype})"
            for n_dev in counts:
                for slots in [int(s) for s in args.slots.split(",")]:
                    r = {"model": label, "dtype": dtype} | measure(
                        clf, make_mesh(n_dev), slots, args.population, args.generations,
                        args.repeats)
                    r["gflop_per_image"] = fl / 1e9
                    r["attack_tflop_s"] = fl * r["attack_q_s"] / 1e12
                    if peaks.get(dtype):
                        r["mfu"] = r["attack_tflop_s"] / (peaks[dtype] * n_dev)
                    rows.append(r)
                    print(json.dumps(r), flush=True)
    meta = dict(population=args.population, generations=args.generations, machine=machine(),
                jax=jax.__version__)
    table = markdown(rows) + "\n\n| model | GFLOP/image | attack TFLOP/s (best) |\n|---|---|---|\n"
    for name in dict.fromkeys(r["model"] for r in rows):
        best = max((r for r in rows if r["model"] == name), key=lambda r: r["attack_q_s"])
        table += (f"| {name} | {best['gflop_per_image']:.3f} | {best['attack_tflop_s']:.3f}"
                  + (f" (MFU {best['mfu']:.1%})" if "mfu" in best else "") + " |\n")
    print(f"\n{meta}\n\n{table}")
    if args.out:
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        Path(args.out).with_suffix(".md").write_text(f"{meta}\n\n{table}")


if __name__ == "__main__":
    main()
