"""Unit thresholds and concept IoU, streamed over batches of activation maps.

`UnitThresholds`: the exact top-quantile threshold of every unit over all its spatial
activations. It keeps, per unit, the largest ``ceil(q * images * h * w)`` values seen so
far (``torch.topk`` of the kept values and the new batch), so memory is bounded by
that count whatever the number of batches. T_k is the smallest kept value for the actual
number of images (the k-th largest activation).

`ConceptTally`: per image, the unit's map upsampled bilinearly (``align_corners=False``)
to the mask size and thresholded (``> T_k``); over the dataset it sums, per unit and
concept, the intersection with the concept's mask, the concept's area, and the unit's
area over the images annotated for the concept's category (as NetDissect does), so

    IoU = sum |M_k & L_c| / (sum |M_k| + sum |L_c| - sum |M_k & L_c|).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["top_count", "UnitThresholds", "ConceptTally", "auc_scores"]


def top_count(quantile: float, n_images: int, height: int, width: int) -> int:
    """``ceil(q * n * h * w)`` computed exactly (q as its decimal), at least 1."""
    return max(1, math.ceil(Fraction(str(quantile)) * n_images * height * width))


class UnitThresholds:
    """Streaming exact top values per unit; ``add`` (B, C, h, w) batches, then `thresholds`."""

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.top: torch.Tensor | None = None
        self.count = 0

    def add(self, maps: torch.Tensor) -> None:
        values = maps.detach().float().transpose(0, 1).reshape(maps.shape[1], -1)
        if self.top is not None:
            values = torch.cat([self.top, values], dim=1)
        keep = min(self.capacity, values.shape[1])
        self.top = torch.topk(values, keep, dim=1, sorted=True).values
        self.count += maps.shape[0]

    def thresholds(self, k: int) -> np.ndarray:
        """(C,) float32: the k-th largest activation of each unit."""
        if self.top is None or k > self.top.shape[1]:
            raise ValueError(f"{k} top values asked but {0 if self.top is None else self.top.shape[1]}"
                             " kept")
        return self.top[:, k - 1].cpu().numpy()


class ConceptTally:
    """Sums of intersections and areas per unit x concept (see the module docstring)."""

    def __init__(self, thresholds: np.ndarray, concept_categories: Sequence[str]):
        self.thresholds = torch.as_tensor(np.asarray(thresholds, dtype=np.float32))
        units, n_concepts = len(thresholds), len(concept_categories)
        self.category_names = sorted(set(concept_categories))
        self.concept_category = np.array([self.category_names.index(c)
                                          for c in concept_categories], dtype=np.int64)
        self.intersection = np.zeros((units, n_concepts), dtype=np.float64)
        self.unit_area = np.zeros((units, len(self.category_names)), dtype=np.float64)
        self.label_area = np.zeros(n_concepts, dtype=np.float64)

    def add(self, maps: torch.Tensor, masks: dict[int, np.ndarray], annotated: set[str],
            size: tuple[int, int]) -> None:
        """One image: ``maps`` (C, h, w), ``masks`` concept id -> (H, W) bool at ``size``,
        ``annotated`` the categories the image has masks for (its unit area counts there)."""
        if not annotated:
            return
        up = F.interpolate(maps[None].float(), size=tuple(size), mode="bilinear",
                           align_corners=False)[0]
        # 0/1 in float32: one image's counts (< 2^24 pixels) are exact; summed in float64
        active = (up > self.thresholds[:, None, None]).reshape(len(self.thresholds), -1).float()
        if masks:
            ids = np.array(sorted(masks), dtype=np.int64)
            labels = torch.from_numpy(np.stack([masks[i].reshape(-1) for i in ids])).float()
            self.intersection[:, ids] += (active @ labels.T).double().numpy()
            self.label_area[ids] += labels.sum(dim=1).double().numpy()
        area = active.sum(dim=1).double().numpy()
        for category in annotated:
            if category in self.category_names:
                self.unit_area[:, self.category_names.index(category)] += area

    def iou(self) -> np.ndarray:
        """(units, concepts) IoU; 0 where the union is empty."""
        union = self.unit_area[:, self.concept_category] + self.label_area - self.intersection
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, self.intersection / np.maximum(union, 1e-300), 0.0)


def auc_scores(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """ROC AUC per column of ``scores`` (N, C) for the boolean ``positive`` (N,), ties
    counted half (Mann-Whitney U / (n_pos * n_neg)); NaN when a class is empty."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return np.full(scores.shape[1], np.nan)
    ranks = rankdata(scores, axis=0)
    u = ranks[positive].sum(axis=0) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)
