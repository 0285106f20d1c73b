"""``AttackResult``: per-problem numpy arrays and the paper's statistics."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxattack.pixels import stats


@dataclasses.dataclass
class AttackResult:
    """One row per problem (image x target). All arrays are numpy.

    ``success`` is verified: the final uint8 image was re-classified by a separate
    forward pass. ``search_success`` is what the search itself saw. ``target`` is -1
    for untargeted problems. ``adv_class`` is the target, or for untargeted problems
    the class the final image is assigned. Probabilities are from the clean image
    (``*_before``) and from the final adversarial image (``*_after``).
    """

    image_index: np.ndarray  # [P] row in the input batch
    image_id: np.ndarray  # [P] id that seeded the problem's key
    label: np.ndarray  # [P]
    target: np.ndarray  # [P], -1 untargeted
    success: np.ndarray  # [P] bool, verified
    search_success: np.ndarray  # [P] bool
    adversarial: np.ndarray  # [P, H, W, C] uint8
    pixels: np.ndarray  # [P, k, 2 + C] int32: x, y, colour
    generations: np.ndarray  # [P] DE generations run
    queries: np.ndarray  # [P] model queries charged to the problem
    queries_to_hit: np.ndarray  # [P] queries when the search first succeeded, -1 if never
    clean_correct: np.ndarray  # [P] bool: the clean image was classified correctly
    predicted_before: np.ndarray  # [P]
    predicted_after: np.ndarray  # [P]
    adv_class: np.ndarray  # [P]
    prob_true_before: np.ndarray
    prob_true_after: np.ndarray
    prob_adv_before: np.ndarray
    prob_adv_after: np.ndarray
    num_classes: int
    config: Any = None
    seconds: float = 0.0

    def __len__(self) -> int:
        return int(self.success.shape[0])

    def _columns(self) -> dict:
        return {f: getattr(self, f) for f in stats.FIELDS if f != "image"} | {
            "image": self.image_index}

    def success_rate(self, correct_only: bool = True) -> float:
        """Share of problems fooled (by default among correctly classified images)."""
        return stats.success_rate(self.success, self.clean_correct if correct_only else None)

    def per_image(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(image_index, classes_reached, clean_correct)``, one entry per attacked image.

        ``classes_reached`` counts the distinct classes the image was pushed to.
        """
        return stats.classes_reached(self.image_index, self.adv_class, self.success,
                                     self.clean_correct)

    def fooled_any_rate(self, correct_only: bool = True) -> float:
        """The paper's non-targeted rate from all-targets runs: fooled toward some class."""
        _, reached, ok = self.per_image()
        return stats.success_rate(reached > 0, ok if correct_only else None)

    def class_pair_counts(self, correct_only: bool = True) -> np.ndarray:
        """``[K, K]`` successes from true class (row) to adversarial class (column)."""
        keep = self.success & (self.clean_correct if correct_only else True)
        return stats.class_pair_counts(self.label, self.adv_class, keep, self.num_classes)

    def summary(self) -> dict:
        s = stats.summary(self._columns())
        return {
            "problems": s["problems"], "clean_correct": s["problems_clean_correct"],
            **{k: s[k] for k in ("success_rate", "fooled_any_rate", "mean_classes_reached",
                                 "mean_adv_confidence", "mean_queries", "mean_generations",
                                 "search_not_verified")},
            "seconds": self.seconds,
        }
