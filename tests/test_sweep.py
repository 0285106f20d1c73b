"""Sweeps: continuous batching equals the plain engine; kill -9 and resume loses nothing."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import jaxattack as ja
from jaxattack import data
from jaxattack.classifier import predict
from jaxattack.data import store as store_mod
from jaxattack.pixels import evaluation, problems
from jaxattack.runs import sweep
from jaxattack.strategies import codec
from tests import sweep_job, toys

ROOT = Path(__file__).resolve().parents[1]
KEY = ("experiment", "image_id", "target")


def _by_key(rows):
    return {tuple(r[k] for k in KEY): r for r in rows}


@pytest.fixture(scope="module")
def reference_store(tmp_path_factory):
    """The kill test's sweep, uninterrupted, in this process (8 devices here)."""
    return sweep_job.run(tmp_path_factory.mktemp("ref"))


@pytest.fixture(scope="module")
def reference(reference_store):
    return reference_store.rows()


def test_select_images_is_balanced_and_prefix_stable():
    labels = np.repeat(np.arange(4), 5)[::-1].copy()
    a, b = data.select_images(labels, 6), data.select_images(labels, 10)
    assert set(a) <= set(b)
    assert np.bincount(labels[b], minlength=4).tolist() == [3, 3, 2, 2]


def test_default_targets_are_other_classes():
    ids = np.arange(500)
    labels = ids % 10
    t = problems.default_targets(0, ids, labels, 10)
    assert (t != labels).all() and set(t) == set(range(10))
    np.testing.assert_array_equal(t, problems.default_targets(0, ids, labels, 10))


def test_sweep_equals_the_plain_engine_per_image(tmp_path):
    clf = toys.small_cnn()
    x = toys.random_images(30, 12, 12)
    y = predict(clf, x).argmax(-1)
    exps = sweep.grid(["toy"], mode=["untargeted", "targeted"], population=16, generations=6)
    st = sweep.run(exps, tmp_path, images=20, batch_size=3, progress=False,
                   load_model=lambda n: clf, load_data=lambda s, split: (x, y, tuple("abcdefghij")))
    sel = data.select_images(y, 20)
    for exp in exps:
        tg = (problems.default_targets(0, sel, y[sel], 10) if exp.config.mode == "targeted"
              else None)
        ref = ja.attack(clf, x[sel], y[sel], exp.config, targets=tg, image_ids=sel)
        rows = sorted((r for r in st.rows() if r["mode"] == exp.config.mode),
                      key=lambda r: r["image_id"])
        assert [r["image_id"] for r in rows] == sel.tolist()
        for i, r in enumerate(rows):
            assert r["pixel_values"] == ref.pixels[i].tolist()
            assert r["success"] == bool(ref.success[i])
            assert r["queries"] == int(ref.queries[i])
            assert r["prob_adv_after"] == float(ref.prob_adv_after[i])
            # what forward="auto" chose for this model, k and image shape (timed)
            assert r["forward_used"] == evaluation.auto_choice(
                clf, codec.PixelSpace(exp.config.pixels, 12, 12, 3), 16).forward


@pytest.mark.slow
def test_saved_pngs_still_fool_the_model(tmp_path):
    clf = toys.planted()
    x = toys.random_images(6)
    exp = sweep.Experiment("planted", ja.AttackConfig(population=100, generations=60))
    st = sweep.run([exp], tmp_path, images=6, load_model=lambda n: clf, progress=False,
                   load_data=lambda s, split: (x, np.zeros(6, int), ("a", "b", "c")))
    rows = st.rows()
    assert len(rows) == 6 and all(r["success"] and r["png"] for r in rows)
    adv = np.stack([store_mod.load_png(tmp_path / r["png"]) for r in rows])
    assert (predict(clf, adv).argmax(-1) != 0).all()
    orig = store_mod.load_png(tmp_path / rows[0]["png"].replace("_adv", "_orig"))
    np.testing.assert_array_equal(orig, x[rows[0]["image_id"]])
    assert (tmp_path / rows[0]["png"].replace("_adv", "_crop")).exists()


def test_torn_final_line_is_skipped_and_repaired(tmp_path):
    st = store_mod.ResultStore(tmp_path)
    st.append([{"experiment": "e", "image_id": 1, "target": -1}])
    with open(st.results, "a") as f:
        f.write('{"experiment": "e", "ima')
    assert len(st.rows()) == 1
    st.trim()
    st.append([{"experiment": "e", "image_id": 2, "target": -1}])
    assert [r["image_id"] for r in st.rows()] == [1, 2]
    st.results.write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(ValueError, match="corrupt row"):
        st.rows()


def _lines(path):
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.slow
def test_kill_and_resume_loses_and_duplicates_nothing(tmp_path, reference):
    out = tmp_path / "run"
    results = out / "results.jsonl"
    cmd = [sys.executable, "-m", "tests.sweep_job", str(out)]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    for kill_after in (8, 200):  # rows on disk before each kill -9
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
        deadline = time.monotonic() + 120
        while _lines(results) < kill_after and proc.poll() is None:
            assert time.monotonic() < deadline, "the sweep made no progress"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert 0 < _lines(results) < len(reference), "the kill did not land mid-sweep"
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    rows = store_mod.ResultStore(out).rows()
    keys = [tuple(r[k] for k in KEY) for r in rows]
    assert len(keys) == len(set(keys)) == len(reference) == 800
    got, want = _by_key(rows), _by_key(reference)
    assert got.keys() == want.keys()
    for k in want:
        assert json.dumps(got[k], sort_keys=True) == json.dumps(want[k], sort_keys=True)


@pytest.mark.slow
def test_two_processes_with_jax_distributed_equal_one(tmp_path, reference):
    out = tmp_path / "run"
    port = 20000 + os.getpid() % 20000
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.sweep_job", str(out), "1",
                               f"localhost:{port}", "2", str(i)], cwd=ROOT, env=env)
             for i in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    st = store_mod.ResultStore(out)
    assert [p.name for p in st.shards()] == ["results.p0.jsonl", "results.p1.jsonl"]
    shard_keys = [{tuple(r[k] for k in KEY) for r in store_mod.read_rows(p)[0]}
                  for p in st.shards()]
    assert shard_keys[0] and shard_keys[1] and not shard_keys[0] & shard_keys[1]
    got, want = _by_key(st.rows()), _by_key(reference)
    assert len(st.rows()) == len(got) == len(want)
    for k in want:
        assert json.dumps(got[k], sort_keys=True) == json.dumps(want[k], sort_keys=True)


@pytest.mark.slow
def test_rerun_of_a_finished_sweep_does_nothing(tmp_path, reference_store):
    out = tmp_path / "run"
    shutil.copytree(reference_store.root, out)
    before = (out / "results.jsonl").read_bytes()
    sweep_job.run(out)
    assert (out / "results.jsonl").read_bytes() == before


def test_sweep_checks_its_inputs_like_attack(tmp_path):
    clf = toys.planted()  # 3 classes
    x = toys.random_images(4)
    load = lambda labels: lambda s, split: (x, np.asarray(labels), ("a", "b", "c", "d", "e"))
    exp = [sweep.Experiment("planted", ja.AttackConfig(population=8, generations=2))]
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        sweep.run(exp, tmp_path / "a", images=4, load_model=lambda n: clf, progress=False,
                  load_data=load([0, 1, 4, 2]))
    with pytest.raises(ValueError, match="exceeds the"):
        sweep.run([sweep.Experiment("planted", ja.AttackConfig(pixels=10**6))], tmp_path / "b",
                  images=4, load_model=lambda n: clf, progress=False, load_data=load([0, 1, 2, 0]))
    # More processes than images: process 3 of 4 has no image and writes nothing.
    st = sweep.run(exp, tmp_path / "c", images=3, process=(3, 4), load_model=lambda n: clf,
                   progress=False, load_data=load([0, 1, 2, 0]))
    assert st.rows() == []


def test_predict_on_no_images_is_empty():
    p = predict(toys.planted(), np.zeros((0, 8, 8, 3), np.uint8))
    assert p.shape == (0, 3) and p.dtype == np.float32


def test_bad_sweep_arguments(tmp_path):
    with pytest.raises(ValueError, match="save_images"):
        sweep.run([], tmp_path, save_images="some")
    with pytest.raises(ValueError, match="images must be >= 1"):
        sweep.run([], tmp_path, images=0)
    with pytest.raises(ValueError, match="pixels must be >= 1"):
        sweep.grid(["tiny"], pixels=[0])


_HOLD = """
import sys, time
from jaxattack.data.store import ResultStore
shard = (int(sys.argv[2]), int(sys.argv[3]))
with ResultStore(sys.argv[1], shard=shard).writing():
    print("locked", flush=True)
    time.sleep(60)
"""


def _holder(out, i=0, n=1):
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(out), str(i), str(n)],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_one_writer_per_run_folder(tmp_path):
    out = tmp_path / "run"
    holder = _holder(out)
    try:
        with pytest.raises(store_mod.StoreLocked, match=f"run folder {out} is being written by "
                                                        f"pid {holder.pid} on "):
            with store_mod.ResultStore(out).writing():
                pass
        with pytest.raises(store_mod.StoreLocked):  # nor may a process of a multi-process job
            with store_mod.ResultStore(out, shard=(1, 2)).writing():
                pass
    finally:
        holder.kill()
        holder.wait()
    with store_mod.ResultStore(out).writing():  # released when the holder died
        pass


def test_processes_of_one_job_write_their_own_shards_at_once(tmp_path):
    out = tmp_path / "run"
    holder = _holder(out, 0, 2)
    try:
        with store_mod.ResultStore(out, shard=(1, 2)).writing() as st:
            st.append([{"experiment": "e", "image_id": 1, "target": -1}])
        with pytest.raises(store_mod.StoreLocked, match="pid"):  # the same shard twice
            with store_mod.ResultStore(out, shard=(0, 2)).writing():
                pass
        with pytest.raises(store_mod.StoreLocked):  # a one-process run beside the job
            with store_mod.ResultStore(out).writing():
                pass
    finally:
        holder.kill()
        holder.wait()


def test_a_second_sweep_on_the_same_folder_exits_1_and_writes_nothing(tmp_path, capsys):
    from jaxattack import cli

    out = tmp_path / "run"
    holder = _holder(out)
    try:
        rc = cli.main(["sweep", "--models", str(ROOT / "tests" / "cli_model.py") + ":classifier",
                       "--pixels", "1", "--population", "8", "--generations", "2", "--images",
                       "2", "--out", str(out), "--no-progress"])
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and str(out) in err and f"pid {holder.pid}" in err
    assert not (out / "results.jsonl").exists()


def test_repair_quarantines_bad_lines_and_keeps_every_good_row(tmp_path, capsys):
    from jaxattack import cli

    out = tmp_path / "run"
    st = store_mod.ResultStore(out)
    good = [{"experiment": "e", "image_id": i, "target": -1} for i in range(4)]
    st.append(good[:2])
    with open(st.results, "ab") as f:
        f.write(b'{"experiment": "e", "im\n[1, 2]\n')  # a corrupt row and a non-object
    st.append(good[2:])
    with open(st.results, "ab") as f:
        f.write(b'{"torn": ')  # and a torn final line
    with pytest.raises(ValueError, match=r"results.jsonl:3: corrupt row .*jaxattack repair"):
        st.rows()
    assert cli.main(["repair", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "results.jsonl: moved 3 bad line(s) to results.quarantine.jsonl" in printed
    assert st.rows() == good
    assert (out / "results.quarantine.jsonl").read_bytes() == (
        b'{"experiment": "e", "im\n[1, 2]\n{"torn": \n')
    assert [p.name for p in st.shards()] == ["results.jsonl"]  # quarantine is not a shard
    assert store_mod.repair(out) == {"results.jsonl": 0}
    assert cli.main(["repair", str(tmp_path / "nothing")]) == 1
