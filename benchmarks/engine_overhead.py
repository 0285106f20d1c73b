"""Engine overhead: raw forward throughput vs attack throughput at the same batch.

    python benchmarks/engine_overhead.py --model tiny --slots 4,8,16 --devices 1,2

For each (devices, slots) the forward batch is ``slots * population`` images. "raw" is
the jitted classifier alone on such a batch (sharded the same way); "attack" is the
engine's jitted generation loop (DE, painting, forward, selection) with early stop off,
so every slot runs every generation. Writes JSON (and prints a markdown table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny", help="zoo model name (random weights are fine)")
    ap.add_argument("--population", type=int, default=400)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--slots", default="4,8,16", help="problems per batch (comma list)")
    ap.add_argument("--devices", default="1,2", help="virtual CPU device counts to try")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="write the JSON here")
    args = ap.parse_args(argv)
    counts = [int(d) for d in args.devices.split(",")]

    import jax

    jax.config.update("jax_num_cpu_devices", max(counts))  # only affects the CPU backend
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxattack import engine, models
    from jaxattack.sharding import make_mesh

    clf = models.load(args.model, weights=None)
    rows = []
    for n_dev in counts:
        mesh = make_mesh(n_dev)
        for slots in [int(s) for s in args.slots.split(",")]:
            slots = -(-slots // n_dev) * n_dev
            batch = slots * args.population
            x = jax.device_put(np.random.default_rng(0).integers(0, 256, (batch, 32, 32, 3),
                                                                   dtype=np.uint8),
                               NamedSharding(mesh, P(engine.AXIS)))
            params = jax.device_put(clf.params, NamedSharding(mesh, P()))
            fwd = jax.jit(clf.probs)
            fwd(params, x).block_until_ready()
            t = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                fwd(params, x).block_until_ready()
                t.append(time.perf_counter() - t0)
            raw = batch / min(t)

            spec = engine.SearchSpec(1, 32, 32, 3, args.population, args.generations,
                                     early_stop="none")
            eng = engine.Engine(spec, clf, mesh, slots)
            keys = np.asarray(jax.random.split(jax.random.PRNGKey(0), slots))

            def run(eng=eng, spec=spec, slots=slots, keys=keys, x=x):
                new = engine.empty_slots(spec, slots)
                new.key[:], new.image[:] = keys, np.asarray(x[:slots])
                new.label[:], new.active[:] = 0, True
                eng.load(np.ones(slots, bool), new)
                t0 = time.perf_counter()
                eng.evolve(slots)
                return time.perf_counter() - t0

            compile_s = run()  # first call: compile + run
            best = min(run() for _ in range(args.repeats))
            q = batch * (args.generations + 1) / best
            rows.append(dict(devices=n_dev, slots=slots, batch=batch, raw_img_s=raw,
                             attack_q_s=q, ratio=q / raw, compile_s=compile_s - best))
            print(json.dumps(rows[-1]), flush=True)

    meta = dict(model=args.model, population=args.population, generations=args.generations,
                machine=f"{platform.machine()} {os.cpu_count()} cores, {jax.default_backend()}",
                jax=jax.__version__, python=sys.version.split()[0])
    print(f"\n{meta}\n\n| devices | slots | batch | raw img/s | attack q/s | ratio | compile s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['devices']} | {r['slots']} | {r['batch']} | {r['raw_img_s']:,.0f} | "
              f"{r['attack_q_s']:,.0f} | {r['ratio']:.2f} | {r['compile_s']:.1f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    del jnp


if __name__ == "__main__":
    main()
