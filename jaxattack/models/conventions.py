"""Input conventions of imported models, and the sanity checks every importer runs.

A jaxattack classifier takes uint8 NHWC pixels. A model from another framework wants
floats: on the 0..1 or the 0..255 scale, maybe standardised per channel, channels-last
(Keras, TensorFlow) or channels-first (PyTorch, ONNX). :class:`Convention` says which;
:func:`preprocess` applies it inside the jitted ``apply_fn``; :func:`check` runs the
imported classifier on a few real images and turns the usual mistakes into one-line
errors (:class:`ConventionError`) instead of a silent 10 % accuracy:

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
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

LAYOUTS = ("NHWC", "NCHW")
OUTPUTS = ("auto", "probs", "logits")
# Per-channel statistics on the 0..1 scale; multiplied by input_scale when used by name.
PRESETS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
CHECK_IMAGES = 64
DEFAULT_CHECK_SHAPE = (32, 32, 3)


class ModelImportError(ValueError):
    """A model file or object that cannot be imported (not a model, unsupported)."""


class ConventionError(ModelImportError):
    """The declared input or output convention does not fit the model."""


# ----------------------------------------------------------------------------- convention


@dataclasses.dataclass(frozen=True)
class Convention:
    """How uint8 pixels become the model's input: ``((pixels / 255) * input_scale - mean)
    / std`` per channel, in ``layout``.

    Attributes:
      input_scale: ``1.0`` for 0..1 inputs, ``255.0`` for 0..255 inputs (any positive
        number is accepted: the model sees ``pixels * input_scale / 255``).
      mean, std: per-channel (or single) values in the units of ``input_scale``, or None.
      layout: ``"NHWC"`` (channels-last) or ``"NCHW"`` (channels-first), the layout the
        model expects. The classifier's own input stays uint8 NHWC.
    """

    input_scale: float = 1.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str = "NHWC"

    def describe(self) -> str:
        def fmt(v):
            return "(" + ", ".join(f"{a:.4g}" for a in v) + ")"

        parts = [f"input_scale={self.input_scale:g}"]
        if self.mean is not None:
            parts.append(f"mean={fmt(self.mean)}")
        if self.std is not None:
            parts.append(f"std={fmt(self.std)}")
        parts.append(f"layout={self.layout!r}")
        return ", ".join(parts)

    def scaled(self, factor: float) -> Convention:
        """The convention whose model input is ``factor`` times this one's."""
        mean = None if self.mean is None else tuple(m * factor for m in self.mean)
        return dataclasses.replace(self, input_scale=self.input_scale * factor, mean=mean)


def parse_scale(value) -> float:
    """``1``, ``255``, ``"1"``, ``"255"``, ``"0-1"``, ``"0..1"``, ``"0-255"``, ``"0..255"``."""
    if isinstance(value, str):
        v = value.strip().replace("..", "-")
        named = {"0-1": 1.0, "0-255": 255.0, "unit": 1.0, "pixels": 255.0}
        if v in named:
            return named[v]
        try:
            value = float(v)
        except ValueError:
            raise ValueError(f"input_scale must be 1 (0..1), 255 (0..255) or a positive "
                             f"number, got {value!r}") from None
    try:
        scale = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"input_scale must be a positive number, got {value!r}") from None
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"input_scale must be a positive number, got {value!r}")
    return scale


def _parse_stats(value, what: str, scale: float, index: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        key = value.strip().lower()
        if key in PRESETS:
            return tuple(v * scale for v in PRESETS[key][index])
        try:
            value = [float(v) for v in key.replace(",", " ").split()]
        except ValueError:
            raise ValueError(f"{what} must be numbers like '0.485,0.456,0.406' or one of "
                             f"{sorted(PRESETS)}, got {value!r}") from None
    arr = np.atleast_1d(np.asarray(value, np.float64))
    if arr.ndim != 1 or arr.size == 0 or not np.isfinite(arr).all():
        raise ValueError(f"{what} must be one number or one per channel, got {value!r}")
    if what == "std" and (arr <= 0).any():
        raise ValueError(f"std must be positive, got {value!r}")
    return tuple(float(v) for v in arr)


def make(input_scale=1.0, mean=None, std=None, layout: str = "NHWC",
         channels: int | None = None) -> Convention:
    """A validated :class:`Convention`. ``mean``/``std`` may be numbers, sequences,
    comma strings or ``"imagenet"``/``"cifar10"`` (0..1 statistics, scaled by
    ``input_scale``)."""
    scale = parse_scale(input_scale)
    if not isinstance(layout, str) or layout.upper() not in LAYOUTS:
        raise ValueError(f"layout must be 'NHWC' or 'NCHW', got {layout!r}")
    conv = Convention(scale, _parse_stats(mean, "mean", scale, 0),
                      _parse_stats(std, "std", scale, 1), layout.upper())
    if channels is not None:
        for what in ("mean", "std"):
            v = getattr(conv, what)
            if v is not None and len(v) not in (1, channels):
                raise ValueError(f"{what} has {len(v)} values for a {channels}-channel input")
    return conv


def preprocess(images: jax.Array, conv: Convention, dtype=jnp.float32,
               layout: str | None = None) -> jax.Array:
    """uint8 NHWC pixels -> the model's float input (``layout`` overrides the
    convention's, e.g. ``"NHWC"`` for a graph that handles the layout itself)."""
    x = images.astype(dtype)
    if conv.input_scale != 255.0:
        x = x * jnp.asarray(conv.input_scale / 255.0, dtype)
    if conv.mean is not None:
        x = x - jnp.asarray(conv.mean, dtype)
    if conv.std is not None:
        x = x / jnp.asarray(conv.std, dtype)
    if (layout or conv.layout) == "NCHW":
        x = jnp.transpose(x, (0, 3, 1, 2))
    return x


def infer_layout(shape: Sequence, requested: str, name: str,
                 default: str = "NHWC") -> tuple[str, tuple[int, int, int] | None]:
    """The layout and ``(H, W, C)`` of a model whose declared input has ``shape``
    (4 entries, ints or None for dynamic dims). Raises :class:`ConventionError` when
    ``requested`` contradicts an unambiguous declared shape."""
    if requested is None or requested == "auto":
        requested = "auto"
    elif not isinstance(requested, str) or requested.upper() not in LAYOUTS:
        raise ValueError(f"layout must be 'auto', 'NHWC' or 'NCHW', got {requested!r}")
    else:
        requested = requested.upper()
    shape = tuple(None if d is None or (isinstance(d, int) and d <= 0) else int(d)
                  for d in shape) if shape is not None else None
    if shape is None or len(shape) != 4:
        if shape is not None:
            raise ModelImportError(f"{name} takes a {len(shape)}-D input {list(shape)}; "
                                   f"jaxattack needs a 4-D image batch")
        return (default if requested == "auto" else requested), None
    _, a, b, c = shape
    chan = (1, 3, 4)
    first = a in chan and c not in chan
    last = c in chan and a not in chan
    guessed = "NCHW" if first else "NHWC" if last else None
    if requested == "auto":
        layout = guessed or default
    else:
        layout = requested
        if guessed and guessed != requested:
            dims = ", ".join("batch" if i == 0 else ("?" if d is None else str(d))
                             for i, d in enumerate(shape))
            kind = "channels-first" if guessed == "NCHW" else "channels-last"
            raise ConventionError(
                f"{name} declares its input as [{dims}] ({kind}) but layout={requested!r} "
                f"was given: pass layout={guessed!r} (or 'auto')")
    hwc = (b, c, a) if layout == "NCHW" else (a, b, c)
    return layout, (tuple(hwc) if all(d is not None for d in hwc) else None)


# ----------------------------------------------------------------------------- checks


def check_images(shape: tuple[int, int, int], n: int = CHECK_IMAGES):
    """Real images for the checks: the built-in CIFAR-10 sample (round-robin over the
    classes), resized to ``(H, W)`` and converted to ``C`` channels; random pixels for
    channel counts other than 1 and 3. Returns ``(images, labels or None)``."""
    from PIL import Image

    from .. import data

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


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


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


def static_batch(forward: Callable, batch: int | None) -> Callable:
    """``forward(params, images)`` of a model built for a fixed ``batch`` size, at any
    batch size: the images are padded to a multiple of it and run under ``vmap`` over
    chunks of that size (``batch=None``: ``forward`` itself)."""
    if batch is None:
        return forward

    def run(params, images):
        n = images.shape[0]
        if n == batch:
            return forward(params, images)
        pad = (-n) % batch
        if pad:
            images = jnp.concatenate([images, jnp.repeat(images[:1], pad, 0)])
        chunks = images.reshape(-1, batch, *images.shape[1:])
        out = jax.vmap(lambda ch: forward(params, ch))(chunks)
        return out.reshape(n + pad, *out.shape[2:])[:n]

    return run


def unchecked_outputs(outputs: str) -> str:
    """``outputs`` when the checks are off: "auto" cannot be resolved without them."""
    if outputs not in ("probs", "logits"):
        raise ValueError(f"with check=False pass outputs='probs' or 'logits' (got "
                         f"{outputs!r}; 'auto' is decided by the checks)")
    return outputs


def wrap_standard_promotion(fn: Callable) -> Callable:
    """``fn`` traced under standard dtype promotion: foreign converters (Keras, tf2jax,
    jaxonnxruntime) mix dtypes implicitly, which ``jax_numpy_dtype_promotion="strict"``
    (set by jaxattack's tests, and possibly by users) rejects."""

    def wrapped(*args, **kwargs):
        with jax.numpy_dtype_promotion("standard"):
            return fn(*args, **kwargs)

    wrapped.__wrapped__ = fn
    return wrapped
