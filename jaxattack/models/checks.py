"""The sanity checks every importer runs: :func:`check` runs an imported classifier on a
few real images and turns the usual mistakes into one-line errors
(:class:`~jaxattack.models.conventions.ConventionError`) instead of a silent 10 %
accuracy:

* the model's outputs do not change with its input;
* the outputs of one image depend on the rest of its batch (training-mode BatchNorm);
* probabilities were declared but the outputs are logits (or the reverse);
* the input scale is wrong: on labelled images (the built-in CIFAR-10 sample for a
  10-class model, or ``check_images``/``check_labels``) the declared convention is near
  chance while the same images 255 times smaller or larger are classified far better;
  without labels a collapse to one class is only a warning (a random model collapses too);
* the layout is wrong: a model whose declared input is channels-first given
  ``layout="NHWC"`` (and the reverse), or a forward pass that fails on the shape.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .conventions import OUTPUTS, PRESETS, Convention, ConventionError, _first_line

CHECK_IMAGES = 64
DEFAULT_CHECK_SHAPE = (32, 32, 3)


def check_images(shape: tuple[int, int, int], n: int = CHECK_IMAGES):
    """Real images for the checks: the built-in CIFAR-10 sample (round-robin over the
    classes), resized to ``(H, W)`` and converted to ``C`` channels; random pixels for
    channel counts other than 1 and 3. Returns ``(images, labels or None)``."""
    from PIL import Image

    from jaxattack import data

    h, w, c = shape
    x, y, _ = data.load("sample", limit=n)
    if c not in (1, 3):
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (n, h, w, c), dtype=np.uint8), None
    if (h, w) != x.shape[1:3] or c == 1:
        out = []
        for im in x:
            pil = Image.fromarray(im)
            if c == 1:
                pil = pil.convert("L")
            if (h, w) != x.shape[1:3]:
                pil = pil.resize((w, h), Image.Resampling.BILINEAR)
            out.append(np.asarray(pil, np.uint8).reshape(h, w, c))
        x = np.stack(out)
    return x, y


def alternatives(conv: Convention):
    """The conventions a labelled check tries when the declared one is near chance,
    each with the mistake it stands for."""
    other = 1.0 if conv.input_scale == 255.0 else 255.0
    out = [(conv.scaled(1 / 255.0), "the model's input 255 times smaller"),
           (conv.scaled(255.0), "the model's input 255 times larger")]
    if conv.mean is not None or conv.std is not None:
        out.append((dataclasses.replace(conv, input_scale=other),
                    f"input_scale={other:g} with the same mean/std numbers"))
    else:
        for preset, (m, s) in PRESETS.items():
            for scale in dict.fromkeys((conv.input_scale, other)):
                out.append((Convention(scale, tuple(v * scale for v in m),
                                       tuple(v * scale for v in s), conv.layout),
                            f"normalised with the {preset} statistics"))
    return out


@dataclasses.dataclass
class CheckResult:
    outputs: str
    num_classes: int
    accuracy: float | None
    images: int


def check(
    build: Callable[[Convention], Callable],
    params: Any,
    conv: Convention,
    *,
    name: str,
    outputs: str = "auto",
    num_classes: int | None = None,
    input_shape: tuple[int, int, int] | None = None,
    images=None,
    labels=None,
    layout_hint: str | None = None,
) -> CheckResult:
    """Run ``build(conv)(params, uint8 images)`` on a few real images and raise a
    :class:`ConventionError` for the mistakes listed in the module docstring.

    Returns the resolved ``outputs`` ("probs"/"logits") and ``num_classes``.
    ``layout_hint``: the other layout to suggest when the forward pass fails.
    """
    if outputs not in OUTPUTS:
        raise ValueError(f"outputs must be one of {OUTPUTS}, got {outputs!r}")
    if images is None:
        images, auto_labels = check_images(input_shape or DEFAULT_CHECK_SHAPE)
        labels = auto_labels if labels is None else labels
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"check_images must be uint8 [N, H, W, C], got {images.dtype} "
                         f"{images.shape}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(images),):
            raise ValueError(f"check_labels must have shape ({len(images)},)")
    n = len(images)

    def run(c: Convention, x) -> np.ndarray:
        fn = jax.jit(build(c))
        return np.asarray(jax.device_get(fn(params, jnp.asarray(x))), np.float64)

    try:
        out = run(conv, images)
    except ConventionError:
        raise
    except Exception as e:  # the framework rejected the input: shape, layout, dtype
        hint = ""
        if layout_hint and layout_hint != conv.layout:
            kind = "channels-first" if layout_hint == "NCHW" else "channels-last"
            hint = f"; if the model expects {kind} input, pass layout={layout_hint!r}"
        raise ConventionError(
            f"{name} failed on {n} images of shape {tuple(images.shape[1:])} (H, W, C) fed "
            f"as {conv.layout}: {_first_line(e)}{hint}") from e
    if out.ndim != 2 or out.shape[0] != n:
        raise ConventionError(f"{name} returned shape {out.shape} for {n} images; a "
                              f"classifier must return [batch, classes]")
    k = out.shape[1]
    if num_classes is not None and k != num_classes:
        raise ConventionError(f"{name} returned {k} outputs per image, not num_classes="
                              f"{num_classes}")
    if k < 2:
        raise ConventionError(f"{name} returned {k} output per image; need >= 2 classes")
    if not np.isfinite(out).all():
        raise ConventionError(f"{name} returned NaN or inf on real images ({conv.describe()})")

    # 1. The outputs must change with the input.
    spread = float(np.abs(out - out[:1]).max())
    if spread <= 1e-6 * max(float(np.abs(out).max()), 1e-30):
        raise ConventionError(
            f"{name}'s outputs do not change with its input: {n} real images all give the "
            f"same output (max difference {spread:.2g}); the model is constant, or "
            f"{conv.describe()} erases the image")

    # 2. One image's output must not depend on the rest of its batch.
    alone = run(conv, images[:1])
    gap = float(np.abs(alone[0] - out[0]).max())
    if gap > 1e-3 * max(float(np.abs(out[0]).max()), 1.0):
        raise ConventionError(
            f"{name}'s output for an image depends on the rest of its batch (differs by "
            f"{gap:.3g} alone vs in a batch of {n}): BatchNorm or dropout in training mode? "
            f"Put the model in eval/inference mode")

    # 3. Probabilities or logits.
    is_probs = bool((out >= -1e-6).all() and np.allclose(out.sum(-1), 1.0, atol=1e-3))
    if outputs == "probs" and not is_probs:
        raise ConventionError(
            f"{name} was declared to return probabilities but its outputs are not (rows sum "
            f"to {out.sum(-1)[:3].round(3).tolist()}...): they look like logits, pass "
            f"outputs='logits'")
    if outputs == "logits" and is_probs:
        raise ConventionError(
            f"{name} was declared to return logits but its outputs are probabilities "
            f"(non-negative, rows sum to 1): pass outputs='probs'")
    resolved = "probs" if is_probs else "logits"

    # 4. The scale: near chance (labels) or collapsed (no labels) vs 255x off.
    pred = out.argmax(-1)
    share = np.bincount(pred, minlength=k).max() / n
    acc = float((pred == labels).mean()) if labels is not None else None
    chance = max(0.2, 2.0 / k)
    bad = (acc is not None and acc < chance) or (acc is None and share >= 0.9 and n >= 32)
    if bad and acc is not None:
        best = None
        for alt, why in alternatives(conv):
            try:
                acc2 = float((run(alt, images).argmax(-1) == labels).mean())
            except Exception:
                continue
            if acc2 >= acc + 0.25 and (best is None or acc2 > best[0]):
                best = (acc2, alt, why)
        if best is not None:
            acc2, alt, why = best
            raise ConventionError(
                f"{name} classifies {acc:.0%} of {n} labelled real images correctly with "
                f"{conv.describe()}, but {acc2:.0%} with {alt.describe()} ({why}): check "
                f"input_scale (0..1 is 1, 0..255 is 255) and mean/std (in the units of "
                f"input_scale)")
    elif bad:
        for factor in (1 / 255.0, 255.0):
            alt = conv.scaled(factor)
            try:
                p2 = run(alt, images).argmax(-1)
            except Exception:
                continue
            share2 = np.bincount(p2, minlength=k).max() / n
            if share2 <= 0.6:
                how = "smaller" if factor < 1 else "larger"
                warnings.warn(
                    f"{name} predicts one class for {share:.0%} of {n} real images with "
                    f"{conv.describe()} but spreads them over several classes when its "
                    f"input is 255 times {how} ({alt.describe()}); check input_scale "
                    f"unless the model is untrained", stacklevel=3)
                break
    return CheckResult(resolved, k, acc, n)
