"""How candidates are scored on image problems: decode, paint, classify, objective.

This is the engine's evaluation function for attacks (``engine.Evaluator``). The
default evaluates every candidate with a dense forward pass of the whole painted image.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxattack import codec, objective
from jaxattack.caches import memoize
from jaxattack.classifier import Classifier
from jaxattack.engine import Evaluation
from jaxattack.problems import ImageProblem


@dataclasses.dataclass(frozen=True)
class DenseEvaluator:
    """Paint each candidate's k pixels into its problem's image and classify the batch."""

    classifier: Classifier
    space: codec.PixelSpace
    loss: str = "prob"
    early_stop: str = "success"

    def prepare(self, params, problems: ImageProblem) -> ImageProblem:
        return problems

    def bytes_per_candidate(self) -> int:
        """Estimated device memory per candidate: its painted image and three times the
        largest per-image value of the forward pass (a layer's input, output, workspace)."""
        shape = (self.space.height, self.space.width, self.space.channels)
        return int(np.prod(shape)) + 3 * per_image_bytes(self.classifier, shape)

    def probs(self, params, problems: ImageProblem, candidates):
        """Probabilities ``[S, N, K]`` of the painted candidates ``[S, N, D]``."""
        pix = self.space.decode(candidates)
        imgs = jax.vmap(jax.vmap(codec.paint, (None, 0)), (0, 0))(problems.image, pix)
        s, n = candidates.shape[:2]
        probs = self.classifier.probs(params, imgs.reshape(s * n, *imgs.shape[2:]))
        return probs.reshape(s, n, -1)

    def __call__(self, params, problems: ImageProblem, candidates) -> Evaluation:
        probs = self.probs(params, problems, candidates)
        label, target = problems.label[:, None], problems.target[:, None]
        return Evaluation(objective.fitness(probs, label, target, self.loss),
                          objective.success(probs, label, target),
                          objective.should_stop(probs, label, target, self.early_stop).any(-1))


def _sizes(jaxpr, out: list[int]) -> list[int]:
    """Bytes of every value a jaxpr (and the jaxprs inside it) computes, in order."""
    for eqn in jaxpr.eqns:
        out += [v.aval.size * v.aval.dtype.itemsize if hasattr(v.aval, "shape") else 0
                for v in eqn.outvars]
        for param in eqn.params.values():
            for sub in param if isinstance(param, list | tuple) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    _sizes(inner, out)
    return out


@memoize(32)
def per_image_bytes(classifier: Classifier, image_shape: tuple) -> int:
    """The largest value the forward pass computes per image: traced (not run) at
    batches of 1 and 2, so weights and other batch-independent values do not count (a
    program whose shape changes with the batch counts its largest value at batch 2)."""
    def sizes(batch):
        x = jax.ShapeDtypeStruct((batch, *image_shape), jnp.uint8)
        return _sizes(jax.make_jaxpr(classifier.probs)(classifier.params, x).jaxpr, [])

    one, two = sizes(1), sizes(2)
    if len(one) != len(two):  # the program depends on the batch (a chunked model): bound it
        return max(two, default=0)
    return max([b - a for a, b in zip(one, two, strict=True)] or [0])
