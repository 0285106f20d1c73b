"""The paper's statistics, in one place, over per-problem columns (numpy arrays).

``AttackResult`` (one attack's arrays) and the report (stored rows turned into columns)
both compute their numbers here. Success rates count only problems whose clean image
the model classified correctly (``clean_correct``), as the paper does. A mean over
nothing is ``nan``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

# The per-problem columns a summary reads.
FIELDS = ("success", "clean_correct", "image", "adv_class", "label", "prob_adv_after",
          "queries", "generations", "search_success")


def columns(rows: Iterable[Mapping], image_key=("experiment", "seed", "image_id")) -> dict:
    """Stored rows as the columns of :func:`summary`. ``image`` numbers the attacked
    images (by the ``image_key`` fields: an image once per experiment, so once per seed)
    in order of first appearance; ``image_keys`` lists their keys."""
    rows = list(rows)
    keys = [tuple(r.get(f) for f in image_key) for r in rows]
    number = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    col = {f: np.array([r[src] for r in rows]) for f, src in (
        ("success", "success"), ("clean_correct", "clean_correct"),
        ("adv_class", "adv_class"), ("label", "label"), ("queries", "queries"),
        ("prob_adv_after", "prob_adv_after"), ("generations", "generations_used"))}
    col["search_success"] = np.array([bool(r.get("search_success")) for r in rows])
    col["image"] = np.array([number[k] for k in keys], np.int64)
    col = {k: v.astype(bool) if k in ("success", "clean_correct") else v
           for k, v in col.items()}
    return col | {"image_keys": list(number)}


def _mean(x: np.ndarray, empty=float("nan")):
    return float(np.mean(x)) if x.size else empty


def success_rate(success, clean_correct=None) -> float:
    """Share of problems fooled, among the clean-correct ones when ``clean_correct`` is given."""
    success = np.asarray(success, bool)
    keep = np.ones(success.shape, bool) if clean_correct is None else np.asarray(clean_correct)
    return _mean(success[keep].astype(np.float64))


def classes_reached(image, adv_class, success, clean_correct):
    """Per attacked image: ``(image ids, distinct classes it was pushed to, clean_correct)``."""
    image = np.asarray(image)
    idx, first = np.unique(image, return_index=True)
    ok = np.asarray(success, bool)
    pairs = np.unique(np.stack([image[ok], np.asarray(adv_class)[ok]]), axis=1)
    reached = np.bincount(np.searchsorted(idx, pairs[0]), minlength=idx.size)
    return idx, reached.astype(np.int64), np.asarray(clean_correct, bool)[first]


def class_pair_counts(label, adv_class, keep, num_classes: int) -> np.ndarray:
    """``[K, K]`` int64 counts of ``keep`` problems from true class (row) to adversarial
    class (column)."""
    label, adv_class = np.asarray(label)[keep], np.asarray(adv_class)[keep]
    bad = (label < 0) | (label >= num_classes) | (adv_class < 0) | (adv_class >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"class pair ({label[i]}, {adv_class[i]}) outside {num_classes} classes")
    m = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(m, (label, adv_class), 1)
    return m


def summary(c: Mapping[str, np.ndarray], empty=float("nan")) -> dict:
    """Every statistic of a set of problems (columns as in :data:`FIELDS`); a mean over
    nothing is ``empty``."""
    ok = np.asarray(c["clean_correct"], bool)
    success = np.asarray(c["success"], bool)
    wins = success & ok
    _, reached, img_ok = classes_reached(c["image"], c["adv_class"], success, ok)
    reached = reached[img_ok]
    return {
        "problems": int(success.size),
        "problems_clean_correct": int(ok.sum()),
        "successes": int(wins.sum()),
        "success_rate": _mean(success[ok].astype(np.float64), empty),
        "fooled_any_rate": _mean((reached > 0).astype(np.float64), empty),
        "mean_classes_reached": _mean(reached.astype(np.float64), empty),
        "max_classes_reached": int(reached.max()) if reached.size else None,
        "mean_adv_confidence": _mean(np.asarray(c["prob_adv_after"], np.float64)[wins], empty),
        "mean_queries": _mean(np.asarray(c["queries"], np.float64)[ok], empty),
        "mean_generations": _mean(np.asarray(c["generations"], np.float64)[ok], empty),
        "search_not_verified": int((np.asarray(c["search_success"], bool) & ~success).sum()),
    }


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default); ``(0, 1)`` for n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def paired(a, b, z: float = 1.96) -> dict:
    """Two attacks on the same problems (boolean success arrays in the same order):
    ``b``'s rate minus ``a``'s with its 95 % interval (Wald, for paired proportions)
    and the exact two-sided McNemar p-value from the discordant problems."""
    from math import comb

    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"paired needs the same problems: shapes {a.shape} and {b.shape}")
    n = int(a.size)
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    m = only_a + only_b
    diff = (only_b - only_a) / n if n else float("nan")
    half = z * np.sqrt(max(m - (only_b - only_a) ** 2 / n, 0.0)) / n if n else float("nan")
    tail = sum(comb(m, i) for i in range(min(only_a, only_b) + 1)) / 2 ** m
    return {"n": n, "a": int(a.sum()), "b": int(b.sum()), "only_a": only_a,
            "only_b": only_b, "diff": float(diff), "interval": (float(diff - half),
                                                                float(diff + half)),
            "p_mcnemar": float(min(1.0, 2 * tail))}
