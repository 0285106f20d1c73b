"""Train a zoo model on CIFAR-10 with optax; resumable; writes weights + registry entry.

    python -m jaxattack.train --model tiny --time-budget 24
    python -m jaxattack.train --model resnet20 --epochs 30 --cpu-devices 2

Recipe: SGD with Nesterov momentum, weight decay on kernels, a one-cycle learning rate
(linear warm-up to the peak, then linear decay to zero), random crop (reflect-pad 4) and
horizontal flip, optional label smoothing. The batch is split across all devices of a
1-D ``batch`` mesh (on CPU, ``--cpu-devices`` virtual devices). A checkpoint is written
atomically after every epoch and a rerun with the same ``--ckpt-dir`` resumes from it.
``--time-budget`` times a few steps first and picks the epoch count (and so the
schedule) that fits the budget; after every epoch it re-plans from the measured epoch
time, so a run on a busy machine still ends inside the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from jaxattack import data, models

from ..models import registry, weights
from .checkpoints import load_checkpoint, save_checkpoint
from .steps import (
    Config,
    TrainState,
    augment,
    evaluate,
    make_eval_fn,
    make_optimizer,
    make_train_step,
    one_cycle,
)

# ----------------------------------------------------------------------------- driver


def hardware() -> str:
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        cpu = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
        except (OSError, StopIteration):
            pass
        return f"XLA:CPU, {os.cpu_count()} cores ({cpu})"
    return f"{dev.device_kind} x{jax.device_count()}"


def train(cfg: Config) -> dict:
    """Run (or resume) training; return a summary dict (accuracy, times, paths...)."""
    t_start = time.perf_counter()
    say = (lambda *a: print(*a, flush=True)) if cfg.progress else (lambda *a: None)
    src = cfg.data or data.cifar10_default_path()
    if src is None:
        raise FileNotFoundError("no CIFAR-10 found: pass --data PATH (folder or tar layout)")
    x_train, y_train, names = data.load(src, "train", limit=cfg.train_limit)
    x_test, y_test, _ = data.load(src, "test", limit=cfg.test_limit)
    say(f"data: {len(x_train)} train / {len(x_test)} test from {src} "
        f"({time.perf_counter() - t_start:.1f}s)")

    mesh = jax.make_mesh((jax.device_count(),), ("batch",), axis_types=(AxisType.Auto,))
    n_dev = mesh.devices.size
    batch = min(cfg.batch_size, len(x_train)) // n_dev * n_dev
    if batch < 1:
        raise ValueError(f"need at least {n_dev} training images for {n_dev} devices")
    steps_per_epoch = len(x_train) // batch
    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("batch"))

    model = models.build(cfg.model, len(names), cfg.seed)
    prior = _init_from(model, cfg) if cfg.init_from else {}
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    model.eval()
    eval_graphdef = nnx.split(model, nnx.Param, ...)[0]
    logits_fn = make_eval_fn(eval_graphdef)
    n_params = sum(x.size for x in jax.tree.leaves(params))

    ckpt_dir = Path(cfg.ckpt_dir or Path("checkpoints") / cfg.model)
    ckpt_path = ckpt_dir / "last.msgpack"
    meta = {"epoch": 0, "train_seconds": 0.0, "epochs": cfg.epochs, "seed": cfg.seed, **prior}

    tx = make_optimizer(cfg)
    state = TrainState(params, rest, tx.init(params), jnp.zeros((), jnp.int32))
    state = jax.device_put(state, replicated)
    step_fn = make_train_step(graphdef, tx, len(names), cfg.label_smoothing)

    resumed = ckpt_path.is_file()
    if resumed:
        state, meta = load_checkpoint(ckpt_path, state)
        if cfg.init_from and meta.get("init_from") != prior.get("init_from"):
            raise ValueError(
                f"--init-from {cfg.init_from} given, but {ckpt_path} holds another run "
                f"(started from {meta.get('init_from') or 'scratch'}); move it away or pass "
                f"--ckpt-dir")
        state = jax.device_put(state, replicated)
        say(f"resumed {ckpt_path} at epoch {meta['epoch']}/{meta['epochs']}")
    elif cfg.time_budget is not None:
        per_step = _time_steps(step_fn, state, x_train, y_train, batch, sharded)
        epoch_s = per_step * steps_per_epoch * 1.05 + 3  # host overhead, checkpoint
        meta["epochs"] = _plan(cfg, epoch_s, _tail_s(per_step, len(x_test), batch),
                               time.perf_counter() - t_start, meta)
        say(f"time budget {cfg.time_budget} min: {per_step:.3f} s/step, ~{epoch_s:.0f} s/epoch"
            f" -> {meta['epochs']} epochs")
    if meta["epochs"] is None:
        meta["epochs"] = 30
    setup_s = time.perf_counter() - t_start

    epoch = meta["epoch"]
    while epoch < meta["epochs"]:
        epochs = meta["epochs"]
        total_steps = epochs * steps_per_epoch
        t0 = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, epoch])  # order + augmentation of this epoch
        perm = rng.permutation(len(x_train))
        bar = tqdm(range(steps_per_epoch), desc=f"{cfg.model} {epoch + 1}/{epochs}",
                   disable=not cfg.progress, leave=False, mininterval=5, file=sys.stdout)
        losses, accs = [], []
        for i in bar:
            if cfg.max_steps is not None and int(state.step) >= cfg.max_steps:
                break
            idx = perm[i * batch : (i + 1) * batch]
            xb = jax.device_put(augment(rng, x_train[idx]), sharded)
            yb = jax.device_put(y_train[idx].astype(np.int32), sharded)
            lr = np.float32(one_cycle(cfg, int(state.step), total_steps))
            state, loss, acc = step_fn(state, xb, yb, lr)
            losses.append(loss)
            accs.append(acc)
            if i % 20 == 0:
                bar.set_postfix(loss=f"{float(loss):.3f}", acc=f"{float(acc):.3f}")
        bar.close()
        jax.block_until_ready(state)
        epoch_s = time.perf_counter() - t0
        meta["train_seconds"] += epoch_s
        meta["epoch"] = epoch = epoch + 1
        if cfg.time_budget is not None and epoch < epochs:  # re-plan if running slow/fast
            mean_s = meta["train_seconds"] / epoch  # steadier than the last epoch alone
            tail_s = _tail_s(mean_s / steps_per_epoch, len(x_test), batch)
            meta["epochs"] = _plan(cfg, mean_s, tail_s, setup_s, meta)
        meta.setdefault("losses", []).append(float(np.mean(losses)) if losses else None)
        save_checkpoint(ckpt_path, state, meta)
        loss_txt = "-" if meta["losses"][-1] is None else f"{meta['losses'][-1]:.4f}"
        say(f"epoch {epoch}/{epochs}: loss {loss_txt} "
            f"train acc {float(np.mean(accs)) if accs else 0:.4f} "
            f"({epoch_s:.0f}s, total {meta['train_seconds'] / 60:.1f} min)"
            + (f"; re-planned to {meta['epochs']} epochs" if meta["epochs"] != epochs else ""))
        if cfg.max_steps is not None and int(state.step) >= cfg.max_steps:
            break

    acc = evaluate(logits_fn, state.params, state.rest, x_test, y_test, mesh)
    # Totals include the run a fine-tune started from (when its registry entry is known).
    summary = {"model": cfg.model, "test_accuracy": acc, "test_images": len(x_test),
               "epochs": meta["epoch"] + meta.get("prior_epochs", 0),
               "train_seconds": round(meta["train_seconds"] + meta.get("prior_seconds", 0.0), 1),
               "init_from": meta.get("init_from"),
               "params": int(n_params), "losses": meta.get("losses", []),
               "checkpoint": str(ckpt_path)}
    say(f"test accuracy {acc:.4f} on {len(x_test)} images")
    if cfg.out or cfg.register:
        summary.update(_export(cfg, state, eval_graphdef, names, summary))
    return summary


def _init_from(model: nnx.Module, cfg: Config) -> dict:
    """Load ``cfg.init_from`` into ``model``; return what is known of how it was trained."""
    path = Path(cfg.init_from)
    state = nnx.state(model, (nnx.Param, nnx.BatchStat))
    nnx.update(model, weights.restore(path, state, expected_sha256=None))
    digest = weights.sha256(path)
    prior = {"init_from": f"{path.name} (sha256 {digest[:12]}...)"}
    entry = registry.read_registry().get(cfg.model, {})
    if entry.get("sha256") == digest:  # the registered weights: carry their training time
        prior.update(prior_epochs=int(entry.get("epochs", 0)),
                     prior_seconds=float(entry.get("train_seconds", 0.0)))
    return prior


def _time_steps(step_fn, state, x, y, batch, sharded, n: int = 8) -> float:
    """Seconds per training step, timed on a throwaway copy of the state."""
    xb = jax.device_put(x[:batch], sharded)
    yb = jax.device_put(y[:batch].astype(np.int32), sharded)
    lr = np.float32(0.0)
    for _ in range(2):  # compile + warm up
        state, loss, _ = step_fn(state, xb, yb, lr)
    jax.block_until_ready(loss)
    t0 = time.perf_counter()
    for _ in range(n):
        state, loss, _ = step_fn(state, xb, yb, lr)
    jax.block_until_ready(loss)
    return (time.perf_counter() - t0) / n


def _tail_s(per_step: float, n_test: int, batch: int) -> float:
    """Final evaluation (~1/3 of a training step per batch) and export."""
    return per_step / 3 * n_test / batch + 60


def _plan(cfg: Config, epoch_s: float, tail_s: float, setup_s: float, meta: dict) -> int:
    """Total epoch count that fits the budget, given the epochs already done."""
    left = cfg.time_budget * 60 - setup_s - meta["train_seconds"] - tail_s
    more = int(left // epoch_s)
    if meta["epoch"] and meta["epochs"] and meta["epoch"] < meta["epochs"]:
        more = max(1, more)  # finish the decay with at least one more epoch
    return max(1, meta["epoch"] + more)


def _export(cfg: Config, state: TrainState, eval_graphdef, names, summary) -> dict:
    """Write the eval-mode weights (+ registry entry with the sample accuracy)."""
    model = nnx.merge(eval_graphdef, jax.device_get(state.params), jax.device_get(state.rest))
    out = Path(cfg.out or weights.WEIGHTS_DIR / f"{cfg.model}.msgpack")
    out.parent.mkdir(parents=True, exist_ok=True)
    state_to_save = nnx.state(model, (nnx.Param, nnx.BatchStat))
    digest = weights.save(out, state_to_save, cfg.weights_dtype)
    # Accuracy of the *stored* weights (they may be float16) on the built-in sample.
    clf = models.load(cfg.model, weights=out, sha256=digest)
    xs, ys, _ = data.load("sample")
    sample_acc = float((np.asarray(jax.jit(clf.apply_fn)(clf.params, xs)).argmax(-1) == ys).mean())
    if cfg.weights_dtype != "float32":
        x_test, y_test, _ = data.load(cfg.data or data.cifar10_default_path(), "test",
                                      limit=cfg.test_limit)
        preds = np.concatenate([np.asarray(jax.jit(clf.apply_fn)(clf.params, x_test[i:i + 1000])
                                           ).argmax(-1) for i in range(0, len(x_test), 1000)])
        summary["test_accuracy"] = float((preds == y_test).mean())
    entry = {
        "file": out.name,
        "sha256": digest,
        "dtype": cfg.weights_dtype,
        "params": summary["params"],
        "test_accuracy": round(summary["test_accuracy"], 4),
        "test_images": summary["test_images"],
        "sample_accuracy": round(sample_acc, 4),
        "epochs": summary["epochs"],
        "train_seconds": summary["train_seconds"],
        "hardware": hardware(),
        "devices": jax.device_count(),
        "recipe": (f"SGD nesterov m={cfg.momentum} wd={cfg.weight_decay} one-cycle peak lr "
                   f"{cfg.lr * cfg.batch_size / 256:g}, batch {cfg.batch_size}, crop+flip, "
                   f"label smoothing {cfg.label_smoothing}"
                   + (f"; fine-tuned from {summary['init_from']}" if summary.get("init_from")
                      else "")),
        "class_names": list(names),
    }
    if cfg.register and cfg.out is None:
        registry.write_entry(cfg.model, entry)
    print(f"wrote {out} sha256 {digest}; sample accuracy {sample_acc:.4f}", flush=True)
    return {"weights": str(out), "sha256": digest, "sample_accuracy": sample_acc,
            "entry": entry}


# ----------------------------------------------------------------------------- CLI


def parse_args(argv=None, prog: str = "python -m jaxattack.train") -> tuple[Config, int | None]:
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Config()
    p.add_argument("--model", default=d.model, choices=sorted(registry.ARCHITECTURES))
    p.add_argument("--data", default=None, help="folder/tar source (default: shared CIFAR-10)")
    p.add_argument("--epochs", type=int, default=None, help="default 30, or from the budget")
    p.add_argument("--time-budget", type=float, default=None, metavar="MINUTES")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="peak lr at batch 256")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--ckpt-dir", default=None, help="default checkpoints/<model>")
    p.add_argument("--out", default=None, help="weight file (default: the package's, registered)")
    p.add_argument("--no-register", action="store_true",
                   help="do not touch the package: no weight file or registry entry "
                        "(only the checkpoint; --out writes weights elsewhere)")
    p.add_argument("--weights-dtype", default=d.weights_dtype, choices=["float32", "float16"])
    p.add_argument("--init-from", default=None, metavar="WEIGHTS",
                   help="start from this weight file (fresh optimizer and schedule)")
    p.add_argument("--cpu-devices", type=int, default=None,
                   help="virtual CPU devices for data parallelism (default: CPU core count, "
                        "at most 8)")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    cfg = Config(model=a.model, data=a.data, epochs=a.epochs, time_budget=a.time_budget,
                 batch_size=a.batch_size, lr=a.lr, weight_decay=a.weight_decay,
                 label_smoothing=a.label_smoothing, seed=a.seed, train_limit=a.train_limit,
                 test_limit=a.test_limit, max_steps=a.max_steps, ckpt_dir=a.ckpt_dir,
                 out=a.out, register=not a.no_register, weights_dtype=a.weights_dtype,
                 init_from=a.init_from, progress=not a.quiet)
    return cfg, a.cpu_devices


def main(argv=None, prog: str = "python -m jaxattack.train") -> int:
    cfg, cpu_devices = parse_args(argv, prog)
    if cpu_devices is not None and cpu_devices < 1:
        raise ValueError(f"--cpu-devices must be >= 1, got {cpu_devices}")
    n = cpu_devices if cpu_devices is not None else min(os.cpu_count() or 1, 8)
    try:  # only possible before the first JAX computation in this process
        jax.config.update("jax_num_cpu_devices", n)
    except Exception:  # noqa: BLE001 - backend already up: keep its devices
        pass
    summary = train(cfg)
    summary.pop("losses", None)
    print(json.dumps({k: v for k, v in summary.items() if k != "entry"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
