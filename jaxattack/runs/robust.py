"""Few-pixel robust accuracy: an ensemble of attacks run as a cascade, per k.

    ja.robust.evaluate("tiny", "sample", images=100, ks=(1, 3, 5, 10), out="runs/eval")

Robust accuracy at k is the share of the selected images that the model classifies
correctly and that no attack of the ensemble fools with at most k pixels. The attacks
run as a cascade, as AutoAttack does: each attack sees only the images still standing,
and the ks run in increasing order starting from the images standing after the
smaller k (an image fooled with 1 pixel is fooled within 3), so robust accuracy never
rises with k. Every stage is a sweep experiment (``sweep.run`` on the standing image
ids) in one results store: a killed evaluation re-run with the same arguments skips
every stored problem and writes the same ``evaluation.json``. Wall times, which a
resumed run cannot reproduce, go to ``timing.json`` (seconds spent per stage, summed
over runs, written after every stage and when a stage is interrupted) and into the
markdown table, never into ``evaluation.json``.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from jaxattack import __version__, data
from jaxattack.classifier import predict
from jaxattack.data.files import write_atomic
from jaxattack.pixels import inputs, stats
from jaxattack.runs import sweep
from jaxattack.runs.attack import AttackConfig
from jaxattack.strategies.oracle import oracle_budget

DEFAULT_KS = (1, 3, 5, 10)
DEFAULT_BUDGET = 10_000
EVALUATION, TIMING = "evaluation.json", "timing.json"


@dataclasses.dataclass(frozen=True)
class Attack:
    """One attack of an ensemble: a strategy with its loss and population; ``max_k``
    limits the ks it runs at (the one-pixel oracle: 1); ``exhaustive``: its budget is
    its enumeration, not the per-attack budget."""

    name: str
    strategy: str
    loss: str
    population: int
    max_k: int | None = None
    exhaustive: bool = False

    def config(self, k: int, budget: int, seed: int, image_shape) -> AttackConfig:
        pop, gens = self.population, budget // self.population - 1
        if self.exhaustive:
            pop, gens = oracle_budget(*image_shape)
        return AttackConfig(pixels=k, population=pop, generations=gens, loss=self.loss,
                            strategy=self.strategy, seed=seed)


ATTACKS = {a.name: a for a in (
    Attack("learned-rs", "learned-rs", "margin", 20),
    Attack("sparse-rs", "sparse-rs", "margin", 20),
    Attack("de", "de", "prob", 400),  # the paper's DE (population 400)
    Attack("oracle", "oracle", "margin", 512, max_k=1, exhaustive=True),
)}
DEFAULT_ENSEMBLE = ("learned-rs", "sparse-rs", "de", "oracle")


def parse_attacks(spec: Sequence[str] | str, budget: int = DEFAULT_BUDGET
                  ) -> list[tuple[Attack, int]]:
    """``["learned-rs", "de:40000"]`` (or the same comma-separated): each attack with its
    budget in queries per image (``NAME:QUERIES`` overrides ``budget``)."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    items = [s for s in items if s]
    if not items:
        raise ValueError("the ensemble is empty: name at least one attack of "
                         f"{', '.join(ATTACKS)}")
    out = []
    for item in items:
        name, _, text = item.partition(":")
        if name not in ATTACKS:
            raise ValueError(f"unknown attack {name!r}; attacks are {', '.join(ATTACKS)}")
        try:
            b = int(text) if text else budget
        except ValueError:
            raise ValueError(f"budget of {name} must be an integer, got {text!r}") from None
        attack = ATTACKS[name]
        if b <= 0:
            raise ValueError(f"budget of {name} must be > 0 queries, got {b}")
        if not attack.exhaustive and b < attack.population:
            raise ValueError(f"budget of {name} must be at least its population "
                             f"({attack.population} queries), got {b}")
        out.append((attack, b))
    return out


def _check_ks(ks: Sequence[int], image_shape) -> list[int]:
    ks = sorted({int(k) for k in ks})
    if not ks:
        raise ValueError("ks is empty: give at least one number of pixels")
    h, w = image_shape[:2]
    for k in ks:
        if not 1 <= k <= h * w:
            raise ValueError(f"k={k} is not a number of pixels of a {h}x{w} image "
                             f"(1..{h * w})")
    return ks


def evaluate(model: str, data_source: str = "sample", *, out: str | Path, images: int | None = 100,
             ks: Sequence[int] = DEFAULT_KS, attacks: Sequence[str] | str = DEFAULT_ENSEMBLE,
             budget: int = DEFAULT_BUDGET, seed: int = 0, split: str = "test",
             model_options=(), data_options=(), batch_size: int | None = None, devices=None,
             progress: bool = False, load_model: Callable = sweep.load_classifier,
             load_data: Callable | None = None, flush_every: int = sweep.FLUSH_PROBLEMS
             ) -> dict:
    """Robust accuracy of ``model`` per k under the ensemble ``attacks`` (cascade; see
    the module docstring). Writes ``evaluation.json``, ``evaluation.md``,
    ``robust_accuracy.png`` and ``timing.json`` into ``out`` and returns the JSON."""
    ensemble = parse_attacks(attacks, budget)
    if images is not None and images < 1:
        raise ValueError(f"images must be >= 1, got {images}")
    exp0 = sweep.Experiment(model, AttackConfig(seed=seed), data_source, split, model_options,
                            data_options)
    clf = load_model(model, **dict(exp0.model_options))
    x_all, y_all, names = (load_data or data.load)(data_source, split=split,
                                                   **dict(exp0.data_options))
    y_all = np.asarray(y_all)
    sel = data.select_images(y_all, images)
    ks = _check_ks(ks, x_all.shape[1:])
    x, y = inputs.attack_inputs(clf, x_all[sel], y_all[sel], max(ks))
    correct = predict(clf, x).argmax(-1) == y
    standing = sel[correct]
    root = Path(out)
    timing = _read(root / TIMING)
    stages, per_k = [], []
    run_kw = dict(load_model=lambda *a, **kw: clf, batch_size=batch_size, progress=progress,
                  devices=devices,
                  load_data=lambda *a, **kw: (x_all, y_all, names), flush_every=flush_every,
                  save_images="none")
    for k in ks:
        rows_k = []
        for attack, b in ensemble:
            if attack.max_k is not None and k > attack.max_k:
                continue
            exp = dataclasses.replace(exp0, config=attack.config(k, b, seed, x_all.shape[1:]))
            key = f"k{k}/{attack.name}"
            start = time.perf_counter()
            try:
                store = sweep.run([exp], root, None, image_ids=standing, **run_kw)
            finally:  # after every stage, and for an interrupted one, what it spent
                if standing.size:
                    timing[key] = timing.get(key, 0.0) + time.perf_counter() - start
                    _write_timing(root, timing)
            rows = {r["image_id"]: r for r in store.rows() if r["experiment"] == exp.id}
            got = [rows[int(i)] for i in standing]
            fooled = np.array([r["success"] for r in got], bool)
            standing = standing[~fooled]
            rows_k.append(_stage(attack, exp, got, standing.size, len(sel), key))
        per_k.append({"k": k, "robust_accuracy": standing.size / len(sel),
                      "robust": int(standing.size), "attacks": rows_k,
                      "forward_passes": sum(s["forward_passes"] for s in rows_k)})
        stages += rows_k
    result = {
        "model": model, "data": data_source, "split": split, **(
            {"model_options": dict(exp0.model_options)} if exp0.model_options else {}),
        **({"data_options": dict(exp0.data_options)} if exp0.data_options else {}),
        "threat_model": "L0: at most k pixels set to any colour (untargeted)",
        "protocol": "cascade over increasing k; each attack only on the images still "
                    "standing; robust accuracy among all selected images",
        "n_images": int(len(sel)), "image_selection": f"round-robin over classes, first "
                                                      f"{len(sel)}",
        "clean_correct": int(correct.sum()), "clean_accuracy": float(correct.mean()),
        "robust_accuracy": {str(r["k"]): r["robust_accuracy"] for r in per_k},
        "attacks": [{"name": a.name, "strategy": a.strategy, "loss": a.loss,
                     "population": a.population if not a.exhaustive else "enumeration",
                     "budget": "8 x H x W (every position x 2^C corners)" if a.exhaustive
                     else b, "ks": "1" if a.max_k == 1 else "all"} for a, b in ensemble],
        "per_k": per_k,
        "forward_passes": int(len(sel)) + sum(r["forward_passes"] for r in per_k),
        "seed": seed, "versions": _versions(),
    }
    root.mkdir(parents=True, exist_ok=True)
    write_atomic(root / EVALUATION, json.dumps(result, indent=1, sort_keys=True))
    _write_timing(root, timing)  # also when no stage had an image to attack
    write_atomic(root / "evaluation.md", markdown(result, timing))
    figure(result, root / "robust_accuracy.png")
    return result


def _stage(attack: Attack, exp: sweep.Experiment, rows: list[dict], left: int, n: int,
           key: str) -> dict:
    """Per-attack statistics of one stage of the cascade."""
    cfg = exp.config
    ok = [r["success"] for r in rows]
    q = [r["queries"] for r in rows]
    hits = [r["queries"] for r in rows if r["success"]]
    return {"attack": attack.name, "stage": key, "experiment": exp.id,
            "population": cfg.population,
            "generations": cfg.generations, "max_queries": cfg.max_queries,
            "attacked": len(rows), "fooled": int(sum(ok)),
            "success_rate": float(np.mean(ok)) if rows else None,
            "robust_accuracy": left / n,
            "median_queries": float(np.median(hits)) if hits else None,
            "mean_queries": float(np.mean(hits)) if hits else None,
            "queries": int(sum(q)),
            "forward_passes": int(sum(q)) + len(rows)}  # + one verification pass each


def _versions() -> dict:
    import jax
    import jaxlib

    return {"jaxattack": __version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def per_image_robust(root: str | Path, result: dict) -> dict[int, list[int]]:
    """From the stored rows alone: per k, the ids of the clean-correct images that no
    stored attack at any k' <= k fooled (the per-image worst case the cascade equals)."""
    rows = sweep.ResultStore(root).rows()
    fooled = {}
    for r in rows:
        if r["success"]:
            fooled[r["image_id"]] = min(fooled.get(r["image_id"], 10**9), r["pixels"])
    seen = {r["image_id"] for r in rows}
    return {k["k"]: sorted(i for i in seen if fooled.get(i, 10**9) > k["k"])
            for k in result["per_k"]}


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v) -> str:
    return "-" if v is None else f"{v:,.0f}"


def markdown(result: dict, timing: dict) -> str:
    """The evaluation's tables: robust accuracy per k, then every stage of the cascade."""
    n, lo_hi = result["n_images"], []
    for r in result["per_k"]:
        lo, hi = stats.wilson(r["robust"], n)
        lo_hi.append(f"{_pct(lo)}–{_pct(hi)}")
    head = (f"Robust accuracy of `{result['model']}` on {result['data']}:{result['split']}, "
            f"{n} images (clean accuracy {_pct(result['clean_accuracy'])}), seed "
            f"{result['seed']}, L0 threat model, ensemble "
            + ", ".join(f"{a['name']} ({a['budget']} q)" if isinstance(a["budget"], int)
                        else f"{a['name']} (exhaustive, k = 1)" for a in result["attacks"]))
    lines = [head, "", "| k | robust accuracy | 95% interval | forward passes | s |",
             "|---:|---:|---:|---:|---:|"]
    for r, ci in zip(result["per_k"], lo_hi, strict=True):
        secs = [_seconds(s, timing) for s in r["attacks"]]
        lines.append(f"| {r['k']} | {_pct(r['robust_accuracy'])} | {ci} | "
                     f"{_num(r['forward_passes'])} | "
                     f"{'-' if None in secs else f'{sum(secs):.0f}'} |")
    lines += ["", "| k | attack | budget | attacked | fooled | success | robust after | "
                  "median q | mean q | forward passes | s |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["per_k"]:
        for s in r["attacks"]:
            lines.append(f"| {r['k']} | {s['attack']} | {_num(s['max_queries'])} | "
                         f"{s['attacked']} | {s['fooled']} | {_pct(s['success_rate'])} | "
                         f"{_pct(s['robust_accuracy'])} | {_num(s['median_queries'])} | "
                         f"{_num(s['mean_queries'])} | {_num(s['forward_passes'])} | "
                         f"{_num(_seconds(s, timing))} |")
    secs = [_seconds(s, timing) for r in result["per_k"] for s in r["attacks"]]
    unknown = secs.count(None)
    lines += ["", f"Forward passes in all: {result['forward_passes']:,} (the clean pass, every "
                  f"query, one verification per attacked image); attack wall time "
                  f"{sum(t for t in secs if t is not None):.0f} s (summed over runs, "
                  f"timing.json" + (f"; {unknown} stages without a recorded time, '-'"
                                    if unknown else "") + ").", ""]
    return "\n".join(lines)


def _write_timing(root: Path, timing: dict) -> None:
    root.mkdir(parents=True, exist_ok=True)
    write_atomic(root / TIMING, json.dumps(timing, indent=1, sort_keys=True))


def _seconds(stage: dict, timing: dict):
    """A stage's recorded wall seconds: 0 when it attacked nothing, ``None`` when it ran
    but its time was not recorded (an older run killed before writing ``timing.json``)."""
    if stage["stage"] in timing:
        return timing[stage["stage"]]
    return 0.0 if stage["attacked"] == 0 else None


def figure(result: dict, path: Path) -> None:
    """Robust accuracy (95% interval) against k, with the clean accuracy."""
    from matplotlib.figure import Figure

    n = result["n_images"]
    ks = [r["k"] for r in result["per_k"]]
    acc = [r["robust_accuracy"] for r in result["per_k"]]
    ci = np.array([stats.wilson(r["robust"], n) for r in result["per_k"]]).T
    fig = Figure(figsize=(4.5, 3.2))
    ax = fig.subplots()
    ax.axhline(result["clean_accuracy"], color="grey", ls="--", label="clean")
    ax.errorbar(ks, acc, yerr=[np.subtract(acc, ci[0]), np.subtract(ci[1], acc)],
                marker="o", capsize=3, label="robust (ensemble)")
    ax.set_xlabel("pixels k")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_xticks(ks)
    ax.set_title(f"{result['model']}, {n} images", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
