"""Input conventions of imported models.

A jaxattack classifier takes uint8 NHWC pixels. A model from another framework wants
floats: on the 0..1 or the 0..255 scale, maybe standardised per channel, channels-last
(Keras, TensorFlow) or channels-first (PyTorch, ONNX). :class:`Convention` says which;
:func:`preprocess` applies it inside the jitted ``apply_fn``. The checks that run an
imported classifier on a few real images live in ``checks.py``, which builds on this
module (this module imports nothing of jaxattack's).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

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


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


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
