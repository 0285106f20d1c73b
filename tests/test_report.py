"""Report layer on a hand-made results store with known answers (no JAX, no attacks)."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxattack.reports import report

NAMES = ["airplane", "automobile", "bird", "cat", "deer",
         "dog", "frog", "horse", "ship", "truck"]
LABELS = [0, 1, 2, 3]  # image i has label LABELS[i]; image 3 is misclassified when clean
POP, GENS = 10, 5
BUDGET_Q = POP * (GENS + 1)


def row(mode, k, image, target, adv, success, conf=0.1, queries=BUDGET_Q, gens=GENS,
        search=None, png=None, model="toy", population=POP):
    exp = f"{model}_k{k}_{mode}_de_{population}"
    return {
        "experiment": exp, "model": model, "data": "sample", "strategy": "de", "pixels": k,
        "mode": mode, "population": population, "generations": GENS, "seed": 0,
        "early_stop": "success", "image_id": image, "label": LABELS[image], "target": target,
        "adv_class": adv, "success": success,
        "search_success": success if search is None else search,
        "clean_correct": image != 3, "generations_used": gens, "queries": queries,
        "pixel_values": [[1, 2, 255, 0, 0]] * k, "prob_true_before": 0.9,
        "prob_true_after": 0.2, "prob_adv_before": 0.01, "prob_adv_after": conf,
        "predicted_before": LABELS[image] if image != 3 else 4,
        "predicted_after": adv if success else LABELS[image], "png": png, "version": "0.1.0",
    }


# all-targets k=1: image 0 -> {1, 2}, image 1 -> {0}, image 2 -> nothing,
# image 3 (not clean-correct) -> {5}, which every paper statistic must ignore.
WINS_AT = {(0, 1): (0.5, 20, 1), (0, 2): (0.75, 40, 3), (1, 0): (0.625, 30, 2),
           (3, 5): (0.9, 10, 0)}


def all_targets_rows():
    out = []
    for image, label in enumerate(LABELS):
        for t in range(10):
            if t == label:
                continue
            if (image, t) in WINS_AT:
                conf, q, g = WINS_AT[image, t]
                out.append(row("all-targets", 1, image, t, t, True, conf, q, g))
            else:  # two verified failures that the search thought were successes
                out.append(row("all-targets", 1, image, t, t, False,
                               search=(image, t) in {(2, 4), (3, 6)}))
    return out


def untargeted_rows(png_dir=None):
    k1 = [row("untargeted", 1, 0, -1, 3, True, 0.5, 25, 3),
          row("untargeted", 1, 1, -1, 1, False),
          row("untargeted", 1, 2, -1, 9, True, 0.25, 35, 4),
          row("untargeted", 1, 3, -1, 7, True, 0.99, 5, 0)]
    k3 = [row("untargeted", 3, i, -1, adv, True, 0.5, 10 * (i + 1), i, png=png)
          for i, (adv, png) in enumerate([(3, "images/a_adv.png"), (0, "images/b_adv.png"),
                                          (9, "images/missing_adv.png"), (2, None)])]
    return k1 + k3


def write_store(run, rows, torn=True, meta=True, pngs=True):
    run.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if torn:
        text += json.dumps(rows[0])[:37]  # a writer killed mid-row
    (run / "results.jsonl").write_text(text)
    if meta:
        (run / "meta.json").write_text(json.dumps({"class_names": NAMES}))
    if pngs:
        (run / "images").mkdir()
        rng = np.random.default_rng(0)
        for stem in ("a", "b"):
            for suffix, size in (("orig", 8), ("adv", 8), ("crop", 32)):
                img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(img).save(run / "images" / f"{stem}_{suffix}.png")
    return run


@pytest.fixture
def run(tmp_path):
    return write_store(tmp_path / "run", all_targets_rows() + untargeted_rows())


def by_config(aggs):
    return {(a["pixels"], a["mode"]): a for a in aggs}


def assert_png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()


# --------------------------------------------------------------------------- loading

def test_load_rows_skips_torn_final_line(run):
    rows = report.load_rows(run)
    assert len(rows) == 36 + 8
    assert rows == all_targets_rows() + untargeted_rows()


def test_corrupt_middle_line_is_an_error(tmp_path):
    good = json.dumps(row("untargeted", 1, 0, -1, 3, True))
    (tmp_path / "results.jsonl").write_text(f"{good}\n{good[:30]}\n{good}\n")
    with pytest.raises(ValueError, match=r"results\.jsonl:2: corrupt row"):
        report.load_rows(tmp_path)
    # a torn last line (no newline: the writer was killed mid-row) is skipped
    (tmp_path / "results.jsonl").write_text(f"{good}\n{good}\n\n{good[:30]}")
    assert len(report.load_rows(tmp_path)) == 2
    # ...even when the cut happens to leave valid JSON
    (tmp_path / "results.jsonl").write_text(f"{good}\n{good}")
    assert len(report.load_rows(tmp_path)) == 1


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="results.jsonl"):
        report.load_rows(tmp_path)
    with pytest.raises(FileNotFoundError, match="results.jsonl"):
        report.write_report(tmp_path)


def test_class_names_from_meta_or_inferred(run, tmp_path):
    rows = report.load_rows(run)
    assert report.class_names(report.load_meta(run), rows) == NAMES
    assert report.load_meta(tmp_path) == {}
    assert report.class_names({}, rows) == [f"class {i}" for i in range(10)]
    wide = [dict(rows[0], adv_class=11)]
    assert report.class_names({}, wide)[-1] == "class 11"
    assert report.class_names({"class_names": ["a", "b"]}, wide) == (
        ["a", "b"] + [f"class {i}" for i in range(2, 12)])


# --------------------------------------------------------------------------- aggregates

def test_aggregate_exact_numbers(run):
    aggs = report.aggregate(report.load_rows(run))
    assert [(a["pixels"], a["mode"]) for a in aggs] == [
        (1, "untargeted"), (1, "all-targets"), (3, "untargeted")]
    got = by_config(aggs)

    at = got[1, "all-targets"]
    assert {k: at[k] for k in (
        "model", "data", "strategy", "population", "generations", "n_problems", "n_images",
        "n_clean_correct", "n_problems_clean_correct", "n_successes", "experiments", "seeds",
    )} == {"model": "toy", "data": "sample", "strategy": "de", "population": POP,
           "generations": GENS, "n_problems": 36, "n_images": 4, "n_clean_correct": 3,
           "n_problems_clean_correct": 27, "n_successes": 3, "experiments": 1, "seeds": [0]}
    assert at["success_rate"] == 3 / 27
    assert at["fooled_any_rate"] == 2 / 3
    assert at["mean_classes_reached"] == 1.0
    assert at["max_classes_reached"] == 2
    assert at["mean_adv_confidence"] == 0.625  # (0.5 + 0.75 + 0.625) / 3, image 3 excluded
    assert at["mean_queries"] == (20 + 40 + 30 + 24 * BUDGET_Q) / 27
    assert at["mean_generations"] == (1 + 3 + 2 + 24 * GENS) / 27
    assert at["search_not_verified"] == 2  # counted over all problems

    u1 = got[1, "untargeted"]
    assert u1["success_rate"] == 2 / 3
    assert u1["fooled_any_rate"] is None and u1["mean_classes_reached"] is None
    assert u1["mean_adv_confidence"] == 0.375
    assert u1["mean_queries"] == (25 + BUDGET_Q + 35) / 3
    assert u1["mean_generations"] == (3 + GENS + 4) / 3
    assert u1["search_not_verified"] == 0

    u3 = got[3, "untargeted"]
    assert (u3["success_rate"], u3["mean_adv_confidence"]) == (1.0, 0.5)
    assert u3["mean_queries"] == 20.0 and u3["mean_generations"] == 1.0


def test_aggregate_no_successes_and_empty():
    fails = [row("untargeted", 1, i, -1, LABELS[i], False) for i in range(4)]
    (a,) = report.aggregate(fails)
    assert a["success_rate"] == 0.0 and a["mean_adv_confidence"] is None
    only_wrong = [row("all-targets", 1, 3, t, t, True) for t in (0, 1)]
    (b,) = report.aggregate(only_wrong)
    assert b["success_rate"] is None and b["fooled_any_rate"] is None
    assert b["mean_queries"] is None and b["n_clean_correct"] == 0
    assert report.aggregate([]) == []


def test_duplicates_are_dropped_and_counted(run):
    rows = report.load_rows(run)
    dup = rows + [rows[0], rows[-1]]
    uniq, n = report.unique_rows(dup)
    assert n == 2 and len(uniq) == len(rows)
    assert report.aggregate(dup) == report.aggregate(rows)


def test_class_pair_counts(run):
    m = report.class_pair_counts(report.load_rows(run), 10)
    want = np.zeros((10, 10), np.int64)
    # all-targets (0,1) (0,2) (1,0); untargeted k=1 (0,3) (2,9); k=3 (0,3) (1,0) (2,9)
    for (i, j), n in {(0, 1): 1, (0, 2): 1, (1, 0): 2, (0, 3): 2, (2, 9): 2}.items():
        want[i, j] = n
    np.testing.assert_array_equal(m, want)
    assert m[3].sum() == 0  # image 3 was misclassified before the attack
    with pytest.raises(ValueError, match="outside 3 classes"):
        report.class_pair_counts(report.load_rows(run), 3)


def test_classes_reached_and_success_curve():
    rows = all_targets_rows()
    reached = report.classes_reached(rows)
    assert sorted((k[2], v) for k, v in reached.items()) == [
        (0, (True, 2)), (1, (True, 1)), (2, (True, 0)), (3, (False, 1))]
    q, frac = report.success_curve(rows)
    assert q.tolist() == [20, 30, 40]
    assert frac.tolist() == [1 / 27, 2 / 27, 3 / 27]
    q, frac = report.success_curve([row("untargeted", 1, 0, -1, 0, False)])
    assert q.size == 0 and frac.size == 0
    # With another early stop the curve counts queries to the first success, not spent.
    late = [row("untargeted", 1, i, -1, 1, True) | {"early_stop": "paper", "queries_to_hit": q}
            for i, q in ((0, 800), (1, 400))]
    q, frac = report.success_curve(late)
    assert q.tolist() == [400, 800] and frac.tolist() == [0.5, 1.0]
    # Rows stored before queries_to_hit existed: only early_stop="success" is readable.
    assert report.success_curve([{k: v for k, v in r.items() if k != "queries_to_hit"}
                                 for r in late]) is None


def test_table_lines_and_numbers(run):
    aggs = report.aggregate(report.load_rows(run))
    lines = report.table(aggs).splitlines()
    assert len(lines) == 2 + 3 and lines[0].startswith("| model")
    assert len({len(line) for line in lines}) == 1  # aligned columns
    at = next(line for line in lines if "all-targets" in line)
    cells = [c.strip() for c in at.strip("|").split("|")]
    assert cells == ["toy", "1", "all-targets", "3/4", "11.1%", "66.7%", "1.00", "62.5%",
                     f"{(90 + 24 * BUDGET_Q) / 27:.0f}", f"{126 / 27:.1f}"]
    assert "population" not in lines[0]
    wider = report.table(aggs + [dict(aggs[0], population=99)])
    assert "population" in wider.splitlines()[0]
    assert report.table([]) == "(no results)"


# --------------------------------------------------------------------------- report

def test_write_report(run):
    summary = report.write_report(run)
    rows = report.load_rows(run)
    assert summary["aggregates"] == report.aggregate(rows)
    text = (run / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == summary
    assert summary["totals"] == {
        "rows": 44, "duplicate_rows": 0, "experiments": 3, "models": ["toy"], "images": 4,
        "problems_clean_correct": 33, "successes": 8,
        "queries": sum(r["queries"] for r in rows), "search_not_verified": 2,
        "versions": ["0.1.0"]}
    assert summary["class_names"] == NAMES

    assert set(summary["figures"]) == {"class_pairs", "classes_reached", "success_vs_k",
                                       "success_vs_queries", "confidence", "examples"}
    md = (run / "report.md").read_text()
    assert report.table(summary["aggregates"]) in md
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(links) == sorted(summary["figures"].values())
    for rel in links:
        assert not Path(rel).is_absolute()
        assert_png(run / rel)
    assert sorted(p.name for p in (run / "figures").iterdir()) == sorted(
        f"{name}.png" for name in summary["figures"])


def test_report_without_pngs_meta_or_successes(tmp_path):
    rows = [row("all-targets", 1, i, t, t, False) for i in range(3) for t in (5, 6)]
    run = write_store(tmp_path / "r", rows, torn=False, meta=False, pngs=False)
    (run / "figures").mkdir()
    (run / "figures" / "examples.png").write_bytes(b"stale")
    summary = report.write_report(run)
    assert "examples" not in summary["figures"]
    assert not (run / "figures" / "examples.png").exists()
    assert summary["class_names"] == [f"class {i}" for i in range(10)]
    (a,) = summary["aggregates"]
    assert (a["success_rate"], a["fooled_any_rate"], a["mean_classes_reached"]) == (
        0.0, 0.0, 0.0)
    assert a["mean_adv_confidence"] is None
    for rel in summary["figures"].values():
        assert_png(run / rel)


def test_nan_probabilities_become_null(tmp_path):
    rows = [row("untargeted", 1, 0, -1, 3, True, conf=float("nan"))]
    run = write_store(tmp_path / "r", rows, torn=False, pngs=False)
    summary = report.write_report(run)
    text = (run / "summary.json").read_text()
    assert "NaN" not in text
    assert summary["aggregates"][0]["mean_adv_confidence"] is None
    assert math.isnan(report.aggregate(rows)[0]["mean_adv_confidence"])


@pytest.mark.parametrize("draw", [report.class_pair_heatmap, report.classes_reached_histogram,
                                  report.success_vs_k, report.success_vs_queries,
                                  report.confidence_histogram])
def test_figures_on_empty_input(tmp_path, draw):
    out = draw([], tmp_path / "sub" / "f.png", NAMES)
    assert out == tmp_path / "sub" / "f.png"
    assert_png(out)


def test_example_grid(run, tmp_path):
    rows = report.load_rows(run)
    picked = report.pick_examples(rows, run)
    # only rows whose original and adversarial PNGs exist, most confident first
    assert [(r["image_id"], r["pixels"]) for r in picked] == [(0, 3), (1, 3)]
    assert_png(report.example_grid(rows, run, tmp_path / "ex.png", NAMES))
    assert report.example_grid(all_targets_rows(), run, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_rows_differing_only_in_loss_are_separate_lines():
    rows = [r for r in untargeted_rows() if r["pixels"] == 1]
    margin = [dict(r, loss="margin", experiment=r["experiment"] + "_m") for r in rows]
    aggs = report.aggregate([dict(r, loss="prob") for r in rows] + margin)
    assert sorted(a["loss"] for a in aggs) == ["margin", "prob"]
    assert "loss" in report.table(aggs).splitlines()[0]


def test_paired_difference_known_answer_and_mcnemar():
    from scipy.stats import binomtest

    from jaxattack.pixels.stats import paired

    # 255 problems: 160 both fooled, 4 only by a, 23 only by b, 68 by neither.
    a = np.array([1] * 160 + [1] * 4 + [0] * 23 + [0] * 68, bool)
    b = np.array([1] * 160 + [0] * 4 + [1] * 23 + [0] * 68, bool)
    p = paired(a, b)
    assert (p["n"], p["a"], p["b"], p["only_a"], p["only_b"]) == (255, 164, 183, 4, 23)
    assert p["diff"] == pytest.approx(19 / 255)
    se = math.sqrt(27 - 19 ** 2 / 255) / 255  # Wald, paired proportions
    assert p["interval"] == pytest.approx((19 / 255 - 1.96 * se, 19 / 255 + 1.96 * se))
    assert p["p_mcnemar"] == pytest.approx(binomtest(23, 27).pvalue)
    assert paired(b, a)["diff"] == pytest.approx(-19 / 255)
    same = paired(a, a)
    assert same["diff"] == 0 and same["interval"] == (0, 0) and same["p_mcnemar"] == 1
    with pytest.raises(ValueError, match="same problems"):
        paired(a, b[:-1])
