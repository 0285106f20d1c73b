"""How candidates are scored on image problems: decode, paint, classify, objective.

This is the engine's evaluation function for attacks (``engine.Evaluator``).
``DenseEvaluator`` runs a dense forward pass of the whole painted image per candidate;
``SparseEvaluator`` caches each problem's clean activations when it is loaded and
recomputes only what the k pixels reach (``jaxattack.sparse``). ``evaluator()`` picks
one for ``AttackConfig.forward``; ``"auto"`` times both (``auto_choice``).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxattack import sparse
from jaxattack.caches import memoize
from jaxattack.classifier import Classifier
from jaxattack.engine import Evaluation, sizing
from jaxattack.pixels import objective
from jaxattack.pixels.problems import ImageProblem
from jaxattack.strategies import codec


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

# forward="auto" times the sparse forward against the dense one where the cost model
# expects at least this speed-up (a pre-filter: its error was about 15 % on XLA:CPU,
# and it was not fitted on other platforms).
AUTO_PREFILTER = 0.75
# The most candidates one timing call evaluates (an accelerator's engine may hold more).
AUTO_TIMING_CANDIDATES = 4096


class Choice(NamedTuple):
    """What ``forward="auto"`` chose for a (model, k, image shape, platform), and the
    seconds each forward took on one batch of the engine's call size."""

    forward: str
    dense_s: float | None
    sparse_s: float | None
    modelled: float | None  # the cost model's speed-up
    reason: str | None = None  # why there is no sparse plan, if there is none


def evaluator(classifier: Classifier, space: codec.PixelSpace, loss: str = "prob",
              early_stop: str = "success", forward: str = "auto",
              population: int = 1) -> DenseEvaluator:
    """The evaluator for ``forward``: "dense"; "sparse" (an error naming the reason where
    the model has no sparse plan); "auto": the faster of the two, timed on one batch the
    first time a (model, k, image shape, platform) is seen (``auto_choice``), where the
    model has a sparse plan that the cost model does not rule out; dense otherwise (saying
    why once, where the model has no plan)."""
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
        choice = auto_choice(classifier, space, population, loss, early_stop)
        if choice.reason is not None:
            _warn_once(classifier, choice.reason)
        if choice.forward == "sparse":
            plan = sparse.plan(classifier, space.pixels, shape, gain=0.0)
    if plan is None:
        return DenseEvaluator(classifier, space, loss, early_stop)
    return SparseEvaluator(classifier, space, loss, early_stop, plan, population)


@memoize(32)
def _warn_once(classifier, reason):
    warnings.warn(f"forward='auto' runs dense for {classifier.name}: {reason}", stacklevel=4)


def auto_choice(classifier: Classifier, space: codec.PixelSpace, population: int = 1,
                loss: str = "prob", early_stop: str = "success") -> Choice:
    """``forward="auto"``'s choice for ``classifier`` on ``space`` (cached per process)."""
    return _choice(classifier, space, population, loss, early_stop, jax.default_backend())


def timing_batch(platform: str, population: int) -> tuple[int, int]:
    """(slots, candidates per slot) of one evaluation call of the engine on ``platform``
    (``sizing``'s chunks and blocks; an accelerator's whole engine, at most
    ``AUTO_TIMING_CANDIDATES``)."""
    block = sizing.BLOCK_CANDIDATES.get(platform, population)
    per = min(block, population)
    want = sizing.CHUNK_CANDIDATES.get(platform)
    if want is None:
        return max(1, min(sizing.AUTO_CANDIDATES_PER_ACCELERATOR,
                          AUTO_TIMING_CANDIDATES) // population), per
    return max(1, -(-want // population)), per


@memoize(64)
def _choice(classifier, space, population, loss, early_stop, platform) -> Choice:
    shape = (space.height, space.width, space.channels)
    if sparse.plan(classifier, space.pixels, shape, gain=0.0) is None:
        return Choice("dense", None, None, None,
                      sparse.why_not(classifier, space.pixels, shape))
    plan = sparse.plan(classifier, space.pixels, shape, gain=0.0)
    if plan.speedup < AUTO_PREFILTER:
        return Choice("dense", None, None, plan.speedup)
    slots, per = timing_batch(platform, population)
    rng = np.random.default_rng(0)
    lo, hi = space.bounds()
    genes = jnp.asarray(rng.uniform(lo, hi, (slots, per, space.dims)), jnp.float32)
    problems = ImageProblem(
        jnp.asarray(rng.integers(0, 256, (slots, *shape)), jnp.uint8),
        jnp.zeros(slots, jnp.int32), jnp.full(slots, -1, jnp.int32))
    times = {}
    for ev in (DenseEvaluator(classifier, space, loss, early_stop),
               SparseEvaluator(classifier, space, loss, early_stop, plan, population)):
        prepared = jax.jit(ev.prepare)(classifier.params, problems)
        fn = jax.jit(ev.__call__)
        jax.block_until_ready(fn(classifier.params, prepared, genes))
        best = np.inf
        for _ in range(3):
            t = time.perf_counter()
            jax.block_until_ready(fn(classifier.params, prepared, genes))
            best = min(best, time.perf_counter() - t)
        times[ev.forward] = float(best)
    faster = "sparse" if times["sparse"] < times["dense"] else "dense"
    return Choice(faster, times["dense"], times["sparse"], plan.speedup)


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
