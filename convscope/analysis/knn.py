"""Exact k nearest neighbours over the shards, in blocks, and k-NN classification.

The search engine of `convscope.analysis.neighbours` (whose docstring
describes the spaces, the distances and the outputs). Search is exact brute
force, done in tiles: a block of query rows (at most ``block_mb`` MB of
features) is held on the device (CUDA when present) and every shard is
streamed past it as the reference, in tiles of at most ``_TILE_QUERIES x
_TILE_REFERENCES`` distances. The k best so far per query are kept by
`convscope.stats.running.RunningTopK` (ties broken by the smaller row), so no
N x N matrix is ever built and memory is bounded by the block size. A query
never counts as its own neighbour (leave-one-out).

k-NN classification (`vote`): majority vote over the k nearest labelled
neighbours; a tie between classes goes to the class whose tied neighbours
have the smallest summed distance, and an exact tie after that to the
smaller class id.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from convscope.analysis.input_pixels import InputPixels
from convscope.config.sections import NeighboursConfig
from convscope.stats.running import RunningTopK
from convscope.store.shards import iter_shards, open_shard

__all__ = [
    "SPACES",
    "PIXEL_SPACES",
    "TIE_BREAK",
    "METRICS",
    "space_metric",
    "space_features_name",
    "space_features",
    "knn_search",
    "knn_over_shards",
    "vote",
    "knn_accuracy",
]

logger = logging.getLogger(__name__)

#: space name -> (shard dataset, default distance); the pixel space's distance is
#: ``neighbours.pixel_metric`` (`space_metric`).
SPACES = {"code": ("codes", "cosine"), "pixel": ("thumbs", "euclidean")}
METRICS = ("euclidean", "cosine")
#: values of ``neighbours.pixel_space``: the pixels the pixel space compares.
PIXEL_SPACES = ("thumbs", "input")

TIE_BREAK = ("majority vote over the k nearest labelled neighbours; ties between classes go to "
             "the class with the smallest summed neighbour distance, then to the smaller class id")

_TILE_QUERIES = 2048
_TILE_REFERENCES = 4096


def space_metric(space: str, cfg: NeighboursConfig) -> str:
    """The distance used in ``space``: cosine for codes, ``cfg.pixel_metric`` for pixels."""
    if space not in SPACES:
        raise ValueError(f"neighbours.spaces: unknown space {space!r}; valid values: "
                         f"{list(SPACES)}")
    return str(cfg.pixel_metric) if space == "pixel" else SPACES[space][1]


def space_features_name(space: str, cfg: NeighboursConfig) -> str:
    """What ``space`` compares: ``"codes"``, or ``cfg.pixel_space`` (thumbs | input) for pixels."""
    if space not in SPACES:
        raise ValueError(f"neighbours.spaces: unknown space {space!r}; valid values: "
                         f"{list(SPACES)}")
    if space == "pixel":
        if cfg.pixel_space not in PIXEL_SPACES:
            raise ValueError(f"neighbours.pixel_space is {cfg.pixel_space!r}; valid values: "
                             f"{list(PIXEL_SPACES)}")
        return str(cfg.pixel_space)
    return SPACES[space][0]


def _unit_rows(features: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (zero rows stay zero)."""
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def space_features(chunk: dict[str, np.ndarray], space: str,
                   metric: str | None = None) -> np.ndarray:
    """Features (n, F) float32 of a shard chunk in ``space`` ("code" or "pixel").

    ``metric`` (default: the space's own, `SPACES`) decides the normalisation:
    rows are unit vectors for ``"cosine"``.
    """
    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}; valid values: {list(SPACES)}")
    metric = metric or SPACES[space][1]
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid values: {list(METRICS)}")
    if space == "code":
        features = np.asarray(chunk["codes"], dtype=np.float32)
    else:
        features = _pixel_rows(np.asarray(chunk["thumbs"]))
    return _unit_rows(features) if metric == "cosine" else features


def _pixel_rows(images: np.ndarray) -> np.ndarray:
    """(n, ...) uint8 images -> (n, F) float32 in [0, 1]."""
    return images.reshape(len(images), -1).astype(np.float32) / 255.0

def _distances(queries: torch.Tensor, query_sq: torch.Tensor | None, refs: torch.Tensor,
               metric: str) -> torch.Tensor:
    """(a, b) distances between (a, F) queries and (b, F) references."""
    products = queries @ refs.T
    if metric == "cosine":
        return (1.0 - products).clamp_(min=0.0)
    ref_sq = (refs * refs).sum(dim=1)
    return (query_sq[:, None] + ref_sq[None, :] - 2.0 * products).clamp_(min=0.0).sqrt_()


def knn_search(queries, reference_blocks: Iterable[tuple[np.ndarray, np.ndarray]], k: int, *,
               metric: str = "cosine", query_positions=None, device="cpu",
               progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest references of each query, streaming the references in blocks.

    Args:
        queries: (nq, F) float features (already normalised for cosine).
        reference_blocks: iterable of ``(positions (nb,) int64, features (nb, F))``.
        k: neighbours per query.
        metric: ``"cosine"`` (1 - dot product of unit vectors) or ``"euclidean"``.
        query_positions: (nq,) positions of the queries in the reference
            numbering; a reference with the same position is skipped (self).
        device: torch device for the distance tiles.

    Returns:
        ``(distances (nq, k) float32, positions (nq, k) int64)``, nearest
        first, ties by the smaller position; ``inf`` / ``-1`` where fewer than
        k references were available.
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"knn_search: metric is {metric!r}; valid values: 'cosine', 'euclidean'")
    device = torch.device(device)
    q_all = torch.as_tensor(np.asarray(queries, dtype=np.float32)).to(device)
    nq = q_all.shape[0]
    q_sq = (q_all * q_all).sum(dim=1) if metric == "euclidean" else None
    q_pos = None
    if query_positions is not None:
        q_pos = torch.as_tensor(np.asarray(query_positions, dtype=np.int64)).to(device)
    tiles = [(start, min(start + _TILE_QUERIES, nq)) for start in range(0, nq, _TILE_QUERIES)]
    accumulators = [RunningTopK(k) for _ in tiles]
    for ref_positions, refs in tqdm(reference_blocks, desc="k-NN references", unit="block",
                                    disable=not progress):
        refs = torch.as_tensor(np.asarray(refs, dtype=np.float32)).to(device)
        ref_positions = torch.as_tensor(np.asarray(ref_positions, dtype=np.int64)).to(device)
        for r0 in range(0, refs.shape[0], _TILE_REFERENCES):
            r_tile = refs[r0:r0 + _TILE_REFERENCES]
            r_pos = ref_positions[r0:r0 + _TILE_REFERENCES]
            for (q0, q1), acc in zip(tiles, accumulators):
                q_tile_sq = None if q_sq is None else q_sq[q0:q1]
                dist = _distances(q_all[q0:q1], q_tile_sq, r_tile, metric)
                if q_pos is not None:
                    dist[q_pos[q0:q1, None] == r_pos[None, :]] = float("inf")
                acc.add(-dist.T, r_pos)  # RunningTopK keeps the largest: negate
    distances = np.full((nq, k), np.inf, dtype=np.float32)
    positions = np.full((nq, k), -1, dtype=np.int64)
    for (q0, q1), acc in zip(tiles, accumulators):
        values, ids, _ = acc.result()
        if values.size == 0:
            continue
        found = values.shape[1]
        distances[q0:q1, :found] = -values
        positions[q0:q1, :found] = ids
    missing = ~np.isfinite(distances)
    positions[missing] = -1
    distances[missing] = np.inf
    return distances, positions


def _shard_geometry(shard_paths: Sequence, dataset: str, space: str) -> tuple[np.ndarray, int]:
    """(row offset of each shard plus the total, width of one row of ``dataset``) from the
    HDF5 headers."""
    sizes, width = [], None
    for path in shard_paths:
        with open_shard(path) as f:
            if dataset not in f:
                raise KeyError(f"shard {path} has no dataset {dataset!r} (needed for the "
                               f"{space!r} space)")
            sizes.append(int(f[dataset].shape[0]))
            width = int(np.prod(f[dataset].shape[1:]))
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64), width


class _ShardFeatures:
    """Features of the shards in one space, read shard by shard.

    Shards read once are kept while they fit ``budget_bytes`` and reused, so
    a small dataset is read once; ``starts`` is the row offset of each shard
    plus the total, ``width`` the feature width F. With ``input_pixels`` the
    pixel space's features are the model's input pixels of the shard's
    ``index`` rows (`InputPixels`), decoded one shard (or part of one) at a time.
    """

    def __init__(self, shard_paths: Sequence, space: str, metric: str, budget_bytes: int,
                 input_pixels: InputPixels | None = None):
        self.shard_paths = list(shard_paths)
        self.space, self.metric = space, metric
        self.input_pixels = input_pixels if space == "pixel" else None
        if self.input_pixels is None:
            self.starts, self.width = _shard_geometry(self.shard_paths, SPACES[space][0], space)
        else:
            self.starts, _ = _shard_geometry(self.shard_paths, "index", space)
            self.width = self.input_pixels.width
        self._cache: dict[int, np.ndarray] = {}
        self._budget = int(budget_bytes)

    def _read(self, shard: int, local_rows: np.ndarray | None = None) -> np.ndarray:
        """Features of shard ``shard`` (only its ``local_rows`` when given, input pixels only)."""
        path = self.shard_paths[shard]
        if self.input_pixels is None:
            chunk = next(iter_shards([path], [SPACES[self.space][0]]))
            return space_features(chunk, self.space, self.metric)
        index = next(iter_shards([path], ["index"]))["index"]
        if local_rows is not None:
            index = index[local_rows]
        features = self.input_pixels.of_index(index)
        return _unit_rows(features) if self.metric == "cosine" else features

    def of_shard(self, shard: int) -> np.ndarray:
        """(rows of the shard, F) float32 features of shard number ``shard``."""
        if shard in self._cache:
            return self._cache[shard]
        features = self._read(shard)
        if features.nbytes <= self._budget:
            self._cache[shard] = features
            self._budget -= features.nbytes
        return features

    def of_rows(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), F) features of the given positions over the concatenated shards.

        Input pixels of a shard not in the cache are decoded for the requested
        rows only when they are fewer than half of the shard.
        """
        shard_of_row = np.searchsorted(self.starts, rows, side="right") - 1
        out = np.empty((len(rows), self.width), dtype=np.float32)
        for shard in np.unique(shard_of_row):
            picked = shard_of_row == shard
            local = rows[picked] - self.starts[shard]
            size = self.starts[shard + 1] - self.starts[shard]
            if (self.input_pixels is not None and shard not in self._cache
                    and 2 * len(local) < size):
                out[picked] = self._read(int(shard), local)
            else:
                out[picked] = self.of_shard(int(shard))[local]
        return out

    def reference_blocks(self, reference_mask=None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(positions, features)`` of every shard, keeping the rows ``reference_mask`` allows."""
        for shard in range(len(self.shard_paths)):
            lo, hi = self.starts[shard], self.starts[shard + 1]
            positions = np.arange(lo, hi)
            features = self.of_shard(shard)
            if reference_mask is not None:
                keep = np.asarray(reference_mask[lo:hi], dtype=bool)
                positions, features = positions[keep], features[keep]
            yield positions, features


def knn_over_shards(shard_paths: Sequence[str | os.PathLike], space: str, k: int, *,
                    block_mb: float, query_rows=None, reference_mask=None,
                    device="cpu", metric: str | None = None,
                    input_pixels: InputPixels | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN of shard rows against all shard rows in ``space``, in bounded memory.

    Args:
        shard_paths: the shards, in manifest order.
        space: ``"code"`` or ``"pixel"`` (see `SPACES`).
        k: neighbours per query.
        block_mb: features of at most this many MB of queries are held at
            once; shards read while gathering a block are kept (up to the same
            budget) and reused as references, so small datasets are read once.
        query_rows: (nq,) positions (0 .. N-1 over the concatenated shards) of
            the queries; None = every row (leave-one-out over the dataset).
        reference_mask: (N,) bool, which rows may be neighbours; None = all.
        device: torch device.
        metric: ``"euclidean"`` or ``"cosine"``; None = the space's default (`SPACES`).
        input_pixels: for the ``"pixel"`` space, compare the model's input
            pixels of each shard row (`InputPixels`) instead of the thumbnails;
            they are decoded shard by shard, within the same memory budget.

    Returns:
        ``(distances (nq, k), positions (nq, k))`` as in `knn_search`, rows in
        the order of ``query_rows``.
    """
    metric = metric or SPACES[space][1]
    features = _ShardFeatures(shard_paths, space, metric, int(block_mb * 2**20), input_pixels)
    n = int(features.starts[-1])
    query_rows = np.arange(n) if query_rows is None else np.asarray(query_rows, dtype=np.int64)
    if len(query_rows) and (query_rows.min() < 0 or query_rows.max() >= n):
        raise IndexError(f"knn_over_shards: query rows must lie in [0, {n})")
    order = np.argsort(query_rows, kind="stable")
    sorted_rows = query_rows[order]
    block_rows = max(1, int(block_mb * 2**20) // (4 * max(features.width, 1)))
    distances = np.full((len(query_rows), k), np.inf, dtype=np.float32)
    positions = np.full((len(query_rows), k), -1, dtype=np.int64)
    n_blocks = max(1, -(-len(sorted_rows) // block_rows))
    for b in range(0, len(sorted_rows), block_rows):
        rows = sorted_rows[b:b + block_rows]
        queries = features.of_rows(rows)
        logger.info("k-NN %s: query block %d/%d (%d rows)", space, b // block_rows + 1,
                    n_blocks, len(rows))
        block_d, block_p = knn_search(queries, features.reference_blocks(reference_mask), k,
                                      metric=metric, query_positions=rows,
                                      device=device, progress=True)
        distances[order[b:b + block_rows]] = block_d
        positions[order[b:b + block_rows]] = block_p
    return distances, positions


def vote(neighbour_labels: np.ndarray, neighbour_distances: np.ndarray) -> np.ndarray:
    """k-NN prediction per row: (n, k) labels and distances -> (n,) int64 class.

    Majority vote; a tie goes to the class with the smallest summed distance of
    its neighbours, then to the smaller class id. Labels < 0 (unknown or
    missing neighbours) do not vote; a row without any vote predicts -1.
    """
    neighbour_labels = np.asarray(neighbour_labels, dtype=np.int64)
    neighbour_distances = np.asarray(neighbour_distances, dtype=np.float64)
    n, k = neighbour_labels.shape
    prediction = np.full(n, -1, dtype=np.int64)
    if n == 0 or k == 0 or neighbour_labels.max(initial=-1) < 0:
        return prediction
    n_classes = int(neighbour_labels.max()) + 1
    valid = neighbour_labels >= 0
    block = max(1, 4_000_000 // n_classes)
    for start in range(0, n, block):
        labels = neighbour_labels[start:start + block]
        dist = np.where(valid[start:start + block], neighbour_distances[start:start + block], 0.0)
        dist = np.where(np.isfinite(dist), dist, 0.0)
        ok = valid[start:start + block]
        m = len(labels)
        flat = (np.arange(m)[:, None] * n_classes + np.maximum(labels, 0))[ok]
        counts = np.bincount(flat, minlength=m * n_classes).reshape(m, n_classes)
        summed = np.bincount(flat, weights=dist[ok], minlength=m * n_classes).reshape(m, n_classes)
        # Counts are integers; the tie-break term lies in [0, 0.5], so it can
        # only order classes with equal counts.
        total = summed.sum(axis=1, keepdims=True)
        score = counts - 0.5 * summed / np.where(total > 0, total, 1.0)
        score[counts == 0] = -1.0
        best = np.argmax(score, axis=1)
        prediction[start:start + block] = np.where(ok.any(axis=1), best, -1)
    return prediction


def knn_accuracy(labels: np.ndarray, neighbour_rows: np.ndarray, neighbour_distances: np.ndarray,
                 ks: Sequence[int]) -> dict[int, float]:
    """Leave-one-out accuracy of `vote` over the first k neighbours, for each k in ``ks``.

    ``labels`` (n,) are the classes of a set of images that are both the
    queries and the references; ``neighbour_rows`` (n, K) index into that set
    (-1 = none), nearest first, with ``neighbour_distances`` (n, K).
    Returns ``{k: fraction of images whose vote equals their label}``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    neighbour_labels = np.where(neighbour_rows >= 0, labels[np.maximum(neighbour_rows, 0)], -1)
    out = {}
    for k in ks:
        predicted = vote(neighbour_labels[:, :k], neighbour_distances[:, :k])
        out[int(k)] = float(np.mean(predicted == labels)) if len(labels) else float("nan")
    return out

