"""Stored rows -> aggregates: loading, de-duplication, grouping by the config's fields,
and the paper's statistics per group (computed in ``stats``).

Paper statistics (Su, Vargas & Sakurai) count only problems whose clean image the model
classified correctly (``clean_correct``). Rates are fractions in [0, 1]; a statistic with
nothing to average over is ``None``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from jaxattack.data.store import META, RESULTS, read_rows, shard_paths
from jaxattack.pixels import stats
from jaxattack.runs.attack import AttackConfig

MODES = ("untargeted", "targeted", "all-targets")
# The fields that define one aggregate: an experiment's stored fields less its seed (seeds
# pool): these first, in this order, then every other stored AttackConfig field.
_LEADING = ("model", "data", "strategy", "loss", "pixels", "mode", "population", "generations",
            "early_stop", "F", "crossover", "split")
_CONFIG = [f for f in dataclasses.fields(AttackConfig) if f.metadata["stored"]]
GROUP_FIELDS = _LEADING + tuple(f.name for f in _CONFIG
                                if f.name not in _LEADING and f.name != "seed")
# What a row written before a field existed means by its absence.
_DEFAULTS = AttackConfig().identity(new=True)
CORE_FIELDS = ("model", "pixels", "mode")
CLASS_FIELDS = ("label", "target", "adv_class", "predicted_before", "predicted_after")
MAX_PANELS = 12


# --------------------------------------------------------------------------- loading

def load_rows(run_dir: str | os.PathLike) -> list[dict]:
    """Rows of every ``RUN/results*.jsonl`` shard (see ``store.read_rows``).

    A final line without its newline (a writer killed mid-row) is skipped; a bad line
    anywhere else is a ``ValueError`` naming the file and line.
    """
    paths = shard_paths(run_dir)
    if not paths:
        raise FileNotFoundError(f"no {RESULTS} in {run_dir}: nothing to report")
    return [r for p in paths for r in read_rows(p)[0]]


def load_meta(run_dir: str | os.PathLike) -> dict:
    """``RUN/meta.json`` as a dict, ``{}`` when it is missing."""
    path = Path(run_dir) / META
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return meta


def class_names(meta: dict, rows: Iterable[dict]) -> list[str]:
    """``meta["class_names"]``, extended with ``"class i"`` to cover every class the rows
    mention; without names, ``"class 0".."class K-1"`` with K at least 10."""
    names = [str(c) for c in meta.get("class_names") or []]
    seen = max((int(r[f]) for r in rows for f in CLASS_FIELDS if r.get(f) is not None),
               default=-1) + 1
    k = max(len(names), seen) if names else max(seen, 10)
    return names + [f"class {i}" for i in range(len(names), k)]


def unique_rows(rows: Iterable[dict]) -> tuple[list[dict], int]:
    """Rows with one per ``(experiment, image_id, target)`` (the last wins) and the number
    of duplicates dropped (a healthy store has none)."""
    out: dict[tuple, dict] = {}
    n = 0
    for r in rows:
        key = (r.get("experiment"), *_key(r), r.get("seed"), r["image_id"], r["target"])
        n += key in out
        out[key] = r
    return list(out.values()), n


# --------------------------------------------------------------------------- aggregates

def _frozen(value):
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    return tuple(map(_frozen, value)) if isinstance(value, list | tuple) else value


def _fields(row: dict) -> dict:
    """The row's group fields; a field the row predates reads as its default."""
    return {f: row.get(f, _DEFAULTS.get(f)) for f in GROUP_FIELDS}


def _key(row: dict) -> tuple:
    return tuple(_frozen(v) for v in _fields(row).values())


def _sort_key(key: tuple) -> tuple:
    d = dict(zip(GROUP_FIELDS, key, strict=True))
    mode = MODES.index(d["mode"]) if d["mode"] in MODES else len(MODES)
    return (str(d["model"]), str(d["data"]), str(d["strategy"]), d["pixels"] or 0, mode,
            str(d["mode"]), tuple(str(v) for v in key))


def groups(rows: Iterable[dict]) -> list[tuple[dict, list[dict]]]:
    """``(config fields, rows)`` per aggregate, in table order."""
    by: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        by[_key(r)].append(r)
    return [(_fields(by[k][0]), by[k]) for k in sorted(by, key=_sort_key)]


def classes_reached(rows: Iterable[dict]) -> dict[tuple, tuple[bool, int]]:
    """Per attacked image ``(experiment, seed, image_id)``: ``(clean_correct, distinct
    classes it was successfully pushed to)``."""
    c = stats.columns(rows)
    idx, reached, ok = stats.classes_reached(c["image"], c["adv_class"], c["success"],
                                             c["clean_correct"])
    return {c["image_keys"][i]: (bool(o), int(n)) for i, n, o in zip(idx, reached, ok,
                                                                    strict=True)}


PER_IMAGE = ("fooled_any_rate", "mean_classes_reached", "max_classes_reached")


def _aggregate(fields: dict, rows: list[dict]) -> dict:
    s = stats.summary(stats.columns(rows), empty=None)
    if fields["mode"] != "all-targets":  # per-image statistics mean something only there
        s |= dict.fromkeys(PER_IMAGE)
    return fields | {
        "experiments": len({r.get("experiment") for r in rows}),
        "seeds": sorted({r["seed"] for r in rows if r.get("seed") is not None}),
        "n_problems": s["problems"],
        "n_images": len({r["image_id"] for r in rows}),
        "n_clean_correct": len({r["image_id"] for r in rows if r["clean_correct"]}),
        "n_problems_clean_correct": s["problems_clean_correct"],
        "n_successes": s["successes"],
        **{k: s[k] for k in ("success_rate", *PER_IMAGE, "mean_adv_confidence",
                             "mean_queries", "mean_generations", "search_not_verified")},
    }


def aggregate(rows: Iterable[dict]) -> list[dict]:
    """One entry per (model, data, strategy, k, mode, budget, ...) config, seeds pooled.

    ``success_rate``: successes over clean-correct problems. For all-targets only:
    ``fooled_any_rate`` (clean-correct images fooled toward at least one class, the
    paper's non-targeted rate) and ``mean_classes_reached``/``max_classes_reached``
    (distinct successful adversarial classes per clean-correct image). Means of
    queries and generations run over clean-correct problems; ``mean_adv_confidence``
    over their successes; ``search_not_verified`` counts all problems. ``n_images`` and
    ``n_clean_correct`` count distinct image ids; per-image statistics count an image
    once per experiment (so once per seed).
    """
    return [_aggregate(f, g) for f, g in groups(unique_rows(rows)[0])]


def totals(rows: Sequence[dict], duplicates: int = 0) -> dict:
    """Whole-run counts."""
    ok = [r for r in rows if r["clean_correct"]]
    return {
        "rows": len(rows),
        "duplicate_rows": duplicates,
        "experiments": len({r.get("experiment") for r in rows}),
        "models": sorted({str(r["model"]) for r in rows}),
        "images": len({(r.get("data"), r["image_id"]) for r in rows}),
        "problems_clean_correct": len(ok),
        "successes": sum(bool(r["success"]) for r in ok),
        "queries": sum(int(r.get("queries") or 0) for r in rows),
        "search_not_verified": sum(bool(r.get("search_success")) and not r["success"]
                                   for r in rows),
        "versions": sorted({str(r["version"]) for r in rows if r.get("version")}),
    }


def _varying(entries: Sequence[dict], fields: Sequence[str]) -> list[str]:
    return [f for f in fields if len({repr(e.get(f)) for e in entries}) > 1]


def _label(entry: dict, extra: Sequence[str], skip: Sequence[str] = ()) -> str:
    parts = [str(entry["model"]), f"k={entry['pixels']}", str(entry["mode"])]
    keep = [p for f, p in zip(CORE_FIELDS, parts, strict=True) if f not in skip]
    return " ".join(keep + [f"{f}={entry.get(f)}" for f in extra if f not in skip])


def class_pair_counts(rows: Iterable[dict], num_classes: int) -> np.ndarray:
    """``[K, K]`` int64 successes over clean-correct problems, true class (row) to
    adversarial class (column)."""
    rows = list(rows)
    if not rows:
        return np.zeros((num_classes, num_classes), np.int64)
    c = stats.columns(rows)
    return stats.class_pair_counts(c["label"], c["adv_class"], c["success"] & c["clean_correct"],
                                   num_classes)


def queries_to_hit(row: dict) -> int | None:
    """Queries spent when the search first succeeded, or None if not stored.

    Rows written before this was stored have only ``queries`` (spent at the stop),
    which is the same number when the problem stopped on its first success
    (``early_stop="success"``). A verified success the search itself never saw (-1)
    counts at the stop.
    """
    if "queries_to_hit" in row:
        hit = int(row["queries_to_hit"])
        return hit if hit >= 0 else int(row["queries"])
    return int(row["queries"]) if row.get("early_stop", "success") == "success" else None


def success_curve(rows: Iterable[dict]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(q, fraction)``: the share of clean-correct problems fooled within ``q[i]``
    queries, at each distinct query count of a first success (ascending); None when
    a success's first-success query count is not stored."""
    ok = [r for r in rows if r["clean_correct"]]
    hits = [queries_to_hit(r) for r in ok if r["success"]]
    if None in hits:
        return None
    q, counts = np.unique(np.array(hits, np.int64), return_counts=True)
    return q, np.cumsum(counts) / max(len(ok), 1)


