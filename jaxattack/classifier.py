"""The one contract every layer shares: a black-box classifier.

An attack only ever calls ``classifier.probs(params, images)``: uint8 NHWC images in,
class probabilities out. Normalisation, dtype casts and the network live inside
``apply_fn``; the attack never sees them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxattack.caches import memoize
from jaxattack.programs import convs

ApplyFn = Callable[[Any, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True, eq=False)
class Classifier:
    """A pure classifier ``apply_fn(params, uint8[N, H, W, C]) -> [N, num_classes]``.

    Attributes:
      apply_fn: pure function of ``(params, images)``; images are uint8 NHWC.
      params: any pytree of arrays passed to ``apply_fn`` unchanged.
      num_classes: length of the output vector.
      outputs: ``"probs"`` if ``apply_fn`` returns probabilities, ``"logits"`` if it
        returns logits (a softmax is then applied for the attack).
      input_shape: optional ``(H, W, C)`` the model expects; checked by the attack.
      class_names: optional names, index-aligned with the outputs.
      name: a label for reports.
      lower: compute the model's convolutions in their fast forms for the platform
        (``jaxattack.programs.convs``: depthwise, grouped and 1x1 convolutions on XLA:CPU); the
        results equal XLA's to float rounding. False: ``apply_fn`` exactly as it is.

    The sparse forward reads the network from ``apply_fn``'s jaxpr (``jaxattack.sparse``):
    nothing else describes it.
    """

    apply_fn: ApplyFn
    params: Any
    num_classes: int
    outputs: str = "probs"
    input_shape: tuple[int, int, int] | None = None
    class_names: tuple[str, ...] | None = None
    name: str = "classifier"
    lower: bool = True

    def __post_init__(self):
        if not callable(self.apply_fn):
            raise TypeError(f"apply_fn must be callable, got {type(self.apply_fn).__name__}")
        if self.outputs not in ("probs", "logits"):
            raise ValueError(f"outputs must be 'probs' or 'logits', got {self.outputs!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {self.num_classes!r}")
        if self.input_shape is not None and len(self.input_shape) != 3:
            raise ValueError(f"input_shape must be (H, W, C), got {self.input_shape!r}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} names for {self.num_classes} classes"
            )
        fn = convs.lowered(self.apply_fn) if self.lower else self.apply_fn
        object.__setattr__(self, "_forward", fn)

    def __repr__(self) -> str:
        leaves = jax.tree.leaves(self.params)
        count = sum(int(np.prod(np.shape(a))) for a in leaves)
        size = sum(int(np.prod(np.shape(a))) * np.dtype(getattr(a, "dtype", np.float32)
                                                          ).itemsize for a in leaves)
        shape = "x".join(map(str, self.input_shape)) if self.input_shape else "any size"
        return (f"Classifier({self.name!r}, input {shape}, {self.num_classes} classes, "
                f"{self.outputs}, {count:,} parameters, {_mib(size)})")

    @classmethod
    def from_logits(cls, apply_fn: ApplyFn, params: Any, num_classes: int, **kw) -> Classifier:
        """A classifier whose ``apply_fn`` returns logits."""
        return cls(apply_fn, params, num_classes, outputs="logits", **kw)

    def probs(self, params: Any, images: jax.Array) -> jax.Array:
        """Class probabilities (float32) for uint8 NHWC ``images``. Pure; jit-friendly."""
        out = self._forward(params, images).astype(jnp.float32)
        return jax.nn.softmax(out, axis=-1) if self.outputs == "logits" else out

    def __call__(self, images: jax.Array) -> jax.Array:
        """Probabilities with the stored params (convenience, not jitted)."""
        return self.probs(self.params, images)

    def replace(self, **changes) -> Classifier:
        return dataclasses.replace(self, **changes)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


PREDICT_CHUNK = 256


@memoize(16)
def _jitted_probs(classifier: Classifier):
    return jax.jit(classifier.probs)


def predict(classifier: Classifier, images: np.ndarray, chunk: int = PREDICT_CHUNK) -> np.ndarray:
    """Probabilities ``[B, K]`` of uint8 images, in fixed-size padded chunks (one
    compilation whatever ``B``)."""
    if not len(images):
        return np.zeros((0, classifier.num_classes), np.float32)
    fn = _jitted_probs(classifier)
    out = []
    for i in range(0, len(images), chunk):
        part = images[i:i + chunk]
        pad = np.zeros((chunk - len(part), *part.shape[1:]), np.uint8)
        p = fn(classifier.params, jnp.asarray(np.concatenate([part, pad])))
        out.append(np.asarray(p)[: len(part)])
    return np.concatenate(out)
