"""Streaming per-class means of per-channel values, and class selectivity.

`ClassMeans` sums a layer's per-image values (n, C) by class label, so the
mean of every (class, channel) pair over a whole dataset is a merge of
per-shard sums (``add``, ``merge``, ``result``, ``state_dict``, as in
`convscope.stats.running`). `class_selectivity` turns those means into each
channel's preferred class and the selectivity index of Morcos et al. (2018),
"On the importance of single directions for generalization".
"""

from __future__ import annotations

import numpy as np

__all__ = ["ClassMeans", "class_selectivity"]


class ClassMeans:
    """Running per-class sums of per-channel values; labels < 0 (unknown) are ignored.

    Parameters
    ----------
    channels : int
        Number of channels ``C``.
    state : dict, optional
        A dict from `state_dict`; restores a saved accumulator.

    The number of classes grows with the largest label seen; rows with a
    non-finite value are skipped (``skipped`` counts them).
    """

    def __init__(self, channels: int | None = None, *, state: dict | None = None):
        if state is not None:
            self.sums = np.asarray(state["sums"], dtype=np.float64).copy()
            self.counts = np.asarray(state["counts"], dtype=np.int64).copy()
            self.skipped = int(state["skipped"])
            self.channels = int(self.sums.shape[1])
            return
        if channels is None or int(channels) < 1:
            raise ValueError(f"ClassMeans needs channels >= 1, got {channels!r}")
        self.channels = int(channels)
        self.sums = np.zeros((0, self.channels), dtype=np.float64)
        self.counts = np.zeros(0, dtype=np.int64)
        self.skipped = 0

    def _grow(self, classes: int) -> None:
        """Make room for class ids below ``classes``."""
        extra = classes - self.counts.shape[0]
        if extra > 0:
            self.sums = np.concatenate([self.sums, np.zeros((extra, self.channels))])
            self.counts = np.concatenate([self.counts, np.zeros(extra, dtype=np.int64)])

    def add(self, labels: np.ndarray, values: np.ndarray) -> None:
        """Accumulate ``values`` (n, C) of images with class ids ``labels`` (n,)."""
        labels = np.asarray(labels).astype(np.int64).reshape(-1)
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape != (labels.shape[0], self.channels):
            raise ValueError(f"values must have shape ({labels.shape[0]}, {self.channels}), "
                             f"got {values.shape}")
        finite = np.isfinite(values).all(axis=1)
        self.skipped += int((~finite).sum())
        known = finite & (labels >= 0)
        labels, values = labels[known], values[known]
        if labels.size == 0:
            return
        self._grow(int(labels.max()) + 1)
        order = np.argsort(labels, kind="stable")  # rows of one class together, then sums
        labels, values = labels[order], values[order]
        starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
        self.sums[labels[starts]] += np.add.reduceat(values, starts, axis=0)
        self.counts += np.bincount(labels, minlength=self.counts.shape[0])

    def merge(self, other: "ClassMeans") -> None:
        """Add the sums of another accumulator with the same channels."""
        if other.channels != self.channels:
            raise ValueError(f"cannot merge ClassMeans with {other.channels} channels "
                             f"into one with {self.channels}")
        self._grow(other.counts.shape[0])
        self.sums[:other.counts.shape[0]] += other.sums
        self.counts[:other.counts.shape[0]] += other.counts
        self.skipped += other.skipped

    def result(self) -> dict[str, np.ndarray]:
        """``means`` (K, C) float64 (NaN rows for classes without images), ``counts`` (K,)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            means = self.sums / self.counts[:, None]
        means[self.counts == 0] = np.nan
        return {"means": means, "counts": self.counts.copy()}

    def state_dict(self) -> dict:
        """Plain-array state; ``ClassMeans(state=acc.state_dict())`` restores it."""
        return {"sums": self.sums.copy(), "counts": self.counts.copy(), "skipped": self.skipped}


def class_selectivity(means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Preferred class and selectivity index per channel from class means (K, C).

    Rows that are all NaN (classes without images) take no part. The
    preferred class is the one with the highest mean (the smallest id among
    ties); ``selectivity = (mu_pref - mu_rest) / (mu_pref + mu_rest)``, with
    ``mu_rest`` the mean of the other classes' means: 0 when both are 0, in
    [0, 1] for non-negative values (after a ReLU), NaN where the sum is 0 but
    the difference is not (possible only with negative values) and where
    fewer than two classes have images.

    Returns:
        ``preferred`` (C,) int64, -1 where no class has images, and
        ``selectivity`` (C,) float64.
    """
    means = np.asarray(means, dtype=np.float64)
    channels = means.shape[1]
    present = ~np.isnan(means).all(axis=1)
    if not present.any():
        return np.full(channels, -1, dtype=np.int64), np.full(channels, np.nan)
    ids = np.nonzero(present)[0]
    seen = means[ids]
    best = np.argmax(seen, axis=0)
    mu_pref = seen[best, np.arange(channels)]
    if len(ids) < 2:
        return ids[best].astype(np.int64), np.full(channels, np.nan)
    mu_rest = (seen.sum(axis=0) - mu_pref) / (len(ids) - 1)
    numerator, denominator = mu_pref - mu_rest, mu_pref + mu_rest
    with np.errstate(invalid="ignore", divide="ignore"):
        selectivity = np.where(denominator != 0, numerator / denominator, np.nan)
    selectivity[(numerator == 0) & (denominator == 0)] = 0.0
    return ids[best].astype(np.int64), selectivity
