"""Reports from a results store: aggregates, a paper-style table, figures, ``report.md``.

Everything here only reads ``RUN/results.jsonl``, ``RUN/meta.json`` and the saved PNGs;
nothing is attacked again. Figures are drawn on ``matplotlib.figure.Figure`` objects
(no pyplot state, so notebooks keep their backend) and saved as PNG.

Paper statistics (Su, Vargas & Sakurai) count only problems whose clean image the model
classified correctly (``clean_correct``). Rates are fractions in [0, 1]; a statistic with
nothing to average over is ``None``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxattack.data.files import write_atomic
from jaxattack.data.store import RESULTS
from jaxattack.reports.aggregates import (  # noqa: F401  (the report's public face)
    CORE_FIELDS,
    GROUP_FIELDS,
    _varying,
    aggregate,
    class_names,
    class_pair_counts,
    classes_reached,
    groups,
    load_meta,
    load_rows,
    queries_to_hit,
    success_curve,
    totals,
    unique_rows,
)
from jaxattack.reports.figures import (  # noqa: F401
    FIGURE_FUNCS,
    class_pair_heatmap,
    classes_reached_histogram,
    confidence_histogram,
    example_grid,
    pick_examples,
    success_vs_k,
    success_vs_queries,
)

FIGURES = "figures"


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


# --------------------------------------------------------------------------- report

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
