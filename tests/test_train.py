"""jaxattack.train: a few steps lower the loss; an interrupted run resumes exactly."""

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from PIL import Image

from jaxattack import data, models, train


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    """16 train + 8 test PNGs from the built-in sample, in split/label/ layout."""
    x, y, names = data.load("sample", per_class_limit=3)
    root = tmp_path_factory.mktemp("cifar")
    for split, idx in (("train", range(0, 30, 2)), ("test", range(1, 30, 4))):
        for i in idx:
            d = root / split / names[y[i]]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i]).save(d / f"{i:04d}.png")
    return root


def test_augment_crops_and_flips():
    const = np.full((4, 32, 32, 3), 7, np.uint8)  # reflect padding keeps it constant
    np.testing.assert_array_equal(train.augment(np.random.default_rng(0), const), const)
    x = np.random.default_rng(1).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    out = train.augment(np.random.default_rng(0), x)
    assert out.shape == x.shape and out.dtype == np.uint8
    same = [np.array_equal(o, i) for o, i in zip(out, x, strict=True)]
    flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, x, strict=True)]
    assert sum(same) + sum(flipped) < 8  # a centre crop has odds 1/81


def test_two_steps_lower_the_loss():
    cfg = train.Config(lr=0.05, warmup=0.0, label_smoothing=0.0)
    model = models.build("tiny")
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = train.make_optimizer(cfg)
    mesh = jax.make_mesh((jax.device_count(),), ("batch",), axis_types=(AxisType.Auto,))
    state = jax.device_put(
        train.TrainState(params, rest, tx.init(params), np.zeros((), np.int32)),
        NamedSharding(mesh, P()))
    x, y, _ = data.load("sample", per_class_limit=2)
    x = x[:16]
    y = y[:16].astype(np.int32)
    step = train.make_train_step(graphdef, tx, 10, 0.0)
    losses = []
    for _ in range(3):  # the loss returned is the one before the update
        state, loss, _ = step(state, x, y, np.float32(0.05))
        losses.append(float(loss))
    assert losses[2] < losses[0], losses
    assert int(state.step) == 3


def _cfg(root, tmp_path, epochs=2, **kw):
    return train.Config(model="tiny", data=str(root), epochs=epochs, batch_size=8, lr=0.05,
                        ckpt_dir=str(tmp_path / "ckpt"), out=str(tmp_path / "w.msgpack"),
                        register=False, progress=False, **kw)


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_weights(tiny_cifar, tmp_path):
    # Uninterrupted: 2 epochs x 1 step (15 images, batch 8).
    full = train.train(_cfg(tiny_cifar, tmp_path / "a"))
    assert full["epochs"] == 2 and full["test_images"] == 8
    # Interrupted after the first step, then resumed from the checkpoint.
    part = train.train(_cfg(tiny_cifar, tmp_path / "b", max_steps=1))
    assert part["epochs"] == 1
    resumed = train.train(_cfg(tiny_cifar, tmp_path / "b"))
    assert resumed["epochs"] == 2
    assert resumed["losses"][0] == part["losses"][0]
    a = models.load("tiny", weights=full["weights"], sha256=full["sha256"])
    b = models.load("tiny", weights=resumed["weights"])
    for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(u, v)
    assert full["sha256"] == resumed["sha256"]


@pytest.mark.slow
def test_init_from_starts_at_the_given_weights(tiny_cifar, tmp_path):
    first = train.train(_cfg(tiny_cifar, tmp_path / "a", epochs=1))
    # Zero steps: the exported weights are exactly the ones it started from.
    again = train.train(_cfg(tiny_cifar, tmp_path / "b", epochs=1, max_steps=0,
                             init_from=first["weights"]))
    assert again["sha256"] == first["sha256"]
    assert again["init_from"].startswith("w.msgpack (sha256 " + first["sha256"][:12])
    assert "fine-tuned from w.msgpack" in again["entry"]["recipe"]
    fresh = train.train(_cfg(tiny_cifar, tmp_path / "c", epochs=1, max_steps=0))
    assert fresh["sha256"] != first["sha256"] and fresh["init_from"] is None
    # A checkpoint of another run (from scratch) in the folder is not silently resumed.
    with pytest.raises(ValueError, match="holds another run"):
        train.train(_cfg(tiny_cifar, tmp_path / "a", epochs=1, init_from=first["weights"]))


@pytest.mark.slow
def test_time_budget_picks_an_epoch_count(tiny_cifar, tmp_path, capsys):
    cfg = _cfg(tiny_cifar, tmp_path, time_budget=1.5, max_steps=1)
    cfg.epochs, cfg.progress = None, True
    out = train.train(cfg)
    assert "time budget" in capsys.readouterr().out
    assert out["epochs"] == 1


def test_one_cycle_schedule():
    cfg = train.Config(lr=0.2, batch_size=256, warmup=0.2)
    lrs = [train.one_cycle(cfg, s, 100) for s in range(101)]
    assert lrs[0] == pytest.approx(0.02) and max(lrs) == pytest.approx(0.2)
    assert int(np.argmax(lrs)) == 20 and lrs[100] == 0.0
    assert np.all(np.diff(lrs[20:]) <= 0)


def test_budget_plan_and_replan():
    cfg = train.Config(time_budget=10)
    meta = {"epoch": 0, "epochs": None, "train_seconds": 0.0}
    assert train._plan(cfg, epoch_s=60, tail_s=60, setup_s=30, meta=meta) == 8
    # Four epochs took 100 s each instead of 60: shrink the plan, keep >= 1 more epoch.
    meta = {"epoch": 4, "epochs": 8, "train_seconds": 400.0}
    assert train._plan(cfg, epoch_s=100, tail_s=60, setup_s=30, meta=meta) == 5
    meta = {"epoch": 4, "epochs": 8, "train_seconds": 600.0}
    assert train._plan(cfg, epoch_s=150, tail_s=60, setup_s=30, meta=meta) == 5


def test_cli_parses_options():
    cfg, ndev = train.parse_args(["--model", "resnet20", "--time-budget", "60",
                                  "--cpu-devices", "2", "--no-register",
                                  "--init-from", "w.msgpack"])
    assert cfg.model == "resnet20" and cfg.time_budget == 60 and ndev == 2
    assert cfg.init_from == "w.msgpack"
    assert not cfg.register
    with pytest.raises(SystemExit):
        train.parse_args(["--model", "nope"])
