"""Fitness, success and early stop from class probabilities alone (black box).

A problem is untargeted when ``target < 0``. Fitness is minimised:
untargeted -> ``p[label]``; targeted -> ``-p[target]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

EARLY_STOPS = ("success", "paper", "none")
LOSSES = ("prob", "margin")


def _pick(probs: jax.Array, cls: jax.Array) -> jax.Array:
    return jnp.take_along_axis(probs, jnp.maximum(cls, 0)[..., None], axis=-1)[..., 0]


def fitness(probs: jax.Array, label: jax.Array, target: jax.Array,
            loss: str = "prob") -> jax.Array:
    """``probs [..., K]``, ``label``/``target`` broadcastable to ``probs.shape[:-1]``.

    ``prob`` (the paper): ``p[label]``, or ``-p[target]``. ``margin`` (Sparse-RS):
    ``p[label] - max_{j != label} p[j]``, or ``max_{j != target} p[j] - p[target]``;
    negative exactly when the attack succeeds (up to ties).
    """
    if loss == "prob":
        return jnp.where(target >= 0, -_pick(probs, target), _pick(probs, label))
    if loss != "margin":
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    cls = jnp.where(target >= 0, target, label)
    own = _pick(probs, cls)
    others = jnp.where(jnp.arange(probs.shape[-1]) == cls[..., None], -jnp.inf, probs).max(-1)
    return jnp.where(target >= 0, others - own, own - others)


def success(probs, label, target):
    """Untargeted: the top class is not the label. Targeted: the top class is the target."""
    top = jnp.argmax(probs, axis=-1)
    return jnp.where(target >= 0, top == target, top != label)


def should_stop(probs, label, target, early_stop: str):
    """Per-candidate early-stop flag.

    ``success``: on success. ``paper``: the paper's thresholds (targeted
    ``p[target] > 0.5``; untargeted ``p[label] < 0.05``, with K <= 20 classes this implies
    success). ``none``: never (spend the whole budget).
    """
    if early_stop == "success":
        return success(probs, label, target)
    if early_stop == "paper":
        hit = jnp.where(target >= 0, _pick(probs, target) > 0.5, _pick(probs, label) < 0.05)
        return hit & success(probs, label, target)
    if early_stop == "none":
        return jnp.zeros(probs.shape[:-1], bool)
    raise ValueError(f"early_stop must be one of {EARLY_STOPS}, got {early_stop!r}")
