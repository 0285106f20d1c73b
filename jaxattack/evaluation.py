"""How candidates are scored on image problems: decode, paint, classify, objective.

This is the engine's evaluation function for attacks (``engine.Evaluator``).
``DenseEvaluator`` runs a dense forward pass of the whole painted image per candidate;
``SparseEvaluator`` caches each problem's clean activations when it is loaded and
recomputes only what the k pixels reach (``jaxattack.sparse``). ``evaluator()`` picks
one for ``AttackConfig.forward``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxattack import codec, objective, sparse
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
    forward = "dense"

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


class CachedProblem(NamedTuple):
    """An image problem with its clean activations (``SparseEvaluator.prepare``)."""

    image: np.ndarray
    label: np.ndarray
    target: np.ndarray
    cache: tuple


@dataclasses.dataclass(frozen=True)
class SparseEvaluator(DenseEvaluator):
    """The dense evaluator's scoring over ``plan``'s sparse probabilities.

    ``population`` (candidates per problem) spreads the per-problem cache over the
    candidates in ``bytes_per_candidate``.
    """

    plan: sparse.Plan = None
    population: int = 1
    forward = "sparse"

    def prepare(self, params, problems: ImageProblem) -> CachedProblem:
        cache = jax.vmap(self.plan.prepare, (None, 0))(params, problems.image)
        return CachedProblem(problems.image, problems.label, problems.target, cache)

    def bytes_per_candidate(self) -> int:
        """The candidate's windows and crops, its handover map and three times the
        largest map of the dense rest, plus its share of the problem's cache."""
        return (self.plan.window_bytes() + 4 * self.plan.handover_bytes()
                + -(-self.plan.cache_bytes() // self.population))

    def probs(self, params, problems: CachedProblem, candidates):
        return self.plan.probs(params, problems.cache, self.space.decode(candidates))


FORWARDS = ("auto", "dense", "sparse")


def evaluator(classifier: Classifier, space: codec.PixelSpace, loss: str = "prob",
              early_stop: str = "success", forward: str = "auto",
              population: int = 1) -> DenseEvaluator:
    """The evaluator for ``forward``: "dense"; "sparse" (an error naming the reason where
    the model has no sparse plan); "auto": sparse where its plan is modelled to be
    faster, else dense (saying why once, where the model's layers are not supported)."""
    if forward not in FORWARDS:
        raise ValueError(f"forward must be one of {FORWARDS}, got {forward!r}")
    shape = (space.height, space.width, space.channels)
    plan = None
    if forward == "sparse":
        plan = sparse.plan(classifier, space.pixels, shape, gain=0.0)
        if plan is None:
            raise ValueError(f"forward='sparse' is not available for {classifier.name}: "
                             f"{sparse.why_not(classifier, space.pixels, shape)}")
    elif forward == "auto":
        plan = sparse.plan(classifier, space.pixels, shape, warn=True)
    if plan is None:
        return DenseEvaluator(classifier, space, loss, early_stop)
    return SparseEvaluator(classifier, space, loss, early_stop, plan, population)


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
