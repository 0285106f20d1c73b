"""Reports from a results store: aggregates, a paper-style table, figures, ``report.md``.

Everything here only reads ``RUN/results.jsonl``, ``RUN/meta.json`` and the saved PNGs;
nothing is attacked again. Figures are drawn on ``matplotlib.figure.Figure`` objects
(no pyplot state, so notebooks keep their backend) and saved as PNG.

Paper statistics (Su, Vargas & Sakurai) count only problems whose clean image the model
classified correctly (``clean_correct``). Rates are fractions in [0, 1]; a statistic with
nothing to average over is ``None``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from jaxattack import stats
from jaxattack.attack import AttackConfig
from jaxattack.files import write_atomic
from jaxattack.store import META, RESULTS, read_rows, shard_paths

FIGURES = "figures"
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
    rows = list(rows)
    keys = {}
    for r in rows:
        keys.setdefault((r.get("experiment"), r.get("seed"), r["image_id"]), len(keys))
    if not rows:
        return {}
    c = stats.columns(rows)
    _, reached, ok = stats.classes_reached(c["image"], c["adv_class"], c["success"],
                                           c["clean_correct"])
    # stats numbers images in sorted order of their keys; map back to the keys
    order = sorted(keys, key=repr)
    return {k: (bool(ok[i]), int(reached[i])) for i, k in enumerate(order)}


def _aggregate(fields: dict, rows: list[dict]) -> dict:
    s = stats.summary(stats.columns(rows), empty=None)
    all_targets = fields["mode"] == "all-targets"
    return fields | {
        "experiments": len({r.get("experiment") for r in rows}),
        "seeds": sorted({r["seed"] for r in rows if r.get("seed") is not None}),
        "n_problems": s["problems"],
        "n_images": len({r["image_id"] for r in rows}),
        "n_clean_correct": len({r["image_id"] for r in rows if r["clean_correct"]}),
        "n_problems_clean_correct": s["problems_clean_correct"],
        "n_successes": s["successes"],
        **{k: s[k] for k in ("success_rate", "fooled_any_rate", "mean_classes_reached",
                             "max_classes_reached") if k == "success_rate" or all_targets},
        **{k: None for k in ("fooled_any_rate", "mean_classes_reached", "max_classes_reached")
           if not all_targets},
        **{k: s[k] for k in ("mean_adv_confidence", "mean_queries", "mean_generations",
                             "search_not_verified")},
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


# --------------------------------------------------------------------------- table

def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def table(aggregates: Sequence[dict]) -> str:
    """A markdown table (also readable in a terminal): one line per config.

    Config columns beyond model, k and mode appear only where they differ between lines;
    a ``seeds`` column appears when some line pools more than one seed.
    """
    if not aggregates:
        return "(no results)"
    extra = _varying(aggregates, [f for f in GROUP_FIELDS if f not in CORE_FIELDS])
    if any(len(a.get("seeds", ())) > 1 for a in aggregates):
        extra.append("seeds")
    head = ["model", "k", "mode", *extra, "correct/images", "success", "fooled any",
            "classes", "adv conf", "queries", "generations"]
    body = [[str(a["model"]), str(a["pixels"]), str(a["mode"]),
             *[",".join(map(str, a["seeds"])) if f == "seeds" else str(a.get(f))
               for f in extra],
             f"{a['n_clean_correct']}/{a['n_images']}",
             _pct(a["success_rate"]), _pct(a["fooled_any_rate"]),
             _num(a["mean_classes_reached"], 2), _pct(a["mean_adv_confidence"]),
             _num(a["mean_queries"], 0), _num(a["mean_generations"], 1)] for a in aggregates]
    left = 3 + len(extra)  # text columns, left aligned; numbers right aligned
    widths = [max(len(c[i]) for c in [head, *body]) for i in range(len(head))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) if i < left else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + " |"

    rule = "|" + "|".join(("-" * (w + 2)) if i < left else ("-" * (w + 1) + ":")
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(head), rule, *map(line, body)])


# --------------------------------------------------------------------------- figures

def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format="png")
    return path


def _no_data(fig, text: str, path) -> Path:
    ax = fig.subplots()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return _save(fig, path)


def _integer_y(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _log_x(ax) -> None:
    """Log x axis with plain numbers; within one decade minor ticks 2, 3, 5 x 10^n too."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    def minor(v, _):
        return f"{v:,.0f}" if round(v / 10 ** math.floor(math.log10(v))) in (2, 3, 5) else ""

    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(minor) if hi < 10 * lo else NullFormatter())


def _names(names: Sequence[str] | None, rows: Sequence[dict]) -> list[str]:
    return list(names) if names is not None else class_names({}, rows)


def class_pair_counts(rows: Iterable[dict], num_classes: int) -> np.ndarray:
    """``[K, K]`` int64 successes over clean-correct problems, true class (row) to
    adversarial class (column)."""
    rows = list(rows)
    if not rows:
        return np.zeros((num_classes, num_classes), np.int64)
    c = stats.columns(rows)
    return stats.class_pair_counts(c["label"], c["adv_class"], c["success"] & c["clean_correct"],
                                   num_classes)


def class_pair_heatmap(rows: Sequence[dict], path: str | os.PathLike,
                       class_names: Sequence[str] | None = None) -> Path:
    """Heat map of true class x adversarial class success counts, one panel per config
    (the paper's Fig. 4/5); cells annotated when there are at most 20 classes."""
    names = _names(class_names, rows)
    k = len(names)
    gs = [(f, g) for f, g in groups(rows) if any(r["clean_correct"] for r in g)]
    if not gs:
        return _no_data(_figure(5, 3), "no clean-correct problems", path)
    extra = _varying([f for f, _ in gs], [f for f in GROUP_FIELDS if f not in CORE_FIELDS])
    shown = gs[:MAX_PANELS]
    cols = min(3, len(shown))
    nrows = math.ceil(len(shown) / cols)
    side = 4.2 if k <= 20 else 5.5
    fig = _figure(side * cols, (side - 0.4) * nrows + 0.3)
    axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).ravel()
    for ax, (f, g) in zip(axes, shown, strict=False):
        m = class_pair_counts(g, k)
        im = ax.imshow(m, cmap="viridis", vmin=0, vmax=max(1, m.max()), interpolation="nearest")
        ax.set_title(f"{_label(f, extra)}\n{m.sum()} successes", fontsize=9)
        ax.set_xlabel("adversarial class")
        ax.set_ylabel("true class")
        if k <= 20:
            ax.set_xticks(range(k), names, rotation=90, fontsize=7)
            ax.set_yticks(range(k), names, fontsize=7)
            hi = m.max() / 2
            for i, j in zip(*np.nonzero(m), strict=True):
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                        color="black" if m[i, j] > hi else "white")
        fig.colorbar(im, ax=ax, shrink=0.8)
    for ax in axes[len(shown):]:
        ax.set_axis_off()
    if len(gs) > len(shown):
        fig.suptitle(f"first {len(shown)} of {len(gs)} configs", fontsize=9)
    return _save(fig, path)


def classes_reached_histogram(rows: Sequence[dict], path: str | os.PathLike,
                              class_names: Sequence[str] | None = None) -> Path:
    """How many classes each clean-correct image can be pushed to (all-targets runs)."""
    k = len(_names(class_names, rows))
    gs = [(f, [n for cc, n in classes_reached(g).values() if cc])
          for f, g in groups(r for r in rows if r["mode"] == "all-targets")]
    gs = [(f, counts) for f, counts in gs if counts]
    fig = _figure(7, 4)
    if not gs:
        return _no_data(fig, "no all-targets results on clean-correct images", path)
    extra = _varying([f for f, _ in gs], [f for f in GROUP_FIELDS if f not in CORE_FIELDS])
    top = max(k - 1, max(max(c) for _, c in gs))
    ax = fig.subplots()
    width = 0.8 / len(gs)
    for i, (f, counts) in enumerate(gs):
        h = np.bincount(counts, minlength=top + 1)
        ax.bar(np.arange(top + 1) - 0.4 + width * (i + 0.5), h, width,
               label=f"{_label(f, extra, skip=['mode'])} (mean {np.mean(counts):.2f})")
    ax.set_xticks(range(top + 1))
    ax.set_xlabel("classes the image was pushed to")
    ax.set_ylabel("images")
    _integer_y(ax)
    ax.set_title("Classes reached per image (all-targets)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def success_vs_k(rows: Sequence[dict], path: str | os.PathLike,
                 class_names: Sequence[str] | None = None) -> Path:
    """Success rate against the number of pixels k, one line per model x mode (dashed:
    the fooled-any rate of all-targets runs)."""
    aggs = [a for a in aggregate(rows) if a["success_rate"] is not None]
    fig = _figure(6.5, 4)
    if not aggs:
        return _no_data(fig, "no clean-correct problems", path)
    extra = _varying(aggs, [f for f in GROUP_FIELDS if f not in CORE_FIELDS])
    lines: dict[str, list[dict]] = defaultdict(list)
    for a in aggs:
        lines[_label(a, extra, skip=["pixels"])].append(a)
    ax = fig.subplots()
    for label, pts in lines.items():
        ks = [a["pixels"] for a in pts]
        (ln,) = ax.plot(ks, [100 * a["success_rate"] for a in pts], "o-", label=label)
        if pts[0]["mode"] == "all-targets":
            ax.plot(ks, [100 * a["fooled_any_rate"] for a in pts], "s--", color=ln.get_color(),
                    label=f"{label} (fooled any)")
    ax.set_xticks(sorted({a["pixels"] for a in aggs}))
    ax.set_ylim(0, 105)
    ax.set_xlabel("pixels changed (k)")
    ax.set_ylabel("success rate (%)")
    ax.set_title("Success rate vs k (clean-correct images)")
    ax.legend(fontsize=8)
    return _save(fig, path)


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


def success_vs_queries(rows: Sequence[dict], path: str | os.PathLike,
                       class_names: Sequence[str] | None = None) -> Path:
    """Fraction of clean-correct problems fooled within q queries (counted at the
    search's first success, whatever the early stop): a step curve per (model,
    strategy, k, mode), log x axis, flat after the last success up to the most queries
    any problem used."""
    gs = [(f, g) for f, g in groups(rows) if any(r["clean_correct"] for r in g)]
    fig = _figure(7, 4.2)
    if not gs:
        return _no_data(fig, "no clean-correct problems", path)
    extra = _varying([f for f, _ in gs], [f for f in GROUP_FIELDS if f not in CORE_FIELDS])
    ax = fig.subplots()
    for f, g in gs:
        curve = success_curve(g)
        if curve is None:  # old rows with another early stop: queries spent != to success
            ax.plot([], [], label=_label(f, extra) + " (first-success queries not stored)")
            continue
        q, frac = curve
        spent = [max(1, int(r["queries"])) for r in g if r["clean_correct"]]
        x = np.r_[max(1, min(spent)), np.maximum(q, 1), max(spent)]
        y = np.r_[0.0, frac, frac[-1] if frac.size else 0.0]
        ax.step(x, 100 * y, where="post", label=_label(f, extra))
    _log_x(ax)
    ax.set_ylim(0, 105)
    ax.set_xlabel("model queries")
    ax.set_ylabel("fooled within q queries (%)")
    ax.set_title("Success vs queries (clean-correct problems)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def confidence_histogram(rows: Sequence[dict], path: str | os.PathLike,
                         class_names: Sequence[str] | None = None) -> Path:
    """Histogram of the adversarial class's probability after successful attacks."""
    gs = [(f, [float(r["prob_adv_after"]) for r in g if r["clean_correct"] and r["success"]])
          for f, g in groups(rows)]
    gs = [(f, [c for c in conf if math.isfinite(c)]) for f, conf in gs]
    gs = [(f, conf) for f, conf in gs if conf]
    fig = _figure(7, 4)
    if not gs:
        return _no_data(fig, "no successful attacks", path)
    extra = _varying([f for f, _ in gs], [f for f in GROUP_FIELDS if f not in CORE_FIELDS])
    ax = fig.subplots()
    bins = np.linspace(0, 1, 21)
    for f, conf in gs:
        ax.hist(conf, bins=bins, histtype="step", linewidth=1.5,
                label=f"{_label(f, extra)} (n={len(conf)}, mean {np.mean(conf):.2f})")
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability of the adversarial class")
    ax.set_ylabel("successful problems")
    _integer_y(ax)
    ax.set_title("Adversarial confidence")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _png_paths(run_dir: Path, row: dict) -> tuple[Path, Path, Path] | None:
    png = row.get("png")
    if not png or not png.endswith("_adv.png"):
        return None
    adv = run_dir / png
    stem = str(adv)[: -len("_adv.png")]
    paths = (Path(stem + "_orig.png"), adv, Path(stem + "_crop.png"))
    return paths if paths[0].is_file() and adv.is_file() else None


def pick_examples(rows: Sequence[dict], run_dir: str | os.PathLike, n: int = 8) -> list[dict]:
    """Up to ``n`` rows with saved PNGs: clean-correct successes first, most confident
    first, one per (true, adversarial) class pair before repeating pairs."""
    have = [r for r in rows if _png_paths(Path(run_dir), r)]
    have.sort(key=lambda r: (not (r["clean_correct"] and r["success"]),
                             -float(r.get("prob_adv_after") or 0), r["image_id"], r["target"]))
    first, rest, pairs = [], [], set()
    for r in have:
        pair = (r["label"], r["adv_class"])
        (rest if pair in pairs else first).append(r)
        pairs.add(pair)
    wins = [r for r in first if r["clean_correct"] and r["success"]]
    return (wins + [r for r in rest if r["clean_correct"] and r["success"]]
            + [r for r in have if not (r["clean_correct"] and r["success"])])[:n]


def example_grid(rows: Sequence[dict], run_dir: str | os.PathLike, path: str | os.PathLike,
                 class_names: Sequence[str] | None = None, n: int = 8) -> Path | None:
    """Original / adversarial / magnified crop for up to ``n`` examples from the saved
    PNGs; ``None`` (and no file) when the run saved none."""
    from PIL import Image

    names = _names(class_names, rows)
    run_dir = Path(run_dir)
    shown = []
    for r in pick_examples(rows, run_dir, n):
        try:
            imgs = [np.asarray(Image.open(p).convert("RGB")) if p.is_file() else None
                    for p in _png_paths(run_dir, r)]
        except OSError:
            continue  # unreadable PNG: skip the example
        shown.append((r, imgs))
    if not shown:
        return None
    fig = _figure(7.5, 2.5 * len(shown))
    axes = fig.subplots(len(shown), 3, squeeze=False)
    for (r, imgs), row_axes in zip(shown, axes, strict=True):
        true, pred = names[r["label"]], names[r.get("predicted_after", r["adv_class"])]
        verdict = f"{true} -> {pred}" if r["success"] else f"{true} (not fooled)"
        titles = [f"original: {true} ({float(r['prob_true_before']):.0%})",
                  f"{verdict} ({float(r['prob_adv_after']):.0%})",
                  f"crop: {r['model']} k={r['pixels']} {r['mode']}"]
        for ax, img, title in zip(row_axes, imgs, titles, strict=True):
            ax.set_axis_off()
            if img is not None:
                ax.imshow(img, interpolation="nearest")
                ax.set_title(title, fontsize=8)
    return _save(fig, path)


# --------------------------------------------------------------------------- report

FIGURE_FUNCS = (
    ("class_pairs", "Class pairs: true class x adversarial class", class_pair_heatmap),
    ("classes_reached", "Classes each image can be pushed to", classes_reached_histogram),
    ("success_vs_k", "Success rate vs k", success_vs_k),
    ("success_vs_queries", "Success vs queries", success_vs_queries),
    ("confidence", "Adversarial confidence", confidence_histogram),
)


def _json_safe(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        return _json_safe(x.item())
    return x


def _markdown(run: Path, summary: dict, titles: dict[str, str]) -> str:
    t = summary["totals"]
    out = [f"# jaxattack report: {run.resolve().name}", "",
           f"{t['rows']} problems ({t['problems_clean_correct']} on correctly classified "
           f"images, {t['successes']} of those fooled) from {t['experiments']} experiment(s) "
           f"on {t['images']} image(s); models: {', '.join(t['models']) or '-'}.", "",
           table(summary["aggregates"]), "",
           "Success rates count only images the model classified correctly before the "
           "attack. *fooled any* (all-targets runs) is the share of those images pushed to "
           "at least one other class, the paper's non-targeted rate; *classes* is the mean "
           "number of classes reached per image; *adv conf* the mean probability of the "
           "adversarial class after successful attacks."]
    if t["duplicate_rows"]:
        out += ["", f"**Warning:** {t['duplicate_rows']} duplicate row(s) in {RESULTS} "
                "were ignored (the last copy of each was kept)."]
    if t["search_not_verified"]:
        out += ["", f"{t['search_not_verified']} problem(s) looked fooled during the search "
                "but not when the final image was re-classified; they count as failures."]
    for name, rel in summary["figures"].items():
        out += ["", f"## {titles[name]}", "", f"![{titles[name]}]({rel})"]
    return "\n".join(out) + "\n"


def write_report(run_dir: str | os.PathLike) -> dict:
    """Write ``summary.json``, ``figures/*.png`` and ``report.md`` into the run folder
    from its stored rows (no attack is recomputed); return the summary."""
    run = Path(run_dir)
    rows, duplicates = unique_rows(load_rows(run))
    names = class_names(load_meta(run), rows)
    figdir = run / FIGURES
    figdir.mkdir(parents=True, exist_ok=True)
    figures, titles = {}, {}
    for name, title, draw in FIGURE_FUNCS:
        draw(rows, figdir / f"{name}.png", names)
        figures[name], titles[name] = f"{FIGURES}/{name}.png", title
    examples = figdir / "examples.png"
    if example_grid(rows, run, examples, names):
        figures["examples"] = f"{FIGURES}/examples.png"
        titles["examples"] = "Example adversarial images (original / adversarial / crop)"
    elif examples.exists():
        examples.unlink()  # stale grid from an earlier report
    summary = _json_safe({"aggregates": aggregate(rows), "totals": totals(rows, duplicates),
                          "class_names": names, "figures": figures})
    write_atomic(run / "summary.json", json.dumps(summary, indent=1, allow_nan=False) + "\n")
    write_atomic(run / "report.md", _markdown(run, summary, titles))
    return summary
