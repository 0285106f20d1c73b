"""The one-pixel oracle and the robustness cascade (``jaxattack evaluate``)."""

import json
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxattack as ja
from jaxattack.runs import robust
from jaxattack.strategies.oracle import candidates_total, oracle_budget
from tests import robust_job, toys

ROOT = Path(__file__).resolve().parents[1]


def grey_only(height=8, width=8):
    """Class 0 unless pixel (PLANTED_X, PLANTED_Y) is mid-grey (every channel in 100..156):
    one pixel fools it, but no corner of the colour cube does."""

    def apply_fn(params, x):
        px = x[:, toys.PLANTED_Y, toys.PLANTED_X].astype(jnp.float32)
        grey = jnp.prod(jax.nn.sigmoid((px - 100) / 4) * jax.nn.sigmoid((156 - px) / 4), -1)
        return jnp.stack([jnp.full_like(grey, 3.0), 8 * grey], -1)

    return ja.Classifier.from_logits(apply_fn, {}, 2, input_shape=(height, width, 3),
                                     name="grey_only")


def _oracle(population, generations, early_stop="success", levels=None):
    return ja.AttackConfig(strategy="oracle", population=population, generations=generations,
                           early_stop=early_stop, loss="margin",
                           strategy_params={"levels": levels} if levels else {})


def test_oracle_finds_the_planted_pixel_in_exactly_8hw_queries():
    total = candidates_total(8, 8, 3)
    assert total == 8 * 8 * 8 and oracle_budget(8, 8, 3, max_population=64) == (64, 7)
    x, y = toys.random_images(3), np.zeros(3, int)
    full = ja.attack(toys.planted(), x, y, _oracle(64, 7, early_stop="none"))
    assert full.success.all() and (full.queries == 8 * 8 * 8).all()
    np.testing.assert_array_equal(full.pixels[:, 0, :2], [[toys.PLANTED_X, toys.PLANTED_Y]] * 3)
    assert set(full.pixels[:, 0, 2:].ravel()) <= {0, 255}
    # With early stop, the generation holding the first flip is the last: position 21
    # (y * W + x), colour (0, 0, 255) = index 1, so candidate 21 * 8 + 1 = 169, in
    # generation 169 // 64 = 2: 3 generations of 64.
    early = ja.attack(toys.planted(), x, y, _oracle(64, 7))
    assert early.success.all() and (early.queries == 64 * (169 // 64 + 1)).all()


def test_oracle_says_not_vulnerable_when_no_corner_flips():
    x, y = toys.random_images(2), np.zeros(2, int)
    r = ja.attack(grey_only(), x, y, _oracle(*oracle_budget(8, 8, 3, max_population=64)))
    assert not r.success.any() and (r.queries == 8 * 8 * 8).all()
    # A finer grid (levels 5: 0, 64, 128, 191, 255) holds 128 in every channel.
    fine = ja.attack(grey_only(), x, y, _oracle(*oracle_budget(8, 8, 3, 5), levels=5))
    assert fine.success.all() and (fine.pixels[:, 0, 2:] == 128).all()
    with pytest.raises(ValueError, match="levels must be an int in"):
        _oracle(64, 7, levels=1)


def _evaluate(out, **kw):
    return robust_job.evaluate(out, **kw)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    return out, _evaluate(out)


def _stage_rows(out, stage):
    rows = ja.store.ResultStore(out).rows()
    return {r["image_id"]: r for r in rows if r["experiment"] == stage["experiment"]}


@pytest.mark.slow
def test_cascade_never_gives_a_fooled_image_to_the_next_attack(evaluated):
    out, res = evaluated
    fooled_before = set()
    for per_k in res["per_k"]:
        for stage in per_k["attacks"]:
            rows = _stage_rows(out, stage)
            assert len(rows) == stage["attacked"]
            assert not fooled_before & set(rows), stage
            fooled_before |= {i for i, r in rows.items() if r["success"]}
    # every attack fooled something (the test exercises the cascade)
    assert all(s["fooled"] > 0 for s in res["per_k"][0]["attacks"])


def test_robust_accuracy_below_clean_monotone_and_the_worst_case(evaluated):
    out, res = evaluated
    acc = [res["robust_accuracy"][str(k)] for k in (1, 2)]
    assert acc == sorted(acc, reverse=True) and acc[0] <= res["clean_accuracy"] < 1
    worst = robust.per_image_robust(out, res)
    for per_k in res["per_k"]:
        assert len(worst[per_k["k"]]) == per_k["robust"]
        assert per_k["robust_accuracy"] == per_k["robust"] / res["n_images"]
        assert per_k["attacks"][-1]["robust_accuracy"] == per_k["robust_accuracy"]
    assert [s["attack"] for s in res["per_k"][1]["attacks"]] == ["sparse-rs", "de"]  # no oracle
    for name in ("evaluation.md", "robust_accuracy.png", "timing.json"):
        assert (out / name).stat().st_size > 0
    assert "| 1 | oracle |" in (out / "evaluation.md").read_text()


def test_rerun_does_nothing_and_gives_the_same_json(evaluated):
    out, res = evaluated
    before = (out / "results.jsonl").read_bytes()
    assert _evaluate(out) == res
    assert (out / "results.jsonl").read_bytes() == before


@pytest.mark.slow
def test_killed_evaluation_resumes_to_the_same_json(tmp_path, evaluated):
    _, reference = evaluated
    out = tmp_path / "killed"
    results = out / "results.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "tests.robust_job", str(out)], cwd=ROOT)
    try:
        while not (results.exists() and results.read_bytes().count(b"\n") >= 12):
            assert proc.poll() is None, "the job ended before the kill"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    assert not (out / robust.EVALUATION).exists()
    assert _evaluate(out) == reference
    assert json.loads((out / robust.EVALUATION).read_text()) == reference


def test_bad_ensembles_and_ks_get_one_clear_line():
    for spec, msg in (([], "the ensemble is empty"), ("", "the ensemble is empty"),
                      (["pgd"], "unknown attack 'pgd'; attacks are learned-rs, sparse-rs"),
                      (["de:0"], "budget of de must be > 0 queries, got 0"),
                      (["de:100"], r"budget of de must be at least its population \(400"),
                      (["de:x"], "budget of de must be an integer")):
        with pytest.raises(ValueError, match=msg):
            robust.parse_attacks(spec)
    with pytest.raises(ValueError, match="budget of sparse-rs must be > 0 queries, got -5"):
        robust.parse_attacks("sparse-rs", budget=-5)
    with pytest.raises(ValueError, match=r"k=65 is not a number of pixels of a 8x8 image"):
        robust._check_ks([1, 65], (8, 8, 3))
    with pytest.raises(ValueError, match="ks is empty"):
        robust._check_ks([], (8, 8, 3))


@pytest.mark.parametrize("args,msg", [
    (["--pixels", "1,2000"], "k=2000 is not a number of pixels of a 32x32 image (1..1024)"),
] + [pytest.param(*case, marks=pytest.mark.slow) for case in [  # one CLI start each: ~3 s
    (["--attacks", "de,pgd"], "unknown attack 'pgd'"),
    (["--attacks", ","], "the ensemble is empty"),
    (["--budget", "0"], "budget of learned-rs must be > 0 queries, got 0"),
]])
def test_cli_bad_input_is_one_line(tmp_path, args, msg):
    proc = subprocess.run([sys.executable, "-m", "jaxattack.cli", "evaluate", "--out",
                           str(tmp_path / "e"), "--images", "2", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and msg in lines[0], proc.stderr
    assert not (tmp_path / "e" / "results.jsonl").exists()


@pytest.mark.slow
def test_cli_evaluate_writes_and_prints_the_table(tmp_path):
    from jaxattack import cli

    out, model = tmp_path / "e", str(ROOT / "tests" / "cli_model.py") + ":classifier"
    assert cli.main(["evaluate", "--model", model, "--out", str(out),
                     "--images", "3", "--pixels", "1,2", "--attacks", "sparse-rs:40",
                     "--no-progress"]) == 0
    res = json.loads((out / robust.EVALUATION).read_text())
    assert list(res["robust_accuracy"]) == ["1", "2"] and res["n_images"] == 3
    assert [a["name"] for a in res["attacks"]] == ["sparse-rs"]


@pytest.mark.slow
def test_timing_is_kept_when_an_evaluation_is_interrupted(tmp_path, monkeypatch):
    real, calls = robust.sweep.run, []

    def interrupted_second_stage(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(robust.sweep, "run", interrupted_second_stage)
    with pytest.raises(KeyboardInterrupt):
        _evaluate(tmp_path)
    first = json.loads((tmp_path / robust.TIMING).read_text())
    assert set(first) == {"k1/sparse-rs", "k1/de"} and first["k1/sparse-rs"] > 0
    monkeypatch.undo()
    _evaluate(tmp_path)  # resumes: the stored stage's time is kept and added to
    after = json.loads((tmp_path / robust.TIMING).read_text())
    assert after["k1/sparse-rs"] >= first["k1/sparse-rs"] and "k2/de" in after


def test_markdown_marks_stages_without_a_recorded_time(evaluated):
    _, res = evaluated
    md = robust.markdown(res, {})  # e.g. an old run killed before timing.json existed
    assert "| 1 | sparse-rs | 40 |" in md and md.count(" | - |") >= 2
    assert "stages without a recorded time" in md
    timing = {s["stage"]: 2.0 for r in res["per_k"] for s in r["attacks"]}
    assert "without a recorded time" not in robust.markdown(res, timing)
