"""Streaming per-channel histograms with fixed, per-channel equal-width bins.

`ChannelHistogram` counts values of shape (n, C) into ``B`` bins per channel,
each channel with its own edges (its min..max, known from a first pass). It
follows the running-statistics pattern (``add``, ``merge``, ``result``,
``state_dict``) of `convscope.stats.running`.

Written by hand: ``np.histogram`` takes one set of edges, so C channels would
need C calls per batch; here one vectorised pass assigns every (image,
channel) value to its bin with numpy's own rule for equal-width bins (the
same index computation and the same round-off corrections), so the counts
equal ``np.histogram(x[:, c], bins=B)`` over the same values.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ChannelHistogram", "histogram_edges"]


def histogram_edges(low: np.ndarray, high: np.ndarray, bins: int) -> np.ndarray:
    """(C, B+1) float64 equal-width edges from per-channel ``low``..``high`` (C,).

    As ``np.histogram(x, bins=B)`` does: a channel whose low equals its high
    gets the range low-0.5 .. high+0.5; a channel with no finite value
    (low/high not finite) gets 0..1.
    """
    if int(bins) < 1:
        raise ValueError(f"histogram bins must be >= 1, got {bins!r}")
    low = np.asarray(low, dtype=np.float64).copy()
    high = np.asarray(high, dtype=np.float64).copy()
    empty = ~(np.isfinite(low) & np.isfinite(high))
    low[empty], high[empty] = 0.0, 1.0
    flat = low == high
    low[flat] -= 0.5
    high[flat] += 0.5
    # np.linspace with array endpoints: per channel the same numbers as np.histogram's edges
    return np.linspace(low, high, int(bins) + 1, axis=1)


class ChannelHistogram:
    """Running per-channel histogram over images.

    Parameters
    ----------
    edges : array (C, B+1), optional
        Increasing bin edges per channel (`histogram_edges`).
    state : dict, optional
        A dict from `state_dict`; restores a saved accumulator.

    Values outside a channel's edges and non-finite values are not counted
    (``outside`` counts them), as ``np.histogram`` does with a given range.
    """

    def __init__(self, edges: np.ndarray | None = None, *, state: dict | None = None):
        if state is not None:
            edges = state["edges"]
        edges = np.asarray(edges, dtype=np.float64)
        if edges.ndim != 2 or edges.shape[1] < 2:
            raise ValueError(f"edges must have shape (C, B+1) with B >= 1, got {edges.shape}")
        self.edges = edges.copy()
        self.channels, self.bins = edges.shape[0], edges.shape[1] - 1
        if state is not None:
            self.counts = np.asarray(state["counts"], dtype=np.int64).copy()
            self.outside = int(state["outside"])
        else:
            self.counts = np.zeros((self.channels, self.bins), dtype=np.int64)
            self.outside = 0

    def add(self, values: np.ndarray) -> None:
        """Count a batch ``values`` of shape (n, C)."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != self.channels:
            raise ValueError(f"values must have shape (n, {self.channels}), got {values.shape}")
        first, last = self.edges[None, :, 0], self.edges[None, :, -1]
        keep = np.isfinite(values) & (values >= first) & (values <= last)
        self.outside += int((~keep).sum())
        x = np.where(keep, values, first)  # values not counted go anywhere valid
        # numpy's equal-width rule (numpy/lib/_histograms_impl.py): scale, truncate,
        # put the last edge in the last bin, then fix round-off against the edges
        index = ((x - first) / (last - first) * self.bins).astype(np.intp)
        np.minimum(index, self.bins - 1, out=index)
        flat_edges = self.edges.ravel()
        row = np.arange(self.channels) * (self.bins + 1)
        index -= x < flat_edges[row + index]
        index += (x >= flat_edges[row + index + 1]) & (index != self.bins - 1)
        codes = np.arange(self.channels) * self.bins + index
        flat = np.bincount(codes[keep], minlength=self.channels * self.bins)
        self.counts += flat.reshape(self.channels, self.bins)

    def merge(self, other: "ChannelHistogram") -> None:
        """Add the counts of another histogram with the same edges."""
        if not np.array_equal(other.edges, self.edges):
            raise ValueError("cannot merge ChannelHistograms with different edges")
        self.counts += other.counts
        self.outside += other.outside

    def result(self) -> dict[str, np.ndarray]:
        """``counts`` (C, B) int64 and ``edges`` (C, B+1) float64."""
        return {"counts": self.counts.copy(), "edges": self.edges.copy()}

    def state_dict(self) -> dict:
        """Plain-array state; ``ChannelHistogram(state=h.state_dict())`` restores it."""
        return {"edges": self.edges.copy(), "counts": self.counts.copy(), "outside": self.outside}
