"""Engine overhead: raw forward throughput vs attack throughput at the same batch.

    python benchmarks/engine_overhead.py --model tiny --slots 2,4,8 --devices 1,2

For each (devices, slots) the forward batch is ``slots * population`` images. "raw" is
the jitted classifier alone on such a batch (sharded the same way); "attack" is the
engine's jitted generation loop (DE, painting, forward, selection) with early stop off,
so every slot runs every generation. Prints a markdown table; ``--out`` writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path


def measure(clf, mesh, slots: int, population: int, generations: int, repeats: int) -> dict:
    """Raw forward img/s and attack queries/s on the same batch shape."""
    import jax
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxattack import AttackConfig, engine
    from jaxattack.engine.sharding import AXIS
    from jaxattack.pixels import problems

    h, w, c = clf.input_shape or (32, 32, 3)
    n_dev = mesh.devices.size
    slots = -(-slots // n_dev) * n_dev
    batch = slots * population
    images = np.random.default_rng(0).integers(0, 256, (batch, h, w, c), dtype=np.uint8)
    x = jax.device_put(images, NamedSharding(mesh, P(AXIS)))
    params = jax.device_put(clf.params, NamedSharding(mesh, P()))
    fwd = jax.jit(clf.probs)
    fwd(params, x).block_until_ready()

    def forward():
        t0 = time.perf_counter()
        fwd(params, x).block_until_ready()
        return time.perf_counter() - t0

    raw = batch / min(forward() for _ in range(repeats))
    cfg = AttackConfig(population=population, generations=generations, early_stop="none")
    todo = problems.image_problems(images, np.zeros(batch, np.int32), np.arange(slots),
                                   np.full(slots, -1, np.int32))
    eng = engine.Engine(cfg.search(clf, (h, w, c)), clf.params, mesh, slots, todo)
    keys = np.asarray(jax.random.split(jax.random.PRNGKey(0), slots))

    def attack():
        eng.load(np.ones(slots, bool), keys, todo)
        t0 = time.perf_counter()
        eng.evolve(slots)
        return time.perf_counter() - t0

    first = attack()  # compile + run
    best = min(attack() for _ in range(repeats))
    q = batch * (generations + 1) / best
    return dict(devices=n_dev, slots=slots, batch=batch, raw_img_s=raw, attack_q_s=q,
                ratio=q / raw, compile_s=max(first - best, 0.0))


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def machine() -> str:
    import jax

    dev = jax.devices()[0]
    kind = dev.device_kind if dev.platform != "cpu" else cpu_model()
    return f"{platform.machine()}, {os.cpu_count()} cores, {dev.platform}: {kind}"


def write_outputs(out: str | None, result: dict, text: str) -> None:
    """Print ``text``; with ``out``, write ``OUT.json`` (``result``) and ``OUT.md`` (``text``)."""
    print(text)
    if out:
        Path(out + ".json").write_text(json.dumps(result, indent=2) + "\n")
        Path(out + ".md").write_text(text)


def markdown(rows: list[dict]) -> str:
    out = ["| model | devices | slots | batch | raw img/s | attack q/s | attack/raw | "
           "compile s |", "|---|---|---|---|---|---|---|---|"]
    out += [f"| {r.get('model', '')} | {r['devices']} | {r['slots']} | {r['batch']} | "
            f"{r['raw_img_s']:,.0f} | {r['attack_q_s']:,.0f} | {r['ratio']:.2f} | "
            f"{r['compile_s']:.1f} |" for r in rows]
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny", help="zoo model name (random weights are fine)")
    ap.add_argument("--population", type=int, default=400)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--slots", default="2,4,8", help="problems per batch (comma list)")
    ap.add_argument("--devices", default="1,2", help="virtual CPU device counts to try")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="write the JSON here")
    args = ap.parse_args(argv)
    counts = [int(d) for d in args.devices.split(",")]

    import jax

    jax.config.update("jax_num_cpu_devices", max(counts))  # only affects the CPU backend
    from jaxattack import models
    from jaxattack.engine.sharding import make_mesh

    clf = models.load(args.model, weights=None)
    rows = []
    for n_dev in counts:
        for slots in [int(s) for s in args.slots.split(",")]:
            rows.append({"model": args.model} | measure(
                clf, make_mesh(n_dev), slots, args.population, args.generations, args.repeats))
            print(json.dumps(rows[-1]), flush=True)
    meta = dict(population=args.population, generations=args.generations, machine=machine(),
                jax=jax.__version__, python=sys.version.split()[0])
    print(f"\n{meta}\n\n{markdown(rows)}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
