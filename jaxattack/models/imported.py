"""What every importer (``from_keras``, ``from_saved_model``, ``from_onnx``,
``from_torch``) shares: the options they all take (:class:`Options`), the input
convention from a declared input shape (:func:`convention`) and the tail that checks the
imported model on real images and builds the :class:`~jaxattack.Classifier`
(:func:`finish`). Each importer keeps only what its format needs: loading the model,
reading its declared input and output, and ``build(convention) -> apply_fn``.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Sequence
from typing import Any

from ..classifier import Classifier
from . import checks
from . import conventions as cv


@dataclasses.dataclass(frozen=True)
class Options:
    """The options every importer takes as keywords (docs/your_own_model.md has the table).

    Attributes:
      input_scale, mean, std: the input convention (:func:`conventions.make`):
        ``input_scale`` 1 for 0..1 inputs, 255 for 0..255 (or ``"0..1"``, ``"0-255"``);
        ``mean``/``std`` per channel (or one number) in the units of ``input_scale``,
        comma strings, or ``"imagenet"``/``"cifar10"`` (0..1 statistics, scaled by
        ``input_scale``).
      layout: ``"auto"`` (from the model's declared input shape), ``"NHWC"`` or
        ``"NCHW"``: the layout the model expects. ``from_torch``'s default is ``"NCHW"``.
      outputs: ``"auto"`` (decided by the checks), ``"probs"`` or ``"logits"``.
      num_classes, class_names, name: as for :class:`~jaxattack.Classifier`; default:
        from the model.
      check: run the convention checks (:func:`checks.check`) on real images.
      check_images, check_labels: the images (uint8 NHWC) and labels the checks use;
        default: the built-in CIFAR-10 sample, resized to the model's input size.
    """

    input_scale: Any = 1.0
    mean: Any = None
    std: Any = None
    layout: str = "auto"
    outputs: str = "auto"
    num_classes: int | None = None
    class_names: Sequence[str] | None = None
    name: str | None = None
    check: bool = True
    check_images: Any = None
    check_labels: Any = None

    @classmethod
    def parse(cls, where: str, options: dict, **defaults) -> Options:
        """The options of a call to importer ``where`` (``defaults`` replace the class's
        defaults); an unknown keyword is a TypeError, as for any Python function."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in options:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise TypeError(f"{where}() got an unexpected keyword argument {key!r}{hint}; "
                                f"the options every importer takes: {', '.join(names)}")
        return cls(**(defaults | options))


def convention(opts: Options, declared: Sequence | None, label: str, *, default: str,
               input_shape: tuple[int, int, int] | None = None):
    """``(Convention, (H, W, C) or None)`` for a model whose declared input shape is
    ``declared`` (None: not declared; then ``input_shape``, if given, is the size)."""
    lay, hwc = cv.infer_layout(declared, opts.layout, label, default=default)
    hwc = hwc or (tuple(input_shape) if input_shape else None)
    conv = cv.make(opts.input_scale, opts.mean, opts.std, lay,
                   channels=hwc[2] if hwc else None)
    return conv, hwc


def finish(
    opts: Options,
    build: Callable[[cv.Convention], Callable],
    params: Any,
    conv: cv.Convention,
    *,
    label: str,
    default_name: str,
    input_shape: tuple[int, int, int] | None,
    k_declared: int | None = None,
    k_probed: int | None = None,
    k_unknown: str = "the model's output size is not declared",
    check_build: Callable[[cv.Convention], Callable] | None = None,
    layout_hint: bool = True,
) -> Classifier:
    """Check ``build(conv)`` on real images (unless ``opts.check`` is off), resolve
    ``outputs`` and ``num_classes``, and build the Classifier.

    Args:
      label: the model in error messages; ``default_name``: the Classifier's name when
        ``opts.name`` is None.
      k_declared: the output size the model declares (None: dynamic); ``k_probed``: the
        size a forward pass returned, which ``num_classes`` must then equal;
        ``k_unknown``: why neither is known, for the error with ``check=False``.
      check_build: what the checks run instead of ``build``.
      layout_hint: on a failed forward pass, suggest the other layout.
    """
    if opts.check:
        hint = ("NCHW" if conv.layout == "NHWC" else "NHWC") if layout_hint else None
        res = checks.check(check_build or build, params, conv, name=label,
                           outputs=opts.outputs, num_classes=opts.num_classes or k_declared,
                           input_shape=input_shape, images=opts.check_images,
                           labels=opts.check_labels, layout_hint=hint)
        outputs, k = res.outputs, res.num_classes
    else:
        outputs = cv.unchecked_outputs(opts.outputs)
        k = opts.num_classes or k_declared or k_probed
        if k is None:
            raise ValueError(f"pass num_classes= ({k_unknown})")
    if k_probed is not None and k != k_probed:
        raise cv.ConventionError(f"{label} returns {k_probed} outputs, not num_classes={k}")
    names = tuple(opts.class_names) if opts.class_names is not None else None
    return Classifier(build(conv), params, int(k), outputs=outputs, input_shape=input_shape,
                      class_names=names, name=opts.name or default_name)
