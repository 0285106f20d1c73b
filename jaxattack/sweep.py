"""Sweeps: a grid of experiments into one resumable results store.

Experiments that share a model and a search shape (pixels, population, budget) share
one compiled engine and one queue, whatever their modes: an untargeted and an
all-targets run of the same model are one stream of problems that keeps every slot
busy until the queue drains. Each finished problem is verified and appended to the
store; re-running the same sweep skips every stored (experiment, image, target).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from jaxattack import __version__, data
from jaxattack.attack import (
    AttackConfig,
    check_inputs,
    clean_probs,
    num_slots,
    problem_keys,
    problems,
    search,
    spec_of,
    verify,
)
from jaxattack.classifier import Classifier
from jaxattack.engine import Engine
from jaxattack.result import AttackResult
from jaxattack.sharding import make_mesh
from jaxattack.store import ResultStore

SAVE_IMAGES = ("none", "success", "all")
FLUSH_PROBLEMS, FLUSH_SECONDS = 256, 15.0


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One cell of a sweep grid."""

    model: str
    data: str = "sample"
    pixels: int = 1
    mode: str = "untargeted"
    population: int = 400
    generations: int = 100
    seed: int = 0
    early_stop: str = "success"
    F: float = 0.5
    crossover: float | None = None
    strategy: str = "de"
    loss: str = "prob"
    split: str = "test"

    def __post_init__(self):
        self.config()  # validate early, with AttackConfig's messages

    def config(self, batch_size: int | None = None) -> AttackConfig:
        return AttackConfig(self.pixels, self.population, self.generations, self.mode,
                            self.seed, self.F, self.crossover, self.early_stop, batch_size,
                            self.strategy, self.loss)

    @property
    def id(self) -> str:
        """Readable and safe as a folder name; the digest covers every field."""
        digest = hashlib.sha1(json.dumps(dataclasses.asdict(self), sort_keys=True).encode())
        model = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(self.model.split(":")[0]).stem)
        return f"{model}_k{self.pixels}_{self.mode}_{self.strategy}_{digest.hexdigest()[:8]}"


def grid(models: Sequence[str], pixels: Sequence[int], modes: Sequence[str],
         strategies: Sequence[str] = ("de",), **common):
    return [Experiment(model=m, pixels=k, mode=mode, strategy=s, **common)
            for m in models for k in pixels for mode in modes for s in strategies]


def default_targets(seed: int, image_ids: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """For ``targeted`` sweeps: a fixed pseudo-random other class per (seed, image id)."""
    mix = (image_ids.astype(np.uint64) * np.uint64(2654435761)
           + np.uint64(seed) * np.uint64(40503)) % np.uint64(k - 1)
    return ((labels + 1 + mix.astype(np.int64)) % k).astype(np.int32)


def load_classifier(name: str) -> Classifier:
    """A zoo name, or ``path/to/file.py:function`` returning a Classifier."""
    from jaxattack import models

    if ":" in name and name.split(":")[0].endswith(".py"):
        path, fn = name.rsplit(":", 1)
        if not Path(path).is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        spec = importlib.util.spec_from_file_location(Path(path).stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        clf = getattr(module, fn)()
        if not isinstance(clf, Classifier):
            raise TypeError(f"{name} returned {type(clf).__name__}, not a jaxattack.Classifier")
        return clf
    return models.load(name)


def result_rows(res: AttackResult, exp: Experiment, pngs: Sequence[str | None]) -> list[dict]:
    """Store rows for a verified result."""
    fixed = dataclasses.asdict(exp) | {"experiment": exp.id, "version": __version__}
    out = []
    for i in range(len(res)):
        out.append(fixed | {
            "image_id": int(res.image_id[i]), "label": int(res.label[i]),
            "target": int(res.target[i]), "adv_class": int(res.adv_class[i]),
            "success": bool(res.success[i]), "search_success": bool(res.search_success[i]),
            "clean_correct": bool(res.clean_correct[i]),
            "generations_used": int(res.generations[i]), "queries": int(res.queries[i]),
            "queries_to_hit": int(res.queries_to_hit[i]),
            "pixel_values": res.pixels[i].tolist(),
            "predicted_before": int(res.predicted_before[i]),
            "predicted_after": int(res.predicted_after[i]),
            **{f: float(getattr(res, f)[i]) for f in (
                "prob_true_before", "prob_true_after", "prob_adv_before", "prob_adv_after")},
            "png": pngs[i],
        })
    return out


class _Writer:
    """Buffers finished problems, verifies them in batches and appends them."""

    def __init__(self, store, clf, x, before, ids, labels, exps, save_images, flush_every):
        self.store, self.clf, self.x, self.before = store, clf, x, before
        self.flush_every = flush_every
        self.ids, self.labels, self.exps, self.save = ids, labels, exps, save_images
        self.pending: list[tuple] = []
        self.last = time.monotonic()
        self.written = 0

    def add(self, exp_idx, img_idx, tgt, genes, found, gens, first_hit):
        self.pending.append((exp_idx, img_idx, tgt, genes, found, gens, first_hit))
        n = sum(len(p[0]) for p in self.pending)
        if n >= self.flush_every or time.monotonic() - self.last > FLUSH_SECONDS:
            self.flush()

    def flush(self):
        if not self.pending:
            return
        e, i, t, g, f, n, h = (np.concatenate(c) for c in zip(*self.pending, strict=True))
        self.pending, self.last = [], time.monotonic()
        rows = []
        for ei in np.unique(e):
            sel = e == ei
            exp = self.exps[ei]
            res = verify(self.clf, exp.config(), self.x, self.before, i[sel], self.ids[i[sel]],
                         self.labels[i[sel]], t[sel], g[sel], f[sel], n[sel], h[sel])
            pngs = [self._png(exp, res, j) for j in range(len(res))]
            rows += result_rows(res, exp, pngs)
        self.store.append(rows)
        self.written += len(rows)

    def _png(self, exp, res, j):
        if self.save == "none" or (self.save == "success" and not res.success[j]):
            return None
        stem = f"{exp.id}/{res.image_id[j]}_t{res.target[j]}"
        return self.store.save_pngs(stem, self.x[res.image_index[j]], res.adversarial[j],
                                    res.pixels[j])


def run(
    experiments: Sequence[Experiment],
    out: str | Path,
    images: int | None = 100,
    *,
    save_images: str = "success",
    devices=None,
    batch_size: int | None = None,
    progress: bool = True,
    load_model: Callable[[str], Classifier] = load_classifier,
    load_data: Callable | None = None,
    flush_every: int = FLUSH_PROBLEMS,
    process: tuple[int, int] | None = None,
) -> ResultStore:
    """Run (or resume) ``experiments`` on the first ``images`` images of each data source.

    Finished problems are verified and appended in batches of ``flush_every`` (or every
    ``FLUSH_SECONDS``); a killed run loses at most the unflushed ones.

    ``process=(i, n)``, by default ``(jax.process_index(), jax.process_count())``: this
    process attacks every n-th selected image, starting at the i-th, on its local
    devices, and appends to its own store shard. Processes never wait for each other.
    """
    if save_images not in SAVE_IMAGES:
        raise ValueError(f"save_images must be one of {SAVE_IMAGES}, got {save_images!r}")
    if images is not None and images < 1:
        raise ValueError(f"images must be >= 1, got {images}")
    load_data = data.load if load_data is None else load_data
    if process is None:
        import jax

        process = (jax.process_index(), jax.process_count())
    by_source = defaultdict(list)
    for exp in experiments:
        by_source[(exp.model, exp.data, exp.split)].append(exp)
    # Load every model before touching ``out``: a bad name leaves no empty run folder.
    classifiers = {m: load_model(m) for m in dict.fromkeys(e.model for e in experiments)}
    store = ResultStore(out, shard=process)
    store.repair()
    done = store.done()
    mesh = make_mesh(devices)

    for (model, source, split), exps in by_source.items():
        x_all, y_all, names = load_data(source, split=split)
        sel = data.select_images(y_all, images)[process[0]::process[1]]
        if not sel.size:  # more processes than images: this one has none
            continue
        clf = classifiers[model]
        x, y, ids = x_all[sel], y_all[sel], sel.astype(np.int64)
        for exp in exps:  # the checks attack() makes, with its messages
            x, y = check_inputs(clf, x, y, exp.config())
        if process[0] == 0:
            store.write_meta(store.meta() | {"class_names": list(names),
                                             "version": __version__})
        before = clean_probs(clf, x)
        by_spec = defaultdict(list)
        for exp in exps:
            by_spec[spec_of(exp.config(), x.shape[1:])].append(exp)
        for spec, group in by_spec.items():
            _run_group(store, done, clf, mesh, spec, group, x, y, ids, before,
                       dict(save_images=save_images, flush_every=flush_every),
                       batch_size, progress)
    return store


def _run_group(store, done, clf, mesh, spec, exps, x, y, ids, before, writing,
               batch_size, progress):
    parts = []
    for e, exp in enumerate(exps):
        targets = (default_targets(exp.seed, ids, y, clf.num_classes)
                   if exp.mode == "targeted" else None)
        img, tgt = problems(exp.mode, y, targets, clf.num_classes)
        todo = np.array([(exp.id, int(ids[i]), int(t)) not in done
                         for i, t in zip(img, tgt, strict=True)], bool)
        img, tgt = img[todo], tgt[todo]
        keys = problem_keys(exp.seed, ids[img], tgt) if img.size else np.zeros((0, 2), np.uint32)
        parts.append((np.full(img.size, e), img, tgt, keys))
    e_idx, img, tgt, keys = (np.concatenate(c) for c in zip(*parts, strict=True))
    if not img.size:
        return
    engine = Engine(spec, clf, mesh, num_slots(exps[0].config(batch_size), img.size, mesh))
    writer = _Writer(store, clf, x, before, ids, y, exps, **writing)

    def finished(rows, genes, found, gens, first_hit):
        writer.add(e_idx[rows], img[rows], tgt[rows], genes, found, gens, first_hit)

    names = sorted({f"k={e.pixels} {e.mode}" for e in exps})
    search(engine, keys, x[img], y[img], tgt, finished, progress and sys.stderr is not None,
           desc=f"{exps[0].model} {', '.join(names)}")
    writer.flush()
