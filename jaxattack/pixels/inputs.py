"""Input checks: clear ``TypeError``/``ValueError`` before anything reaches JAX."""

from __future__ import annotations

import numpy as np

from jaxattack.classifier import Classifier, predict


def _name(x) -> str:
    return getattr(getattr(x, "dtype", None), "name", type(x).__name__)


def images(x) -> np.ndarray:
    """uint8 ``[B, H, W, C]``; integer arrays within 0..255 are accepted and cast."""
    try:
        a = np.asarray(x)
    except Exception as e:  # ragged lists and the like
        raise TypeError(f"images must be an array, got {type(x).__name__}: {e}") from None
    if a.ndim != 4:
        hint = " (add a batch axis: images[None])" if a.ndim == 3 else ""
        raise ValueError(f"images must have shape [batch, height, width, channels], "
                         f"got shape {a.shape}{hint}")
    if a.shape[0] == 0:
        raise ValueError("images is empty")
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind in "iu":
        if a.size and (a.min() < 0 or a.max() > 255):
            raise ValueError(f"image values must lie in 0..255, got {a.min()}..{a.max()}")
        return a.astype(np.uint8)
    raise TypeError(f"images must be uint8 (0..255), got dtype {_name(a)}; for floats in "
                    f"[0, 1] pass (x * 255).round().astype(np.uint8)")


def labels(y, batch: int, num_classes: int, what: str = "labels") -> np.ndarray:
    """int32 ``[batch]`` with values in ``[0, num_classes)``."""
    a = np.asarray(y)
    if a.shape != (batch,):
        raise ValueError(f"{what} must have shape ({batch},) to match the images, got {a.shape}")
    if a.dtype.kind not in "iu":
        raise TypeError(f"{what} must be integers, got dtype {_name(a)}")
    if a.size and (a.min() < 0 or a.max() >= num_classes):
        raise ValueError(f"{what} must lie in [0, {num_classes}), got {a.min()}..{a.max()}")
    return a.astype(np.int32)


def image_ids(ids, batch: int) -> np.ndarray:
    """Unique non-negative ints (they seed each image's key)."""
    if ids is None:
        return np.arange(batch, dtype=np.int64)
    a = np.asarray(ids)
    if a.shape != (batch,) or a.dtype.kind not in "iu":
        raise ValueError(f"image_ids must be {batch} integers, got shape {a.shape} "
                         f"dtype {_name(a)}")
    if a.size and (a.min() < 0 or a.max() >= 2**32):
        raise ValueError("image_ids must lie in [0, 2**32)")
    if np.unique(a).size != a.size:
        raise ValueError("image_ids must be unique")
    return a.astype(np.int64)


def probabilities(p: np.ndarray, batch: int, num_classes: int, outputs: str) -> None:
    """The classifier's output must be a probability vector per image."""
    if p.shape != (batch, num_classes):
        raise ValueError(f"classifier returned shape {p.shape}, expected ({batch}, "
                         f"{num_classes}) for {batch} images and num_classes={num_classes}")
    hint = ("; if apply_fn returns logits, build it with Classifier.from_logits(...)"
            if outputs == "probs" else "")
    if not np.isfinite(p).all():
        raise ValueError(f"classifier returned NaN or inf probabilities{hint}")
    if (p < -1e-6).any() or not np.allclose(p.sum(-1), 1.0, atol=1e-3):
        raise ValueError(f"classifier outputs are not probabilities (negative, or rows do not "
                         f"sum to 1: got sums {p.sum(-1)[:3]}...){hint}")


def attack_inputs(classifier, x, y, pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(uint8 images, int32 labels)`` for an attack of ``pixels`` pixels."""
    if not isinstance(classifier, Classifier):
        raise TypeError(f"classifier must be a jaxattack.Classifier, got "
                        f"{type(classifier).__name__}")
    x = images(x)
    b, h, w, c = x.shape
    if classifier.input_shape is not None and tuple(classifier.input_shape) != (h, w, c):
        raise ValueError(f"images are {h}x{w}x{c} but the classifier expects "
                         f"{'x'.join(map(str, classifier.input_shape))}")
    if pixels > h * w:
        raise ValueError(f"pixels={pixels} exceeds the {h * w} pixels of a {h}x{w} image")
    return x, labels(y, b, classifier.num_classes)


def clean_probs(classifier: Classifier, x: np.ndarray) -> np.ndarray:
    """Probabilities of the clean images, checked to be probabilities."""
    before = predict(classifier, x)
    probabilities(before, len(x), classifier.num_classes, classifier.outputs)
    return before
