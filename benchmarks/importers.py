"""Speed of each import route vs the equivalent Flax model, on the same CNN.

    KERAS_BACKEND=jax python benchmarks/importers.py --cnns fixture,tiny --devices 2 \\
        --out benchmarks/results/importers_cpu.json

One PyTorch CNN (tests/fixtures/make_fixtures.py: ``fixture`` is the committed 24k-
parameter test CNN with its trained weights, ``tiny`` the zoo's tiny widths with random
weights) is built with the same weights as a Flax NNX module (the baseline), a Keras 3
model, a TensorFlow SavedModel and an ONNX file (``torch.onnx.export(..., dynamo=True)``)
and imported through every route:

* ``flax``: ``models.from_module`` on the Flax twin;
* ``keras``: ``models.from_keras`` (``stateless_call``);
* ``saved_model``: ``models.from_saved_model`` (tf2jax);
* ``onnx``: ``models.from_onnx`` (jaxattack's interpreter, channels-last);
* ``onnx-nchw``: the same interpreter kept in the ONNX layout (``nhwc=False``);
* ``onnx-jaxonnxruntime``: ``models.from_onnx(backend="jaxonnxruntime")``;
* ``torch``: ``models.from_torch`` (``jax.pure_callback`` into PyTorch).

"forward" is ``jit(shard_map(clf.probs))`` on a batch of real CIFAR-10 images split over
``--devices`` (virtual on CPU), the best of ``--repeats`` calls taken round-robin over
the routes so that they share the machine's noise; "attack" is the engine's generation
loop (``engine_overhead.measure``, early stop off). Ratios are against ``flax`` in the
same run. ``max |dp|`` is the largest probability difference to the Flax twin.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

from common import best_of, cpu_model, fixtures, machine, parser, write_outputs

os.environ.setdefault("KERAS_BACKEND", "jax")

ROUTES = ("flax", "keras", "saved_model", "onnx", "onnx-nchw", "onnx-jaxonnxruntime", "torch")


def build_routes(cnn: str, routes, tmp: Path) -> dict:
    """Classifiers of one CNN, one per route (a route whose framework is missing is
    skipped with a note)."""
    import torch

    from jaxattack import models

    mf = fixtures()
    if cnn == "fixture":
        net = mf.load_torch_cnn()
    elif cnn == "tiny":
        torch.manual_seed(0)
        net = mf.torch_cnn(widths=mf.TINY_WIDTHS).eval()
    else:
        raise SystemExit(f"unknown --cnns entry {cnn!r} (fixture, tiny)")
    conv = dict(mean="cifar10", std="cifar10")
    out, skipped = {}, {}
    for route in routes:
        try:
            if route == "flax":
                out[route] = models.from_module(mf.flax_cnn(net), 10)
            elif route == "keras":
                out[route] = models.from_keras(mf.keras_cnn(net), input_scale=255)
            elif route == "saved_model":
                mf.save_tf(mf.tf_cnn(net), tmp / f"{cnn}_savedmodel")
                out[route] = models.from_saved_model(tmp / f"{cnn}_savedmodel")
            elif route.startswith("onnx"):
                path = tmp / f"{cnn}.onnx"
                if not path.exists():
                    mf.export_onnx(net, path, torch.zeros(2, 3, 32, 32))
                kw = {"onnx-nchw": {"nhwc": False},
                      "onnx-jaxonnxruntime": {"backend": "jaxonnxruntime"}}.get(route, {})
                out[route] = models.from_onnx(path, **conv, **kw)
            elif route == "torch":
                out[route] = models.from_torch(net, **conv, input_shape=(32, 32, 3))
        except ImportError as e:
            skipped[route] = str(e)
    return net, out, skipped


def forward_speed(clfs: dict, images, n_dev: int, repeats: int) -> dict:
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = Mesh(np.array(jax.devices()[:n_dev]), ("d",))
    x = jax.device_put(images, NamedSharding(mesh, P("d")))
    fns, probs, compile_s = {}, {}, {}
    for name, clf in clfs.items():
        fn = jax.jit(jax.shard_map(clf.probs, mesh=mesh, in_specs=(P(), P("d")),
                                   out_specs=P("d"), check_vma=False))
        params = jax.device_put(clf.params, NamedSharding(mesh, P()))
        t0 = time.perf_counter()
        probs[name] = np.asarray(fn(params, x))
        compile_s[name] = time.perf_counter() - t0
        fns[name] = lambda fn=fn, params=params: fn(params, x)
    best = best_of(fns, repeats, warmup=False)  # the first calls above warmed them up
    return {name: dict(forward_img_s=len(images) / best[name], first_call_s=compile_s[name],
                       probs=probs[name]) for name in clfs}


def attack_speed(clf, mesh, slots: int, population: int, generations: int,
                 repeats: int) -> float:
    """The engine's generation loop (early stop off) on ``slots`` slots: queries/s.
    As ``engine_overhead.measure`` minus its raw forward, which is a GSPMD ``jit`` (a
    ``pure_callback`` there is pinned to device 0, and XLA:CPU can stall on it)."""
    from engine_overhead import timed_engine

    n_dev = mesh.devices.size
    slots = -(-slots // n_dev) * n_dev
    _, once = timed_engine(clf, mesh, slots, population, generations)
    once()  # compile
    best = min(once() for _ in range(repeats))
    return slots * population * (generations + 1) / best


def main(argv=None):
    ap = parser(__doc__, cnns="fixture,tiny", routes=",".join(ROUTES), batch=400,
                devices=(2, "(virtual on CPU)"), repeats=(9, "forward calls per route"),
                attack_repeats=(5, "attack runs per route"), slots=2, population=200,
                generations=3, out=(None, "write OUT.json and OUT.md (OUT may end in .json)"))
    ap.add_argument("--attack", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the engine's attack loop (slots x population)")
    args = ap.parse_args(argv)

    import jax

    jax.config.update("jax_num_cpu_devices", max(args.devices, 1))
    import numpy as np
    import torch

    from jaxattack import data
    from jaxattack.engine.sharding import make_mesh

    images, _, _ = data.load("sample", limit=args.batch)
    rows = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # from_torch's host warning
        for cnn in args.cnns.split(","):
            net, clfs, skipped = build_routes(cnn, args.routes.split(","), Path(tmp))
            params = sum(p.numel() for p in net.parameters())
            speed = forward_speed(clfs, images, args.devices, args.repeats)
            base = speed.get("flax")
            for name, r in speed.items():
                row = dict(cnn=cnn, params=int(params), route=name, batch=args.batch,
                           devices=args.devices,
                           forward_img_s=r["forward_img_s"], first_call_s=r["first_call_s"])
                if base:
                    row["forward_vs_flax"] = r["forward_img_s"] / base["forward_img_s"]
                    row["max_abs_dp_vs_flax"] = float(np.abs(r["probs"] - base["probs"]).max())
                rows.append(row)
            if args.attack:
                mesh = make_mesh(args.devices)
                att = {name: 0.0 for name in clfs}
                for _ in range(args.attack_repeats):  # round-robin, best of the runs
                    for name, clf in clfs.items():
                        att[name] = max(att[name], attack_speed(
                            clf, mesh, args.slots, args.population, args.generations, 1))
                for row in rows:
                    if row["cnn"] == cnn and row["route"] in att:
                        row["attack_q_s"] = att[row["route"]]
                        if "flax" in att:
                            row["attack_vs_flax"] = att[row["route"]] / att["flax"]
            for name, why in skipped.items():
                rows.append(dict(cnn=cnn, route=name, skipped=why))
            for row in rows:
                if row["cnn"] == cnn:
                    print(json.dumps(row), flush=True)
    meta = dict(machine=machine(), cpu=cpu_model(), jax=jax.__version__, torch=torch.__version__,
                torch_threads=torch.get_num_threads(), batch=args.batch,
                devices=args.devices, repeats=args.repeats,
                attack_repeats=args.attack_repeats, slots=args.slots,
                population=args.population, generations=args.generations,
                wall_s=round(time.perf_counter() - t_start, 1))
    write_outputs(args.out, {"meta": meta, "rows": rows}, f"{meta}\n\n{markdown(rows)}\n",
                  indent=1)


def markdown(rows) -> str:
    out = ["| CNN | route | forward img/s | vs flax | attack q/s | vs flax | max abs dp vs flax |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "skipped" in r:
            out.append(f"| {r['cnn']} | {r['route']} | skipped: {r['skipped'][:60]} | | | | |")
            continue
        att = f"{r['attack_q_s']:,.0f}" if "attack_q_s" in r else ""
        attr = f"{r['attack_vs_flax']:.2f}x" if "attack_vs_flax" in r else ""
        dp = f"{r['max_abs_dp_vs_flax']:.1e}" if "max_abs_dp_vs_flax" in r else ""
        vs = f"{r['forward_vs_flax']:.2f}x" if "forward_vs_flax" in r else ""
        out.append(f"| {r['cnn']} ({r['params']:,} params) | {r['route']} | "
                   f"{r['forward_img_s']:,.0f} | {vs} | {att} | {attr} | {dp} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
