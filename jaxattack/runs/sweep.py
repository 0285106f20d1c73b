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
import itertools
import json
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxattack import __version__, data, engine
from jaxattack.classifier import Classifier
from jaxattack.data.store import ResultStore
from jaxattack.engine.sharding import make_mesh
from jaxattack.pixels import inputs, problems
from jaxattack.pixels.result import AttackResult
from jaxattack.pixels.verify import Finished, verify
from jaxattack.runs.attack import AttackConfig

SAVE_IMAGES = ("none", "success", "all")
FLUSH_PROBLEMS, FLUSH_SECONDS = 256, 15.0


def _options(value) -> tuple:
    """Keyword options as sorted, hashable ``(name, value)`` pairs."""
    items = value.items() if isinstance(value, Mapping) else value
    return tuple(sorted((str(k), tuple(v) if isinstance(v, list) else v) for k, v in items))


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One cell of a sweep grid: a model, its data, and an attack config.

    ``model_options`` go to the model loader (the input conventions of a model file:
    ``input_scale``, ``mean``, ``std``, ``layout``), ``data_options`` to the data loader
    (``image_size``, ``resample``); both belong to the experiment's identity when given.
    """

    model: str
    config: AttackConfig = AttackConfig()
    data: str = "sample"
    split: str = "test"
    model_options: Any = ()
    data_options: Any = ()

    def __post_init__(self):
        if not isinstance(self.config, AttackConfig):
            raise TypeError(f"config must be an AttackConfig, got {type(self.config).__name__}")
        object.__setattr__(self, "model_options", _options(self.model_options))
        object.__setattr__(self, "data_options", _options(self.data_options))

    def identity(self) -> dict:
        """Every stored field: model, data, split, the config's (``AttackConfig.identity``)
        and the model's and data's options when there are any."""
        return {"model": self.model, "data": self.data, "split": self.split,
                **{k: dict(v) for k, v in (("model_options", self.model_options),
                                           ("data_options", self.data_options)) if v},
                **self.config.identity()}

    @property
    def id(self) -> str:
        """Readable and safe as a folder name; the digest covers every stored field."""
        digest = hashlib.sha1(json.dumps(self.identity(), sort_keys=True).encode())
        model = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(self.model.split(":")[0]).stem)
        c = self.config
        return f"{model}_k{c.pixels}_{c.mode}_{c.strategy}_{digest.hexdigest()[:8]}"


def grid(models: Sequence[str], config: AttackConfig | None = None, *, data: str = "sample",
         split: str = "test", model_options=(), data_options=(), **fields) -> list[Experiment]:
    """Experiments for every model and every combination of the config fields given as
    lists, the others fixed: ``grid(["tiny"], pixels=[1, 3], mode=["untargeted",
    "all-targets"], population=100)``. Fields vary in declaration order (pixels, then
    mode, then strategy...), the last fastest."""
    base = AttackConfig() if config is None else config
    order = [f.name for f in dataclasses.fields(AttackConfig)]
    unknown = sorted(set(fields) - set(order))
    if unknown:
        raise TypeError(f"unknown AttackConfig field {unknown[0]!r}")
    axes = {k: list(v) for k, v in fields.items()
            if isinstance(v, list | tuple | range) and k != "strategy_params"}
    base = base.replace(**{k: v for k, v in fields.items() if k not in axes})
    names = [k for k in order if k in axes]
    return [Experiment(m, base.replace(**dict(zip(names, values, strict=True))), data, split,
                       model_options, data_options)
            for m in models for values in itertools.product(*(axes[k] for k in names))]


def load_classifier(name: str, **conventions) -> Classifier:
    """A zoo name, ``path/to/file.py:function`` returning a Classifier, or a model file
    (``.keras``, a SavedModel folder, ``.onnx``, TorchScript ``.pt``) read with its input
    ``conventions`` (see ``models.from_file``)."""
    from jaxattack import models
    from jaxattack.models.importers import model_file_kind

    if model_file_kind(name):
        return models.from_file(name, **conventions)
    if conventions:
        raise ValueError(f"input conventions ({', '.join(sorted(conventions))}) apply to model "
                         f"files (.keras, .onnx, a SavedModel folder, .pt), not to {name!r}")
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


def result_rows(res: AttackResult, exp: Experiment, pngs: Sequence[str | None],
                forward: str | None = None) -> list[dict]:
    """Store rows for a verified result; ``forward``: the forward the search ran
    ("dense" or "sparse", what ``forward="auto"`` resolved to)."""
    fixed = exp.identity() | {"experiment": exp.id, "version": __version__}
    if forward is not None:
        fixed["forward_used"] = forward
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

    def __init__(self, store, clf, x, before, ids, labels, exps, save_images, flush_every,
                 forward=None):
        self.store, self.clf, self.x, self.before = store, clf, x, before
        self.forward = forward
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
            done = Finished(i[sel], self.ids[i[sel]], self.labels[i[sel]], t[sel], g[sel],
                            f[sel], n[sel], h[sel])
            res = verify(self.clf, exp.config, self.x, self.before, done)
            pngs = [self._png(exp, res, j) for j in range(len(res))]
            rows += result_rows(res, exp, pngs, self.forward)
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
    image_ids: Sequence[int] | None = None,
) -> ResultStore:
    """Run (or resume) ``experiments`` on the first ``images`` images of each data source.

    Finished problems are verified and appended in batches of ``flush_every`` (or every
    ``FLUSH_SECONDS``); a killed run loses at most the unflushed ones.

    ``process=(i, n)``, by default ``(jax.process_index(), jax.process_count())``: this
    process attacks every n-th selected image, starting at the i-th, on its local
    devices, and appends to its own store shard. Processes never wait for each other.

    ``image_ids``: attack exactly these images (indices into each data source) instead
    of the first ``images`` (the robustness cascade attacks the images still standing).
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
        by_source[(exp.model, exp.model_options, exp.data, exp.data_options, exp.split)].append(
            exp)
    # Load every model before touching ``out``: a bad name leaves no empty run folder.
    classifiers = {m: load_model(m[0], **dict(m[1])) if m[1] else load_model(m[0])
                   for m in dict.fromkeys((e.model, e.model_options) for e in experiments)}
    store = ResultStore(out, shard=process)
    with store.writing():
        done = store.done()
        mesh = make_mesh(devices)
        for (model, model_options, source, data_options, split), exps in by_source.items():
            x_all, y_all, names = load_data(source, split=split, **dict(data_options))
            sel = (data.select_images(y_all, images) if image_ids is None else
                   np.unique(np.asarray(image_ids, np.int64)))[process[0]::process[1]]
            if not sel.size:  # more processes than images: this one has none
                continue
            clf = classifiers[model, model_options]
            x, y, ids = x_all[sel], y_all[sel], sel.astype(np.int64)
            for exp in exps:  # the checks attack() makes, with its messages
                x, y = inputs.attack_inputs(clf, x, y, exp.config.pixels)
            if process[0] == 0:
                store.write_meta(store.meta() | {"class_names": list(names),
                                                 "version": __version__})
            before = inputs.clean_probs(clf, x)
            by_search = defaultdict(list)
            for exp in exps:
                by_search[exp.config.search(clf, x.shape[1:])].append(exp)
            for search, group in by_search.items():
                _run_group(store, done, clf, mesh, search, group, x, y, ids, before,
                           dict(save_images=save_images, flush_every=flush_every),
                           batch_size, progress)
    return store


def _run_group(store, done, clf, mesh, search, exps, x, y, ids, before, writing,
               batch_size, progress):
    parts = []
    for e, exp in enumerate(exps):
        c = exp.config
        targets = (problems.default_targets(c.seed, ids, y, clf.num_classes)
                   if c.mode == "targeted" else None)
        img, tgt = problems.rows(c.mode, y, targets, clf.num_classes)
        todo = np.array([(exp.id, int(ids[i]), int(t)) not in done
                         for i, t in zip(img, tgt, strict=True)], bool)
        img, tgt = img[todo], tgt[todo]
        parts.append((np.full(img.size, e), img, tgt, problems.keys(c.seed, ids[img], tgt)))
    e_idx, img, tgt, keys = (np.concatenate(c) for c in zip(*parts, strict=True))
    if not img.size:
        return
    writer = _Writer(store, clf, x, before, ids, y, exps, **writing,
                     forward=getattr(search.evaluate, "forward", None))

    def finished(rows, genes, found, gens, first_hit):
        writer.add(e_idx[rows], img[rows], tgt[rows], genes, found, gens, first_hit)

    names = sorted({f"k={e.config.pixels} {e.config.mode}" for e in exps})
    engine.run(search, clf.params, keys, problems.image_problems(x, y, img, tgt), finished,
               mesh=mesh, num_slots=engine.default_slots(search.population, img.size, mesh,
                                                         batch_size,
                                                         search.evaluate.bytes_per_candidate()),
               progress=progress and sys.stderr is not None,
               desc=f"{exps[0].model} {', '.join(names)}",
               counted=before.argmax(-1)[img] == y[img])
    writer.flush()
