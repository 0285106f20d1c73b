"""Minimum-k: per image, the smallest k in a list for which the attack succeeds.

Images are attacked with the first k; those not fooled go on to the next k, and so on.
With ``max_queries``, an image only tries a further k while its total stays within the
budget (each try may spend up to ``config.max_queries``). Images the model already
misclassifies get ``min_k == 0`` and are not attacked. ART's ``PixelAttack(th=None)``
answers the same question with a binary search over k, one image at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxattack.classifier import Classifier, predict
from jaxattack.pixels import inputs
from jaxattack.pixels.result import AttackResult
from jaxattack.runs.attack import AttackConfig, attack


@dataclasses.dataclass
class MinKResult:
    ks: tuple[int, ...]
    min_k: np.ndarray  # [B] smallest k that fooled the image; -1 none did, 0 misclassified
    queries: np.ndarray  # [B] queries over all tries
    tries: list[AttackResult]  # one per k, over the images still unfooled at that k

    @property
    def clean_correct(self) -> np.ndarray:
        return self.min_k != 0

    def success_rate(self, correct_only: bool = True) -> float:
        """Share of images fooled by some k (by default among correctly classified ones)."""
        keep = self.clean_correct if correct_only else np.ones(len(self.min_k), bool)
        return float((self.min_k[keep] != -1).mean()) if keep.any() else float("nan")


def minimum_k(classifier: Classifier, images, labels, config: AttackConfig | None = None,
              ks: Sequence[int] = (1, 2, 3, 5, 10), max_queries: int | None = None,
              image_ids=None, **kw) -> MinKResult:
    """Untargeted minimum-k search; ``config.pixels`` is ignored (``ks`` sets it)."""
    config = AttackConfig() if config is None else config
    if config.mode != "untargeted":
        raise ValueError("minimum-k is defined for mode='untargeted'")
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks) or list(ks) != sorted(set(ks)):
        raise ValueError(f"ks must be increasing positive ints, got {ks}")
    images, labels = inputs.attack_inputs(classifier, images, labels, ks[-1])
    ids = inputs.image_ids(image_ids, len(images))
    min_k = np.where(predict(classifier, images).argmax(-1) == labels, -1, 0)
    queries = np.zeros(len(images), np.int64)
    tries = []
    for k in ks:
        todo = np.flatnonzero((min_k < 0) & (
            True if max_queries is None else queries + config.max_queries <= max_queries))
        if not todo.size:
            break
        res = attack(classifier, images[todo], labels[todo], config.replace(pixels=k),
                     image_ids=ids[todo], **kw)
        queries[todo] += res.queries
        min_k[todo[res.success]] = k
        tries.append(res)
    return MinKResult(ks, min_k, queries, tries)
