"""How candidates are scored on image problems: decode, paint, classify, objective.

This is the engine's evaluation function for attacks (``engine.Evaluator``). The
default evaluates every candidate with a dense forward pass of the whole painted image.
"""

from __future__ import annotations

import dataclasses

import jax

from jaxattack import codec, objective
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
