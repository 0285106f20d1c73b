"""Verification: paint each problem's final candidate on the host and classify it afresh.

The search's own verdict is never trusted: a success is reported only when a separate
forward pass (``classifier.predict``, fixed-size chunks) of the final uint8 image
confirms it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxattack.classifier import Classifier, predict
from jaxattack.pixels import objective
from jaxattack.pixels.result import AttackResult
from jaxattack.strategies import codec


class Finished(NamedTuple):
    """What the search returned, one row per problem (numpy arrays)."""

    image_index: np.ndarray  # [P] row of the problem's clean image
    image_id: np.ndarray  # [P] id that seeded the problem's key
    label: np.ndarray  # [P]
    target: np.ndarray  # [P], -1 untargeted
    genes: np.ndarray  # f32 [P, D]: the final candidate
    found: np.ndarray  # [P] bool: the search saw a success
    generations: np.ndarray  # [P] generations run after the initial population
    first_hit: np.ndarray  # [P] generation of the search's first success, -1 none


def verify(classifier: Classifier, config, clean: np.ndarray, before: np.ndarray,
           done: Finished, seconds: float = 0.0) -> AttackResult:
    """An ``AttackResult`` for ``done``: ``clean``/``before`` are the clean images and
    their probabilities, indexed by ``done.image_index``; ``config`` an AttackConfig."""
    h, w, c = clean.shape[1:]
    pixels = codec.decode(done.genes, config.pixels, h, w, c)
    adv = codec.paint_numpy(clean[done.image_index], pixels)
    after = predict(classifier, adv)
    pb = before[done.image_index]
    rows = np.arange(len(done.image_index))
    pred_after = after.argmax(-1)
    label, target = done.label, done.target
    adv_class = np.where(target >= 0, target, pred_after)
    return AttackResult(
        image_index=done.image_index, image_id=done.image_id, label=label, target=target,
        success=np.asarray(objective.success(after, label, target)), search_success=done.found,
        adversarial=adv, pixels=pixels, generations=done.generations,
        queries=config.population * (done.generations + 1),
        queries_to_hit=np.where(done.first_hit >= 0, config.population * (done.first_hit + 1),
                                -1),
        clean_correct=pb.argmax(-1) == label, predicted_before=pb.argmax(-1),
        predicted_after=pred_after, adv_class=adv_class,
        prob_true_before=pb[rows, label], prob_true_after=after[rows, label],
        prob_adv_before=pb[rows, adv_class], prob_adv_after=after[rows, adv_class],
        num_classes=classifier.num_classes, config=config, seconds=seconds,
    )


class Collector:
    """An ``engine.run`` callback that gathers finished problems into arrays."""

    def __init__(self, n: int, dims: int):
        self.genes = np.zeros((n, dims), np.float32)
        self.found = np.zeros(n, bool)
        self.generations = np.zeros(n, np.int64)
        self.first_hit = np.zeros(n, np.int64)

    def __call__(self, rows, genes, found, generations, first_hit):
        self.genes[rows], self.found[rows] = genes, found
        self.generations[rows], self.first_hit[rows] = generations, first_hit

    def finished(self, image_index, image_id, label, target) -> Finished:
        return Finished(image_index, image_id, label, target, self.genes, self.found,
                        self.generations, self.first_hit)
