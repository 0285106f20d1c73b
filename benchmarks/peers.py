"""jaxattack vs the peers: torchattacks ``OnePixel``, ART ``PixelAttack`` and plain scipy DE.

    pip install torch==2.13.0   # a CPU wheel; then the peers:
    pip install --no-deps torchattacks && pip install adversarial-robustness-toolbox packaging
    python benchmarks/peers.py                        # 8 images, tiny, the paper budget
    python benchmarks/peers.py --images 4 --methods jaxattack,scipy

The same images (correctly classified sample images, round-robin over the classes), the
same weights (the zoo's ``tiny``, ported to PyTorch by ``torch_port.py`` and checked
logit for logit) and the same budget (1 pixel, population 400, at most 100 generations,
untargeted, stop on success) through every method, in one process on one machine.

jaxattack attacks all images in one batched call, so its per-image time is that call's
wall time divided by the number of images; it is called three times: the first call
includes compilation, the second (before the peers) and third (after them) are steady
state and their mean is the reference for the ratios. The peers attack one image at a
time (their only mode); their per-image time is the mean over images. Queries of the
peers are counted by wrapping the PyTorch model's forward (images passed through);
jaxattack's are what it charges, ``population * (generations + 1)`` per image. Every
final adversarial image is also re-classified as uint8 by the JAX model ("uint8 check").

Runtime: images the attack cannot fool spend the whole budget (40,400 queries) in every
method; with the defaults that is about 35 minutes on 2 shared CPU cores, most of it in
ART (~165 s per unfooled image). ``--images 4`` about halves it, but with fewer images
jaxattack's batch is less full, so its per-image time (and the ratios) are less
favourable to it.

Writes ``<out-dir>/<name>.json`` and ``<out-dir>/<name>.md``.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from common import HERE, best_of, parser, write_outputs

METHODS = ("jaxattack", "scipy", "torchattacks", "art")

DIFFERENCES = {
    "jaxattack": (
        "DE/rand/1, F=0.5, no crossover (the paper); coordinates uniform, colours "
        "N(128, 127) clipped; integer pixels (uint8 images); stops a problem after the "
        "generation in which any candidate fooled the model; all images in one batched "
        "call (continuous batching); queries charged = population x (generations + 1)."),
    "scipy": (
        "scipy.optimize.differential_evolution as close to the paper as its API allows: "
        "strategy='rand1bin', mutation=0.5, recombination=1 (= no crossover), init = an "
        "array drawn like jaxattack's (uniform coordinates, N(128,127) colours), "
        "polish=False, tol=0/atol=-1 (no convergence stop), vectorized=True (one forward "
        "of the whole population per generation, through the PyTorch port). Integer pixels "
        "(genes floored, as jaxattack). Early stop: a callback after each generation stops "
        "once any evaluated candidate fooled the model (no extra query); scipy has no "
        "callback after the initial population, so a success there costs one more "
        "generation."),
    "torchattacks": (
        "torchattacks.OnePixel(pixels=1, steps=100, popsize=400, inf_batch=400): "
        "population = int(popsize / 5) * 5 = 400. Its own copy of scipy's DE with "
        "strategy 'best1bin', dithered mutation U(0.5, 1), recombination=1, uniform "
        "random init; colours are continuous in [0, 1] (not uint8 levels; the uint8 "
        "check rounds them); the callback re-queries the best candidate after each "
        "generation (1 extra query/generation) and stops on misclassification; it "
        "perturbs candidates in a Python loop. Inputs [0, 1] NCHW, model in eval mode "
        "(checked after each attack)."),
    "art": (
        "art PixelAttack(th=1, es=1, max_iter=100, targeted=False) on a PyTorchClassifier "
        "with clip_values=(0, 255) (the model gets the 0..255 images, so pixels are the "
        "same uint8 levels) and a softmax appended (ART minimises predict()[:, label], "
        "which must be a probability). th is the number of pixels (th=None would "
        "binary-search it), es=1 selects DE (es=0: CMA-ES). Its own copy of scipy's DE: "
        "'best1bin', dithered mutation U(0.5, 1), recombination=1, Latin-hypercube init; "
        "population fixed by ART to max(1, 400 // 5) * 5 = 400; colours truncated to "
        "int (255 practically unreachable); predict() in batches of 128 (4 forward calls "
        "per generation); the callback re-queries the best candidate after each "
        "generation and stops on misclassification; one more query at the end."),
}


def parse(argv):
    ap = parser(
        __doc__, data=("sample", "images: the built-in sample, or a source data.load reads "
                       "(a CIFAR-10 JPEG folder: ../shared/datasets/cifar10-jpeg)"),
        images=8, image_ids=(None, "comma list of indices into --data to attack instead "
                             "(those classified correctly are kept)"),
        pixels=1, population=400, generations=100, seed=0,
        methods=(",".join(METHODS), f"comma list out of {','.join(METHODS)}"),
        port_images=(256, "sample images for the port check"),
        torch_threads=(os.cpu_count(), "PyTorch threads (default: all cores). On cores "
                       "shared with other jobs use 1: 2 threads on 2 busy cores slowed "
                       "torch ~2.5x here"),
        out_dir=str(HERE / "results"), name=("peers_cpu", "output file stem"))
    ap.add_argument("--model", default="tiny", choices=["tiny"], help="zoo model (ported)")
    ap.add_argument("--weights", default="auto", choices=["auto", "shipped", "random"],
                    help="auto: the shipped weights if present, else a random init")
    ap.add_argument("--forward", default="auto", choices=["auto", "dense", "sparse"],
                    help="jaxattack's forward pass (auto/sparse: also timed dense)")
    ap.add_argument("--cpu-devices", type=int, default=None,
                    help="split the CPU into this many JAX devices (default: JAX's, 1)")
    args = ap.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = sorted(set(args.methods) - set(METHODS))
    if bad:
        ap.error(f"unknown methods {bad}; choose from {METHODS}")
    if args.pixels != 1 and "art" in args.methods:
        print("note: ART's th is the pixel count; using th=pixels", file=sys.stderr)
    return args


def load_avg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def pick_images(pred, labels, n):
    """The first ``n`` correctly classified images, round-robin over the classes."""
    per_class = [list(np.flatnonzero((labels == c) & (pred == c))) for c in np.unique(labels)]
    out = []
    while len(out) < n and any(per_class):
        for idx in per_class:
            if idx and len(out) < n:
                out.append(int(idx.pop(0)))
    return np.asarray(sorted(out), np.int64)


def l0(adv, clean):
    return int((np.asarray(adv) != np.asarray(clean)).any(-1).sum())


def raw_forward(clf, net, batch, engine_batch, jax, torch, torch_port, repeats=5):
    """µs per image of the model alone (logits, no attack; best of ``repeats``): JAX and
    PyTorch on ``batch`` images, and JAX on ``engine_batch`` (the engine's forward batch:
    slots x population). Context for the per-query times."""
    rng = np.random.default_rng(0)

    def best(fn):
        return best_of({"fn": fn}, repeats)["fn"]

    fwd = jax.jit(clf.apply_fn)
    out = {"batch": batch, "engine_batch": engine_batch}
    for key, b in (("jax_us_per_image", batch), ("jax_us_per_image_engine_batch",
                                                 engine_batch)):
        xj = jax.numpy.asarray(rng.integers(0, 256, (b, 32, 32, 3), dtype=np.uint8))
        out[key] = 1e6 * best(lambda xj=xj: fwd(clf.params, xj)) / b
    xt = torch_port.to_nchw_float(rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8))
    with torch.no_grad():
        out["torch_us_per_image"] = 1e6 * best(lambda: net(xt)) / batch
    out["load_avg"] = load_avg()
    return out


def main(argv=None):  # noqa: C901 - one linear script
    args = parse(argv)
    import jax

    if args.cpu_devices:
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)
    import torch
    import torch_port
    from torch import nn

    import jaxattack as ja
    from jaxattack import data, models
    from jaxattack.classifier import predict
    from jaxattack.strategies import codec

    torch.set_num_threads(args.torch_threads)
    versions = {"python": platform.python_version(), "jax": jax.__version__,
                "torch": torch.__version__, "numpy": np.__version__}
    for mod in ("jaxlib", "flax", "scipy", "torchattacks", "art"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None

    # -- model, weights, images -------------------------------------------------------
    info = models.available()[args.model]
    use_shipped = args.weights == "shipped" or (args.weights == "auto"
                                                and info["weights_shipped"])
    clf = models.load(args.model) if use_shipped else models.load(args.model, weights=None)
    weights = "shipped" if use_shipped else "random init (seed 0): NOT the trained weights"
    print(f"model {args.model}, weights: {weights}", flush=True)
    x_all, y_all, _ = data.load(args.data)
    y_all = np.asarray(y_all, np.int64)
    pred_all = predict(clf, x_all).argmax(-1)

    net = torch_port.port_tiny(clf.params)  # float NCHW 0..255
    net01 = torch_port.port_tiny(clf.params, scale=255.0)  # float NCHW in [0, 1]
    xp = x_all[: args.port_images]
    lj = np.asarray(jax.jit(clf.apply_fn)(clf.params, xp))
    with torch.no_grad():
        lt = net(torch_port.to_nchw_float(xp)).numpy()
        lt01 = net01(torch_port.to_nchw_float(xp, 255.0)).numpy()
    port = {"images": len(xp), "max_abs_logit_diff": float(np.abs(lj - lt).max()),
            "max_abs_logit_diff_01_input": float(np.abs(lj - lt01).max()),
            "argmax_identical": bool((lj.argmax(-1) == lt.argmax(-1)).all()
                                     and (lj.argmax(-1) == lt01.argmax(-1)).all())}
    print(f"port check on {len(xp)} images: max |logit diff| {port['max_abs_logit_diff']:.2e} "
          f"(0..255 input), {port['max_abs_logit_diff_01_input']:.2e} ([0, 1] input); "
          f"argmax identical: {port['argmax_identical']}", flush=True)
    if not (port["max_abs_logit_diff"] < 1e-4 and port["argmax_identical"]):
        raise SystemExit("the PyTorch port does not match the Flax model")

    ids = pick_images(pred_all, y_all, args.images)
    if args.image_ids:
        asked = np.asarray([int(i) for i in args.image_ids.split(",")], np.int64)
        ids = asked[pred_all[asked] == y_all[asked]]
        if len(ids) < len(asked):
            print(f"--image-ids: {len(asked) - len(ids)} of {len(asked)} misclassified, "
                  f"left out: {sorted(set(asked.tolist()) - set(ids.tolist()))}", flush=True)
        if not len(ids):
            raise SystemExit("--image-ids: none of them is classified correctly")
    x, y = x_all[ids], y_all[ids]
    n = len(ids)

    from jaxattack.engine import default_slots
    from jaxattack.engine.sharding import make_mesh

    slots = default_slots(args.population, n, make_mesh())
    raw = raw_forward(clf, net, args.population, slots * args.population, jax, torch,
                      torch_port)
    print(f"raw forward: jax {raw['jax_us_per_image']:.0f} µs/image at {args.population} "
          f"images per call, {raw['jax_us_per_image_engine_batch']:.0f} at "
          f"{raw['engine_batch']} (the engine's batch); torch "
          f"{raw['torch_us_per_image']:.0f} µs/image at {args.population}", flush=True)
    print(f"images {ids.tolist()} (labels {y.tolist()})", flush=True)

    def jax_pred(images):
        return predict(clf, np.asarray(images, np.uint8)).argmax(-1)

    def record(method, i, seconds, queries, calls, adv_uint8, reported):
        after = int(jax_pred(adv_uint8[None])[0])
        return {"image_id": int(ids[i]), "label": int(y[i]), "seconds": seconds,
                "queries": int(queries), "forward_calls": int(calls),
                "success_reported": bool(reported), "success_uint8": bool(after != y[i]),
                "predicted_after_uint8": after, "pixels_changed": l0(adv_uint8, x[i])}

    class Counted(nn.Module):
        """Counts the images (queries) and calls passing through ``net``'s forward."""

        def __init__(self, net):
            super().__init__()
            self.net, self.images, self.calls = net, 0, 0

        def forward(self, inp):
            self.images += int(inp.shape[0])
            self.calls += 1
            return self.net(inp)

        def reset(self):
            self.images = self.calls = 0

    budget = {"pixels": args.pixels, "population": args.population,
              "max_generations": args.generations, "mode": "untargeted",
              "early_stop": "on success", "max_queries": args.population *
              (args.generations + 1)}
    cfg = ja.AttackConfig(pixels=args.pixels, population=args.population,
                          generations=args.generations, seed=args.seed, forward=args.forward)
    results, extra = {}, {}

    # -- jaxattack ------------------------------------------------------------------------
    def run_jax(tag, cfg=cfg):
        la = load_avg()
        t0 = time.perf_counter()
        res = ja.attack(clf, x, y, cfg, image_ids=ids, progress=False)
        dt = time.perf_counter() - t0
        print(f"jaxattack {tag}: {dt:.2f} s for {n} images ({dt / n:.3f} s/image), "
              f"{res.success.mean():.0%} fooled, load {la}", flush=True)
        return res, dt, la

    if "jaxattack" in args.methods:
        _, first, la_first = run_jax("call 1 (compiles)")
        res, second, la_second = run_jax("call 2 (steady)")
        extra["jax"] = {"first_call_seconds": first, "steady_seconds": [second],
                        "load_avg": [la_first, la_second], "res": res,
                        "forward": cfg.search(clf, x.shape[1:]).evaluate.forward}
        if args.forward != "dense":  # the dense forward side by side, for the ratio
            dense_cfg = cfg.replace(forward="dense")
            run_jax("dense forward, call 1 (compiles)", dense_cfg)
            res_d, dense_s, _ = run_jax("dense forward, call 2 (steady)", dense_cfg)
            extra["jax"]["dense_steady_seconds"] = dense_s
            extra["jax"]["dense_identical"] = bool(
                (res_d.pixels == res.pixels).all() and (res_d.success == res.success).all())

    # -- peers ---------------------------------------------------------------------------
    def peer_loop(method, attack_one, counted):
        rows = []
        la = load_avg()
        for i in range(n):
            np.random.seed(args.seed + int(ids[i]))  # torchattacks/ART draw from np.random
            torch.manual_seed(args.seed + int(ids[i]))
            counted.reset()
            t0 = time.perf_counter()
            adv, reported = attack_one(i)
            dt = time.perf_counter() - t0
            rows.append(record(method, i, dt, counted.images, counted.calls, adv, reported))
            r = rows[-1]
            print(f"  {method} image {r['image_id']}: {dt:.2f} s, {r['queries']} queries, "
                  f"fooled {r['success_reported']} (uint8 check {r['success_uint8']})",
                  flush=True)
        return rows, [la, load_avg()]

    loads = {}
    if "scipy" in args.methods:
        from scipy.optimize import differential_evolution

        counted = Counted(net).eval()
        h, w, c = x.shape[1:]

        def probs_of(images_uint8):
            with torch.no_grad():
                logits = counted(torch_port.to_nchw_float(images_uint8))
            return torch.softmax(logits, -1).numpy()

        def scipy_one(i):
            rng = np.random.default_rng([args.seed, int(ids[i])])
            k, pop = args.pixels, args.population
            xy = rng.uniform(size=(pop, k, 2)) * np.array([w, h])
            colour = np.clip(128.0 + 127.0 * rng.normal(size=(pop, k, c)), 0.0, 255.0)
            init = np.concatenate([xy, colour], -1).reshape(pop, -1)
            lo, hi = codec.bounds(k, h, w, c)
            state = {"found": None, "genes": None}

            def fitness(pop_t):  # (D, S)
                genes = pop_t.T
                adv = codec.paint_numpy(np.repeat(x[i][None], len(genes), 0),
                                        codec.decode(genes, k, h, w, c))
                p = probs_of(adv)
                fooled = p.argmax(-1) != y[i]
                if fooled.any() and state["found"] is None:
                    state["found"] = genes[int(np.argmax(fooled))].copy()
                return p[:, y[i]]

            def callback(intermediate_result):
                return state["found"] is not None

            out = differential_evolution(
                fitness, list(zip(lo.tolist(), hi.tolist(), strict=True)), strategy="rand1bin",
                maxiter=args.generations, init=init, mutation=0.5, recombination=1.0,
                tol=0, atol=-1, polish=False, vectorized=True, updating="deferred",
                callback=callback, rng=rng)
            genes = state["found"] if state["found"] is not None else out.x
            adv = codec.paint_numpy(x[i][None], codec.decode(genes[None], k, h, w, c))[0]
            return adv, state["found"] is not None

        print("scipy differential_evolution (reference):", flush=True)
        results["scipy"], loads["scipy"] = peer_loop("scipy", scipy_one, counted)

    if "torchattacks" in args.methods:
        import torchattacks

        counted = Counted(net01).eval()
        atk = torchattacks.OnePixel(counted, pixels=args.pixels, steps=args.generations,
                                    popsize=args.population, inf_batch=args.population)
        x01 = torch_port.to_nchw_float(x, 255.0)
        yt = torch.from_numpy(y)
        mode_ok = []

        def ta_one(i):
            adv = atk(x01[i:i + 1], yt[i:i + 1])
            mode_ok.append(not counted.training and not net01.training)
            counted.eval()
            with torch.no_grad():
                reported = int(net01(adv).argmax(-1)[0]) != y[i]
            adv_u8 = np.clip(np.rint(adv[0].numpy().transpose(1, 2, 0) * 255.0), 0, 255)
            return adv_u8.astype(np.uint8), reported

        print("torchattacks OnePixel:", flush=True)
        results["torchattacks"], loads["torchattacks"] = peer_loop("torchattacks", ta_one,
                                                                   counted)
        extra["torchattacks_eval_mode_kept"] = bool(all(mode_ok))

    if "art" in args.methods:
        from art.attacks.evasion import PixelAttack
        from art.estimators.classification import PyTorchClassifier

        counted = Counted(net).eval()
        est = PyTorchClassifier(model=nn.Sequential(counted, nn.Softmax(dim=-1)),
                                loss=nn.CrossEntropyLoss(), input_shape=(3, 32, 32),
                                nb_classes=clf.num_classes, clip_values=(0.0, 255.0),
                                channels_first=True, device_type="cpu")
        atk_art = PixelAttack(est, th=args.pixels, es=1, max_iter=args.generations,
                              targeted=False, verbose=False)
        x255 = torch_port.to_nchw_float(x).numpy()

        def art_one(i):
            with warnings.catch_warnings():  # its DE divides by a zero convergence measure
                warnings.filterwarnings("ignore", "divide by zero", RuntimeWarning)
                adv = atk_art.generate(x255[i:i + 1], y=y[i:i + 1])
            with torch.no_grad():
                reported = int(net(torch.from_numpy(adv)).argmax(-1)[0]) != y[i]
            adv_u8 = np.clip(np.rint(adv[0].transpose(1, 2, 0)), 0, 255).astype(np.uint8)
            return adv_u8, reported

        print("ART PixelAttack:", flush=True)
        results["art"], loads["art"] = peer_loop("art", art_one, counted)

    if "jaxattack" in args.methods:
        res3, third, la_third = run_jax("call 3 (steady, after the peers)")
        extra["jax"]["steady_seconds"].append(third)
        extra["jax"]["load_avg"].append(la_third)
        res = extra["jax"]["res"]
        rows = []
        for i in range(n):
            rows.append({"image_id": int(ids[i]), "label": int(y[i]), "seconds": None,
                         "queries": int(res.queries[i]), "forward_calls": None,
                         "success_reported": bool(res.search_success[i]),
                         "success_uint8": bool(res.success[i]),
                         "predicted_after_uint8": int(res.predicted_after[i]),
                         "pixels_changed": l0(res.adversarial[i], x[i])})
        results = {"jaxattack": rows, **results}

    # -- summary -------------------------------------------------------------------------
    summary = {}
    jax_per_image = None
    if "jaxattack" in args.methods:
        steady = float(np.mean(extra["jax"]["steady_seconds"]))
        jax_per_image = steady / n
    for method, rows in results.items():
        q = np.array([r["queries"] for r in rows], float)
        if method == "jaxattack":
            per_image = jax_per_image
            total = float(np.mean(extra["jax"]["steady_seconds"]))
        else:
            per_image = float(np.mean([r["seconds"] for r in rows]))
            total = float(np.sum([r["seconds"] for r in rows]))
        summary[method] = {
            "per_image_seconds": per_image,
            "total_seconds": total,
            "ratio_to_jaxattack": per_image / jax_per_image if jax_per_image else None,
            "queries_mean": float(q.mean()),
            "us_per_query": 1e6 * total / q.sum(),
            "success_rate": float(np.mean([r["success_reported"] for r in rows])),
            "success_rate_uint8": float(np.mean([r["success_uint8"] for r in rows])),
            "max_pixels_changed": int(max(r["pixels_changed"] for r in rows)),
            "load_avg": extra["jax"]["load_avg"] if method == "jaxattack" else loads[method],
        }
    peers = [m for m in summary if m != "jaxattack"]
    fastest = min(peers, key=lambda m: summary[m]["per_image_seconds"]) if peers else None
    libs = [m for m in peers if m != "scipy"]
    fastest_lib = min(libs, key=lambda m: summary[m]["per_image_seconds"]) if libs else None

    out = {
        "benchmark": "peers",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/peers.py " + " ".join(argv if argv is not None
                                                           else sys.argv[1:]),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "jax_devices": [str(d) for d in jax.devices()],
                    "load_avg_start_end": [extra.get("jax", {}).get("load_avg", [None])[0],
                                           load_avg()],
                    "versions": versions},
        "model": {"name": args.model, "weights": weights,
                  "sha256": models.read_registry().get(args.model, {}).get("sha256")
                  if use_shipped else None,
                  "sample_accuracy": float((pred_all == y_all).mean())},
        "budget": budget,
        "data": args.data,
        "image_ids": ids.tolist(),
        "port": port,
        "raw_forward": raw,
        "jaxattack": ({"first_call_seconds": extra["jax"]["first_call_seconds"],
                       "steady_call_seconds": extra["jax"]["steady_seconds"],
                       "forward": extra["jax"]["forward"],
                       "dense_steady_call_seconds": extra["jax"].get("dense_steady_seconds"),
                       "dense_identical": extra["jax"].get("dense_identical"),
                       "note": "one batched call for all images; per-image time = mean "
                               "steady call / images; call 1 includes compilation"}
                      if "jax" in extra else None),
        "torchattacks_eval_mode_kept": extra.get("torchattacks_eval_mode_kept"),
        "fastest_peer": fastest,
        "fastest_library_peer": fastest_lib,
        "target_3x_met": (summary[fastest]["ratio_to_jaxattack"] >= 3.0
                          if fastest and jax_per_image else None),
        "summary": summary,
        "differences": {m: DIFFERENCES[m] for m in summary},
        "per_image": results,
    }
    write_outputs(Path(args.out_dir) / args.name, out, markdown(out), indent=1)
    return out


def markdown(out) -> str:
    m, b, s, r_ = out["machine"], out["budget"], out["summary"], out["raw_forward"]
    v = m["versions"]
    lines = [
        f"# jaxattack vs peers ({out['model']['name']}, {len(out['image_ids'])} images)", "",
        f"- machine: `{m['platform']}`, {m['cpu_count']} CPUs (torch threads "
        f"{m['torch_threads']}), JAX devices {', '.join(m['jax_devices'])}; load average "
        f"(1/5/15 min) at start / end {m['load_avg_start_end'][0]} / "
        f"{m['load_avg_start_end'][1]} (a start load near the CPU count means other work "
        f"shared the cores; compare the ratios)",
        f"- versions: jax {v['jax']}, jaxlib {v['jaxlib']}, flax {v['flax']}, torch "
        f"{v['torch']}, torchattacks {v['torchattacks']}, ART {v['art']}, scipy {v['scipy']}, "
        f"numpy {v['numpy']}",
        f"- model: `{out['model']['name']}`, weights {out['model']['weights']}"
        + (f" (sha256 {out['model']['sha256'][:12]}…)" if out["model"]["sha256"] else ""),
        f"- budget: {b['pixels']} pixel, population {b['population']}, at most "
        f"{b['max_generations']} generations ({b['max_queries']:,} queries), untargeted, "
        f"stop on success; images {out['image_ids']} of {out.get('data', 'sample')} "
        f"(classified correctly)",
        f"- port check: max |logit difference| {out['port']['max_abs_logit_diff']:.1e} on "
        f"{out['port']['images']} sample images, argmax identical: "
        f"{out['port']['argmax_identical']}",
        f"- raw forward of the model alone (best of 5): JAX {r_['jax_us_per_image']:.0f} "
        f"µs/image at {r_['batch']} images per call and "
        f"{r_.get('jax_us_per_image_engine_batch', float('nan')):.0f} at "
        f"{r_.get('engine_batch', '?')} (jaxattack's forward batch); PyTorch "
        f"{r_['torch_us_per_image']:.0f} µs/image at "
        f"{r_['batch']}",
        "",
        "| method | per image (s) | × jaxattack | queries (mean) | µs / query | success "
        "| success (uint8 check) | load avg during |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in s.items():
        ratio = "1.00" if name == "jaxattack" else (
            f"{r['ratio_to_jaxattack']:.2f}" if r["ratio_to_jaxattack"] else "-")
        la = r["load_avg"][0][0] if r["load_avg"] and r["load_avg"][0] else "-"
        lines.append(f"| {name} | {r['per_image_seconds']:.3f} | {ratio} | "
                     f"{r['queries_mean']:,.0f} | {r['us_per_query']:.1f} | "
                     f"{r['success_rate']:.0%} | {r['success_rate_uint8']:.0%} | {la} |")
    lines.append("")
    j = out["jaxattack"]
    if j:
        lines.append(
            f"jaxattack attacks all images in one batched call; per image = steady call / "
            f"images. Call 1 (with compilation): {j['first_call_seconds']:.2f} s; steady "
            f"calls (before / after the peers): "
            f"{' / '.join(f'{t:.2f}' for t in j['steady_call_seconds'])} s. The peers attack "
            f"one image at a time; per image = mean over images. jaxattack's forward pass: "
            f"{j['forward']}.")
        if j.get("dense_steady_call_seconds"):
            lines.append("")
            lines.append(
                f"The same call with the dense forward: {j['dense_steady_call_seconds']:.2f} s "
                f"({j['dense_steady_call_seconds'] / np.mean(j['steady_call_seconds']):.2f}× "
                f"the time; results identical: {j['dense_identical']}).")
        lines.append("")
    if out["fastest_peer"] and out["target_3x_met"] is not None:
        f = out["fastest_peer"]
        lines.append(f"Fastest peer: **{f}**, {s[f]['ratio_to_jaxattack']:.2f}× jaxattack's "
                     f"time per image (target: ≥ 3×, "
                     f"{'met' if out['target_3x_met'] else 'NOT met'}).")
        fl = out.get("fastest_library_peer")
        if fl and fl != f:
            lines[-1] += (f" Fastest library peer (torchattacks/ART): **{fl}**, "
                          f"{s[fl]['ratio_to_jaxattack']:.2f}×.")
        lines.append("")
    lines.append("Queries: peers counted at the model's forward; jaxattack as charged "
                 "(population × (generations + 1)). The uint8 check re-classifies the final "
                 "image, rounded to uint8, with the JAX model.")
    lines += ["", "## What differs", ""]
    lines += [f"- **{k}**: {t}" for k, t in out["differences"].items()]
    if out.get("torchattacks_eval_mode_kept") is not None:
        lines.append(f"- torchattacks left the model in eval mode after every attack: "
                     f"{out['torchattacks_eval_mode_kept']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
