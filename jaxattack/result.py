"""``AttackResult``: per-problem numpy arrays and the paper's statistics."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


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

    def success_rate(self, correct_only: bool = True) -> float:
        """Share of problems fooled (by default among correctly classified images)."""
        keep = self.clean_correct if correct_only else np.ones(len(self), bool)
        return float(self.success[keep].mean()) if keep.any() else float("nan")

    def per_image(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(image_index, classes_reached, clean_correct)``, one entry per attacked image.

        ``classes_reached`` counts the distinct classes the image was pushed to.
        """
        idx, first = np.unique(self.image_index, return_index=True)
        pairs = np.unique(np.stack([self.image_index, self.adv_class])[:, self.success], axis=1)
        reached = np.bincount(np.searchsorted(idx, pairs[0]), minlength=idx.size)
        return idx, reached.astype(np.int64), self.clean_correct[first]

    def fooled_any_rate(self, correct_only: bool = True) -> float:
        """The paper's non-targeted rate from all-targets runs: fooled toward some class."""
        _, reached, ok = self.per_image()
        reached = reached[ok] if correct_only else reached
        return float((reached > 0).mean()) if reached.size else float("nan")

    def class_pair_counts(self, correct_only: bool = True) -> np.ndarray:
        """``[K, K]`` successes from true class (row) to adversarial class (column)."""
        m = np.zeros((self.num_classes, self.num_classes), np.int64)
        keep = self.success & (self.clean_correct if correct_only else True)
        np.add.at(m, (self.label[keep], self.adv_class[keep]), 1)
        return m

    def summary(self) -> dict:
        ok = self.clean_correct
        s = self.success & ok
        _, reached, img_ok = self.per_image()
        reached = reached[img_ok]
        return {
            "problems": len(self),
            "clean_correct": int(ok.sum()),
            "success_rate": self.success_rate(),
            "fooled_any_rate": self.fooled_any_rate(),
            "mean_classes_reached": float(reached.mean()) if reached.size else float("nan"),
            "mean_adv_confidence": float(self.prob_adv_after[s].mean()) if s.any() else
            float("nan"),
            "mean_queries": float(self.queries[ok].mean()) if ok.any() else float("nan"),
            "mean_generations": float(self.generations[ok].mean()) if ok.any() else float("nan"),
            "search_not_verified": int((self.search_success & ~self.success).sum()),
            "seconds": self.seconds,
        }
