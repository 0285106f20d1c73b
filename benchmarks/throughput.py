"""Throughput of every zoo model: raw forward img/s vs attack queries/s, and FLOP rate.

    python benchmarks/throughput.py --models tiny,resnet20 --slots 1,4 --devices 1,2

Uses `engine_overhead.measure` for each (model, devices, slots). FLOPs per image come
from XLA's cost analysis of the compiled forward pass; with ``--peak-tflops`` (the
device's float32 peak; ``--peak-tflops-bf16`` for bfloat16) the model FLOP utilisation
(MFU) is reported too. ``--dtypes float32,bfloat16`` also runs each model with bfloat16
compute (float32 parameters; ``models.load(name, dtype="bfloat16")``), for accelerators:
XLA:CPU is slow in bfloat16.

``--models resnet50_224`` adds a 224x224 ResNet-50-shaped Flax model with random
weights (benchmarks/resnet50.py; use a small ``--population`` on a CPU). Every row also
reports ``peak_rss_mb`` (the process's peak resident memory so far, on CPU the device
memory too) and, with ``--memory``, from XLA's memory analysis of the compiled programs,
``forward_mb`` (temporaries + arguments + outputs of the jitted forward on one device's
share of the batch) and ``attack_mb`` (the same for the engine's generation loop).
``--memory-batches 1,16,64`` compiles the forward at those batch sizes only (no run)
and reports the memory per image, the number batch sizing from bytes needs.
"""

from __future__ import annotations

import json

from common import machine, parser, write_outputs


def flops_per_image(clf) -> float:
    import jax
    import jax.numpy as jnp

    x = jnp.zeros((64, *(clf.input_shape or (32, 32, 3))), jnp.uint8)
    cost = jax.jit(clf.probs).lower(clf.params, x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", float("nan"))) / 64


def load_model(name: str, dtype: str):
    from jaxattack import models

    if name.startswith("resnet50"):
        from resnet50 import classifier

        size = int(name.split("_")[1]) if "_" in name else 224
        return classifier(size=size, dtype=None if dtype == "float32" else dtype)
    return models.load(name, weights=None, dtype=None if dtype == "float32" else dtype)


def program_mb(compiled) -> float | None:
    """Temporaries + arguments + outputs of a compiled program, in MB (XLA's analysis)."""
    try:
        m = compiled.memory_analysis()
        m = m[0] if isinstance(m, list) else m
        total = (m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
                 - getattr(m, "alias_size_in_bytes", 0))
        return total / 2**20
    except Exception:  # not every backend implements it
        return None


def forward_memory(clf, batch: int) -> dict:
    """XLA's memory analysis of ``jit(clf.probs)`` at ``batch`` images (compile only)."""
    import jax

    h, w, c = clf.input_shape or (32, 32, 3)
    x = jax.ShapeDtypeStruct((batch, h, w, c), "uint8")
    compiled = jax.jit(clf.probs).lower(clf.params, x).compile()
    m = compiled.memory_analysis()
    m = m[0] if isinstance(m, list) else m
    return dict(batch=batch, temp_mb=m.temp_size_in_bytes / 2**20,
                argument_mb=m.argument_size_in_bytes / 2**20,
                output_mb=m.output_size_in_bytes / 2**20, total_mb=program_mb(compiled))


def attack_memory(clf, mesh, slots: int, population: int) -> float | None:
    """XLA's memory analysis of the engine's generation loop, per device (compile only)."""
    from engine_overhead import timed_engine

    try:
        n_dev = mesh.devices.size
        slots = -(-slots // n_dev) * n_dev
        eng, _ = timed_engine(clf, mesh, slots, population, 1)
        return program_mb(eng._exe)
    except Exception:  # the engine's internals are not an API
        return None


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    ap = parser(__doc__, models="tiny,resnet20,allcnn,nin,vgg16", population=400,
                generations=4, slots="1,4", devices=("1,2", "device counts (virtual on CPU)"),
                repeats=2, dtypes=("float32", "compute dtypes (comma list)"),
                memory=(False, "also report XLA's memory analysis of the forward and the "
                        "attack loop per row (two more compiles per row)"),
                memory_batches=(None, "only compile the forward at these batch sizes (comma "
                                "list) and report XLA's memory analysis per image"),
                out=(None, "write OUT.json and OUT.md (OUT may end in .json)"))
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="float32 peak of one device, for MFU")
    ap.add_argument("--peak-tflops-bf16", type=float, default=None,
                    help="bfloat16 peak of one device, for MFU")
    args = ap.parse_args(argv)
    counts = [int(d) for d in args.devices.split(",")]

    import jax

    jax.config.update("jax_num_cpu_devices", max(counts))  # only affects the CPU backend
    from engine_overhead import markdown, measure

    from jaxattack.engine.sharding import make_mesh

    counts = [n for n in counts if n <= len(jax.local_devices())]
    if args.memory_batches:
        return memory_table(args)
    rows = []
    peaks = {"float32": args.peak_tflops, "bfloat16": args.peak_tflops_bf16}
    for name in args.models.split(","):
        for dtype in args.dtypes.split(","):
            clf = load_model(name, dtype)
            fl = flops_per_image(clf)
            label = name if dtype == "float32" else f"{name} ({dtype})"
            for n_dev in counts:
                for slots in [int(s) for s in args.slots.split(",")]:
                    r = {"model": label, "dtype": dtype} | measure(
                        clf, make_mesh(n_dev), slots, args.population, args.generations,
                        args.repeats)
                    r["gflop_per_image"] = fl / 1e9
                    if args.memory:  # two more compiles per row
                        r["forward_mb"] = forward_memory(clf, r["batch"] // n_dev)[
                            "total_mb"]
                        r["attack_mb"] = attack_memory(clf, make_mesh(n_dev), slots,
                                                       args.population)
                    r["peak_rss_mb"] = peak_rss_mb()
                    r["attack_tflop_s"] = fl * r["attack_q_s"] / 1e12
                    if peaks.get(dtype):
                        r["mfu"] = r["attack_tflop_s"] / (peaks[dtype] * n_dev)
                    rows.append(r)
                    print(json.dumps(r), flush=True)
    meta = dict(population=args.population, generations=args.generations, machine=machine(),
                jax=jax.__version__)
    table = markdown(rows) + "\n\n| model | devices | slots | forward MB/device | attack MB/device "
    table += "| peak RSS MB |\n|---|---|---|---|---|---|\n"
    for r in rows:
        fmt = lambda v: "n/a" if v is None else f"{v:,.0f}"
        table += (f"| {r['model']} | {r['devices']} | {r['slots']} | "
                  f"{fmt(r.get('forward_mb'))} | {fmt(r.get('attack_mb'))} | "
                  f"{fmt(r['peak_rss_mb'])} |\n")
    table += "\n\n| model | GFLOP/image | attack TFLOP/s (best) |\n|---|---|---|\n"
    for name in dict.fromkeys(r["model"] for r in rows):
        best = max((r for r in rows if r["model"] == name), key=lambda r: r["attack_q_s"])
        table += (f"| {name} | {best['gflop_per_image']:.3f} | {best['attack_tflop_s']:.3f}"
                  + (f" (MFU {best['mfu']:.1%})" if "mfu" in best else "") + " |\n")
    write_outputs(args.out, {"meta": meta, "rows": rows}, f"{meta}\n\n{table}", indent=1)


def memory_table(args):
    """Forward memory per image at several batch sizes (compile only, nothing runs)."""
    import jax

    rows = []
    for name in args.models.split(","):
        clf = load_model(name, "float32")
        h, w, c = clf.input_shape or (32, 32, 3)
        prev = None
        for b in [int(v) for v in args.memory_batches.split(",")]:
            r = {"model": name, "image_bytes": h * w * c} | forward_memory(clf, b)
            r["total_mb_per_image"] = r["total_mb"] / b
            if prev is not None:  # the marginal cost of one more image
                r["marginal_mb_per_image"] = (r["total_mb"] - prev["total_mb"]) / (
                    b - prev["batch"])
            prev = r
            rows.append(r)
            print(json.dumps(r), flush=True)
    table = ("| model | batch | temp MB | args MB | out MB | total MB | MB/image | "
             "marginal MB/image |\n|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        marg = f"{r['marginal_mb_per_image']:.2f}" if "marginal_mb_per_image" in r else ""
        table += (f"| {r['model']} | {r['batch']} | {r['temp_mb']:,.1f} | "
                  f"{r['argument_mb']:,.1f} | {r['output_mb']:,.2f} | {r['total_mb']:,.1f} | "
                  f"{r['total_mb_per_image']:.2f} | {marg} |\n")
    meta = dict(machine=machine(), jax=jax.__version__, note="XLA memory_analysis of "
                "jit(clf.probs), float32, one device; compile only")
    write_outputs(args.out, {"meta": meta, "rows": rows}, f"{meta}\n\n{table}", indent=1)
    return rows


if __name__ == "__main__":
    main()
