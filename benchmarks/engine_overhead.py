"""Engine overhead: raw forward throughput vs attack throughput at the same batch.

    python benchmarks/engine_overhead.py --model tiny --slots 2,4,8 --devices 1,2

For each (devices, slots) the forward batch is ``slots * population`` images. "raw" is
the jitted classifier alone on such a batch (sharded the same way); "attack" is the
engine's jitted generation loop (DE, painting, forward, selection) with early stop off,
so every slot runs every generation. Prints a markdown table; ``--out`` writes it and the
JSON.
"""

from __future__ import annotations

import json
import sys
import time

from common import best_of, machine, parser, write_outputs


def timed_engine(clf, mesh, slots: int, population: int, generations: int, images=None):
    """The engine (early stop off) on ``slots`` untargeted problems of random images, and
    ``attack()``: load them all and time one ``evolve`` to the end (seconds)."""
    import jax
    import numpy as np

    from jaxattack import AttackConfig, engine
    from jaxattack.pixels import problems

    h, w, c = clf.input_shape or (32, 32, 3)
    if images is None:
        images = np.random.default_rng(0).integers(0, 256, (slots, h, w, c), dtype=np.uint8)
    cfg = AttackConfig(population=population, generations=generations, early_stop="none")
    todo = problems.image_problems(images, np.zeros(len(images), np.int32), np.arange(slots),
                                   np.full(slots, -1, np.int32))
    eng = engine.Engine(cfg.search(clf, (h, w, c)), clf.params, mesh, slots, todo)
    keys = np.asarray(jax.random.split(jax.random.PRNGKey(0), slots))

    def attack():
        eng.load(np.ones(slots, bool), keys, todo)
        t0 = time.perf_counter()
        eng.evolve(slots)
        return time.perf_counter() - t0

    return eng, attack


def measure(clf, mesh, slots: int, population: int, generations: int, repeats: int) -> dict:
    """Raw forward img/s and attack queries/s on the same batch shape."""
    import jax
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxattack.engine.sharding import AXIS

    h, w, c = clf.input_shape or (32, 32, 3)
    n_dev = mesh.devices.size
    slots = -(-slots // n_dev) * n_dev
    batch = slots * population
    images = np.random.default_rng(0).integers(0, 256, (batch, h, w, c), dtype=np.uint8)
    x = jax.device_put(images, NamedSharding(mesh, P(AXIS)))
    params = jax.device_put(clf.params, NamedSharding(mesh, P()))
    fwd = jax.jit(clf.probs)
    raw = batch / best_of({"raw": lambda: fwd(params, x)}, repeats)["raw"]
    _, attack = timed_engine(clf, mesh, slots, population, generations, images)
    first = attack()  # compile + run
    best = min(attack() for _ in range(repeats))
    q = batch * (generations + 1) / best
    return dict(devices=n_dev, slots=slots, batch=batch, raw_img_s=raw, attack_q_s=q,
                ratio=q / raw, compile_s=max(first - best, 0.0))


def markdown(rows: list[dict]) -> str:
    out = ["| model | devices | slots | batch | raw img/s | attack q/s | attack/raw | "
           "compile s |", "|---|---|---|---|---|---|---|---|"]
    out += [f"| {r.get('model', '')} | {r['devices']} | {r['slots']} | {r['batch']} | "
            f"{r['raw_img_s']:,.0f} | {r['attack_q_s']:,.0f} | {r['ratio']:.2f} | "
            f"{r['compile_s']:.1f} |" for r in rows]
    return "\n".join(out)


def main(argv=None):
    args = parser(__doc__, model=("tiny", "zoo model name (random weights are fine)"),
                  population=400, generations=8,
                  slots=("2,4,8", "problems per batch (comma list)"),
                  devices=("1,2", "virtual CPU device counts to try"), repeats=3,
                  out=(None, "write OUT.json and OUT.md")).parse_args(argv)
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
    write_outputs(args.out, {"meta": meta, "rows": rows}, f"{meta}\n\n{markdown(rows)}\n",
                  indent=1)


if __name__ == "__main__":
    main()
