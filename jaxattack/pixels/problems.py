"""Problems: which (image, target) pairs a mode attacks, their keys, and their arrays.

A problem is one image attacked toward one goal: its true class (untargeted,
``target = -1``) or a target class. Its PRNG key is
``fold_in(fold_in(key(seed), image_id), target + 1)``, so a result depends only on
(seed, image id, target, config), never on batch position or order.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxattack.pixels import inputs

MODES = ("untargeted", "targeted", "all-targets")


class ImageProblem(NamedTuple):
    """The arrays of problems (leading problem axis when batched)."""

    image: np.ndarray  # uint8 [H, W, C]
    label: np.ndarray  # int32 []: the true class
    target: np.ndarray  # int32 []: the target class, -1 = untargeted


def rows(mode: str, labels: np.ndarray, targets, num_classes: int):
    """``(image_index, target)`` arrays, one entry per problem of ``mode``."""
    b = len(labels)
    if mode == "untargeted":
        if targets is not None:
            raise ValueError("targets were given but mode='untargeted'; use mode='targeted'")
        return np.arange(b), np.full(b, -1, np.int32)
    if mode == "targeted":
        if targets is None:
            raise ValueError("mode='targeted' needs targets: one target class per image")
        t = inputs.labels(targets, b, num_classes, what="targets")
        same = np.flatnonzero(t == labels)
        if same.size:
            raise ValueError(f"target equals the label for image(s) {same[:5].tolist()}")
        return np.arange(b), t
    if mode != "all-targets":
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if targets is not None:
        raise ValueError("mode='all-targets' attacks every other class; do not pass targets")
    img = np.repeat(np.arange(b), num_classes)
    tgt = np.tile(np.arange(num_classes, dtype=np.int32), b)
    keep = tgt != labels[img]
    return img[keep], tgt[keep]


def keys(seed: int, image_ids: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """uint32 ``[P, 2]`` keys: ``fold_in(fold_in(key(seed), image_id), target + 1)``."""
    if not len(image_ids):
        return np.zeros((0, 2), np.uint32)
    base = jax.random.PRNGKey(seed)
    per_image = jax.vmap(lambda i: jax.random.fold_in(base, i))(
        jnp.asarray(image_ids, jnp.uint32))
    out = jax.vmap(jax.random.fold_in)(per_image, jnp.asarray(targets + 1, jnp.uint32))
    return np.asarray(out)


def default_targets(seed: int, image_ids: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """For ``targeted`` runs without targets: a fixed pseudo-random other class per
    (seed, image id)."""
    mix = (image_ids.astype(np.uint64) * np.uint64(2654435761)
           + np.uint64(seed) * np.uint64(40503)) % np.uint64(k - 1)
    return ((labels + 1 + mix.astype(np.int64)) % k).astype(np.int32)


def image_problems(images: np.ndarray, labels: np.ndarray, image_index: np.ndarray,
                   targets: np.ndarray) -> ImageProblem:
    """The batched arrays of the problems ``(image_index, targets)``."""
    return ImageProblem(images[image_index], np.asarray(labels[image_index], np.int32),
                        np.asarray(targets, np.int32))
