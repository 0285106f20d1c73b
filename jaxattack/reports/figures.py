"""Report figures from stored rows, drawn on ``matplotlib.figure.Figure`` objects (no
pyplot state, so notebooks keep their backend) and saved as PNG. A new figure is a
function here and its line in ``FIGURE_FUNCS``.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxattack.reports.aggregates import (
    CORE_FIELDS,
    GROUP_FIELDS,
    MAX_PANELS,
    _label,
    _varying,
    aggregate,
    class_names,
    class_pair_counts,
    classes_reached,
    groups,
    success_curve,
)

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


FIGURE_FUNCS = (
    ("class_pairs", "Class pairs: true class x adversarial class", class_pair_heatmap),
    ("classes_reached", "Classes each image can be pushed to", classes_reached_histogram),
    ("success_vs_k", "Success rate vs k", success_vs_k),
    ("success_vs_queries", "Success vs queries", success_vs_queries),
    ("confidence", "Adversarial confidence", confidence_histogram),
)


