"""Training pieces: the config, optimizer, schedule, augmentation and jitted steps."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


@dataclasses.dataclass
class Config:
    model: str = "tiny"
    data: str | None = None  # None: cifar10_default_path()
    epochs: int | None = None  # None with no budget: 30
    time_budget: float | None = None  # minutes, for the whole run
    batch_size: int = 256
    lr: float = 0.2  # peak learning rate for batch 256 (scaled linearly with batch)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup: float = 0.15  # fraction of steps spent warming up
    label_smoothing: float = 0.1
    seed: int = 0
    train_limit: int | None = None
    test_limit: int | None = None
    max_steps: int | None = None  # stop after this many steps in total (tests)
    ckpt_dir: str | None = None  # default checkpoints/<model>
    out: str | None = None  # weight file to write; default assets/weights/<model>.msgpack
    register: bool = True  # add the registry entry for ``out``
    weights_dtype: str = "float32"
    init_from: str | None = None  # weight file to start from (fine-tuning): fresh optimizer
    progress: bool = True


class TrainState(NamedTuple):
    params: Any
    rest: Any  # BatchStats (and anything else that is not a Param)
    opt_state: Any
    step: jax.Array


# ----------------------------------------------------------------------------- pieces


def make_optimizer(cfg: Config) -> optax.GradientTransformation:
    """Weight decay on kernels + Nesterov momentum; the learning rate is applied in the step.

    ``optax.sgd`` is exactly this chain followed by a scale of ``-lr``. Keeping the
    learning rate out of the optimizer lets the host re-plan the one-cycle schedule
    when a time budget runs short, without recompiling.
    """
    decay_mask = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)  # kernels only
    return optax.chain(
        optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask),
        optax.trace(decay=cfg.momentum, nesterov=True),
    )


def one_cycle(cfg: Config, step: int, total_steps: int) -> float:
    """Linear warm-up from peak/10 to the peak, then linear decay to zero."""
    peak = cfg.lr * cfg.batch_size / 256
    warm = max(1, int(cfg.warmup * total_steps))
    if step < warm:
        return peak / 10 + (peak - peak / 10) * step / warm
    return peak * max(0.0, 1 - (step - warm) / max(1, total_steps - warm))


def augment(rng: np.random.Generator, images: np.ndarray) -> np.ndarray:
    """Random crop from a 4-pixel reflect padding, and a random horizontal flip.

    Done on the host in numpy: it overlaps with the device's (asynchronous) step.
    """
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(1, 2))
    dy, dx = rng.integers(0, 9, n), rng.integers(0, 9, n)
    out = windows[np.arange(n), dy, dx].transpose(0, 2, 3, 1)  # [n, C, h, w] -> NHWC
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, :, ::-1]
    return np.ascontiguousarray(out)


def make_train_step(graphdef, tx, num_classes: int, label_smoothing: float):
    def loss_fn(params, rest, images, labels):
        model = nnx.merge(graphdef, params, rest, copy=True)  # fresh Variables in this trace
        logits = model(images)
        target = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
        loss = optax.softmax_cross_entropy(logits, target).mean()
        _, _, new_rest = nnx.split(model, nnx.Param, ...)
        acc = (logits.argmax(-1) == labels).mean()
        return loss, (new_rest, acc)

    @jax.jit
    def step(state: TrainState, images, labels, lr):
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (rest, acc)), grads = grad_fn(state.params, state.rest, images, labels)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = jax.tree.map(lambda p, u: p - lr * u, state.params, updates)
        return TrainState(params, rest, opt_state, state.step + 1), loss, acc

    return step


def make_eval_fn(eval_graphdef):
    @jax.jit
    def logits(params, rest, images):
        return nnx.merge(eval_graphdef, params, rest)(images)

    return logits


def evaluate(logits_fn, params, rest, images, labels, mesh, batch: int = 1000) -> float:
    """Top-1 accuracy over all of ``images`` (last batch padded to the device count)."""
    n_dev = mesh.devices.size
    batch = max(n_dev, batch // n_dev * n_dev)
    sharding = NamedSharding(mesh, P("batch"))
    correct = 0
    for i in range(0, len(images), batch):
        x = images[i : i + batch]
        pad = -len(x) % n_dev
        xp = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
        pred = np.asarray(logits_fn(params, rest, jax.device_put(xp, sharding)).argmax(-1))
        correct += int((pred[: len(x)] == labels[i : i + batch]).sum())
    return correct / len(images)


