"""Nearest neighbours in code space and in pixel space, exact and in blocks.

Two spaces are compared (Krizhevsky et al. 2012, fig. 4; Karpathy's CNN codes):

``code``   the shards' ``codes`` (n, D), L2-normalised; cosine distance 1 - cos.
``pixel``  pixels flattened to float32 in [0, 1]; Euclidean distance, or cosine
           distance (``pixel_metric``). Which pixels is ``pixel_space``:

           ``thumbs`` (default)  the shards' ``thumbs`` (n, t, t, 3);
           ``input``             the model's input pixels (in_h, in_w, channels):
                                 each image read again from the manifest
                                 (`convscope.data.images.load_image`) and
                                 resized, cropped and converted exactly as
                                 extraction does (`convscope.data.preprocess.prepare_uint8`
                                 with the run's ``preprocess`` section), before
                                 the mean/std normalisation (`InputPixels`).

           With ``input`` the images are decoded shard by shard (a shard's
           ``index`` gives its manifest rows), never all at once, and only the
           images in the shards are read: those that failed extraction are
           skipped as in every other space.

The space keeps its name ``pixel`` in every output whichever pixels it
compares; the pixels compared are recorded next to it as ``features``
(``codes``, ``thumbs`` or ``input``, `space_features_name`).

Search is exact brute force, done in tiles: a block of query rows (at most
``block_mb`` MB of features) is held on the device (CUDA when present) and
every shard is streamed past it as the reference, in tiles of at most
``_TILE_QUERIES x _TILE_REFERENCES`` distances. The k best so far per query
are kept by `convscope.stats.running.RunningTopK` (ties broken by the smaller
row), so no N x N matrix is ever built and memory is bounded by the block
size. A query never counts as its own neighbour (leave-one-out).

k-NN classification (`vote`): majority vote over the k nearest labelled
neighbours; a tie between classes goes to the class whose tied neighbours
have the smallest summed distance, and an exact tie after that to the
smaller class id.

Outputs of `run_neighbours`, each at the path it is given:

``queries``   CSV: query_index, query_label, space, features, rank,
              neighbour_index, neighbour_label, distance, same_label
``panels``    PNG: per query, the query, then one row of its k nearest per space
              (always the thumbnails, whichever pixels were compared)
``accuracy``  JSON: leave-one-out k-NN accuracy per space and k (each result
              with its ``space``, ``features`` and ``metric``), with n;
              ``spaces`` maps each space to its ``features``, shard
              ``dataset`` (null for ``input``), ``metric`` and, for the pixel
              space, ``pixel_space`` (and ``input_shape`` [h, w, c] for
              ``input``); ``notes`` (e.g. fewer images than ``k``: fewer
              neighbours shown)

Settings come from the ``neighbours`` section (`NeighboursConfig`), and for
``pixel_space: input`` the ``preprocess`` section (`PreprocessConfig`); their
defaults and ranges are in the config schema.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from convscope.analysis.common import class_name, class_names
from convscope.config.sections import NeighboursConfig, PreprocessConfig
from convscope.data.images import ImageReadError, load_image
from convscope.data.preprocess import as_preprocess_config, input_hw, prepare_uint8
from convscope.nn.device import resolve_device
from convscope.render.grids import caption_font
from convscope.render.mosaic import gather_thumbs
from convscope.stats.running import RunningTopK
from convscope.store.atomic import atomic_path, save_image, write_text
from convscope.store.shards import iter_shards, open_shard, read_concat

__all__ = [
    "SPACES",
    "PIXEL_SPACES",
    "TIE_BREAK",
    "METRICS",
    "space_metric",
    "space_features_name",
    "space_features",
    "InputPixels",
    "knn_search",
    "knn_over_shards",
    "vote",
    "knn_accuracy",
    "sample_queries",
    "render_panels",
    "run_neighbours",
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


class InputPixels:
    """The model's input pixels of manifest images, decoded on demand.

    ``manifest`` is the manifest (a path to the CSV written by
    `convscope.data.manifest.write_manifest`, or a frame with ``index``,
    ``path`` and ``slot``); ``preprocess`` the run's ``preprocess`` section.
    `of_index` reads the given manifest rows with
    `convscope.data.images.load_image` and prepares them with
    `convscope.data.preprocess.prepare_uint8` (the CPU path of extraction:
    resize, crop, channels; no normalisation), in ``workers`` threads.
    """

    def __init__(self, manifest: str | os.PathLike | pd.DataFrame,
                 preprocess: PreprocessConfig | Mapping, workers: int = 1):
        if not isinstance(manifest, pd.DataFrame):
            from convscope.data.manifest import read_manifest

            manifest = read_manifest(manifest)[0]
        files = manifest[["index", "path", "slot"]]
        if files["index"].duplicated().any():
            raise ValueError("InputPixels: the manifest's 'index' column has duplicates")
        self._paths = pd.Series(files["path"].astype(str).to_numpy(),
                                index=files["index"].to_numpy(np.int64))
        self._slots = pd.Series(files["slot"].to_numpy(np.int64),
                                index=files["index"].to_numpy(np.int64))
        self.preprocess = as_preprocess_config(preprocess)
        in_h, in_w = input_hw(self.preprocess)
        self.shape = (in_h, in_w, int(self.preprocess.channels))
        self.width = int(np.prod(self.shape))
        self.workers = max(1, int(workers))

    def _one(self, item: tuple[int, str, int]) -> np.ndarray:
        index, path, slot = item
        try:
            image = load_image(path, slot)
        except ImageReadError as exc:
            raise ValueError(
                f"neighbours.pixel_space is 'input' but image {path} (manifest index {index}) "
                f"cannot be read any more: {exc}. It was read when the shards were made: "
                "restore the file or rerun the extraction") from exc
        return prepare_uint8(image, self.preprocess)

    def of_index(self, index: np.ndarray) -> np.ndarray:
        """(len(index), F) float32 input pixels in [0, 1] of the given manifest indices."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        unknown = np.setdiff1d(index, self._paths.index.to_numpy())
        if len(unknown):
            raise KeyError(f"shard rows with manifest indices {unknown[:10].tolist()} are not "
                           "in the manifest: the shards and the manifest do not match")
        items = list(zip(index.tolist(), self._paths.loc[index].tolist(),
                         self._slots.loc[index].tolist()))
        out = np.empty((len(index), self.width), dtype=np.float32)
        if not items:
            return out
        with ThreadPoolExecutor(max_workers=min(self.workers, len(items))) as pool:
            for i, image in enumerate(pool.map(self._one, items)):
                if image.shape != self.shape:
                    raise ValueError(f"input pixels of manifest index {items[i][0]} have shape "
                                     f"{image.shape}, expected {self.shape}")
                out[i] = image.reshape(-1).astype(np.float32) / 255.0
        return out


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


def sample_queries(labels: np.ndarray, per_class: int, max_classes: int,
                   seed: int) -> np.ndarray:
    """Seeded random query rows: ``per_class`` rows of each of up to ``max_classes`` classes.

    Classes are a seeded sample of the labelled classes present (all of them
    when there are at most ``max_classes``); the rows come out grouped by
    class, in class order. With no labels at all, ``per_class * max_classes``
    random rows are drawn.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels[labels >= 0])
    if len(classes) == 0:
        count = min(len(labels), per_class * max_classes)
        return np.sort(rng.choice(len(labels), size=count, replace=False))
    if len(classes) > max_classes:
        classes = np.sort(rng.choice(classes, size=max_classes, replace=False))
    rows = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        rows.append(np.sort(rng.choice(members, size=min(per_class, len(members)), replace=False)))
    return np.concatenate(rows).astype(np.int64)


def render_panels(query_rows: np.ndarray, neighbour_rows: dict[str, np.ndarray],
                  thumbs: dict[int, np.ndarray], labels: np.ndarray, names: Sequence[str],
                  tile_px: int, titles: Mapping[str, str] | None = None) -> Image.Image:
    """One block per query: a row per space with the query, then its k neighbours.

    ``neighbour_rows`` maps space -> (nq, k) rows (-1 = none); ``thumbs`` maps
    a row to its (t, t, 3) uint8 thumbnail. Neighbours of the query's class
    get a green frame, others red (no frame when a label is unknown).
    ``titles`` maps a space to its row title (default ``"<space> space"``).
    """
    spaces = list(neighbour_rows)
    k = max(rows.shape[1] for rows in neighbour_rows.values())
    label_w, gap, pad = 4 * tile_px, tile_px // 3, 2
    cell = tile_px + 2 * pad
    width = label_w + cell * (k + 1) + gap
    height = len(query_rows) * (cell * len(spaces) + gap) + gap
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = caption_font(max(9, tile_px // 4))

    def name(row: int) -> str:
        label = int(labels[row])
        return "?" if label < 0 else class_name(names, label)

    def paste(row: int, left: int, top: int, frame=None) -> None:
        if frame is not None:
            draw.rectangle([left, top, left + cell - 1, top + cell - 1], fill=frame)
        image = Image.fromarray(thumbs[row]).resize((tile_px, tile_px), Image.BILINEAR)
        canvas.paste(image, (left + pad, top + pad))

    top = gap
    for qi, q in enumerate(query_rows):
        for si, space in enumerate(spaces):
            y = top + si * cell
            title = (titles or {}).get(space, f"{space} space")
            text = f"#{q} {name(q)}\n{title}" if si == 0 else title
            draw.multiline_text((4, y + 4), text, fill=(0, 0, 0), font=font)
            if si == 0:
                paste(int(q), label_w, y, frame=(40, 40, 40))
            for rank, r in enumerate(neighbour_rows[space][qi]):
                if r < 0:
                    continue
                frame = None
                if labels[q] >= 0 and labels[r] >= 0:
                    frame = (0, 160, 0) if labels[r] == labels[q] else (200, 0, 0)
                paste(int(r), label_w + gap + cell * (rank + 1), y, frame)
        top += cell * len(spaces) + gap
    return canvas


def _query_rows(cfg: NeighboursConfig, index: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Shard rows of the panel queries: ``query_rows`` (manifest rows) or a seeded sample."""
    if not cfg.query_rows:
        return sample_queries(labels, int(cfg.queries_per_class), int(cfg.max_query_classes),
                              int(cfg.seed))
    wanted = np.asarray(cfg.query_rows, dtype=np.int64)
    unknown = sorted(set(wanted.tolist()) - set(index.tolist()))
    if unknown:
        raise ValueError(f"neighbours.query_rows: manifest rows {unknown[:10]} are not "
                         f"in the shards (valid: 0..{int(index.max())}, minus failed images)")
    row_of_index = pd.Series(np.arange(len(index)), index=index)
    return row_of_index.loc[wanted].to_numpy()


def _neighbour_table(space: str, features: str, query_rows: np.ndarray, dist: np.ndarray,
                     rows: np.ndarray, index: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """Rows of ``queries.csv`` for one space (comparing ``features``): (nq, k) distances and
    neighbour rows, -1 = none."""
    k = rows.shape[1]
    q = np.repeat(query_rows, k)
    r = rows.reshape(-1)
    ok = r >= 0
    return pd.DataFrame({
        "query_index": index[q[ok]],
        "query_label": labels[q[ok]],
        "space": space,
        "features": features,
        "rank": np.tile(np.arange(1, k + 1), len(query_rows))[ok],
        "neighbour_index": index[r[ok]],
        "neighbour_label": labels[r[ok]],
        "distance": dist.reshape(-1)[ok],
        "same_label": (labels[q[ok]] >= 0) & (labels[q[ok]] == labels[r[ok]]),
    })


def _write_queries(shard_paths: Sequence[Path], cfg: NeighboursConfig, spaces: list[str],
                   index: np.ndarray, labels: np.ndarray, names: list[str], device,
                   queries_csv, panels_png, seconds: dict[str, float], notes: list[str],
                   input_pixels: InputPixels | None = None) -> int:
    """Neighbours of the panel queries in each space: the table and the panels; the query count."""
    query_rows = _query_rows(cfg, index, labels)
    k = int(min(cfg.k, max(len(index) - 1, 1)))
    if len(index) - 1 < int(cfg.k):
        notes.append(f"neighbours.k is {cfg.k} but the dataset has {len(index)} readable "
                     f"image(s), so each query has at most {max(len(index) - 1, 0)} "
                     "neighbour(s)")
    neighbour_rows: dict[str, np.ndarray] = {}
    tables = []
    for space in spaces:
        tic = time.perf_counter()
        dist, rows = knn_over_shards(shard_paths, space, k, query_rows=query_rows, device=device,
                                     block_mb=int(cfg.block_mb),
                                     metric=space_metric(space, cfg), input_pixels=input_pixels)
        seconds[f"queries_{space}"] = time.perf_counter() - tic
        neighbour_rows[space] = rows
        tables.append(_neighbour_table(space, space_features_name(space, cfg), query_rows, dist,
                                       rows, index, labels))
    with atomic_path(queries_csv) as tmp:
        pd.concat(tables, ignore_index=True).to_csv(tmp, index=False)
    shown = np.unique(np.concatenate([query_rows] + [r[r >= 0] for r in neighbour_rows.values()]))
    thumbs = dict(zip(shown.tolist(), gather_thumbs(shard_paths, shown)))
    titles = {space: f"{space} space" + ("\n(model input)" if space_features_name(space, cfg)
                                         == "input" else "") for space in spaces}
    save_image(panels_png, render_panels(query_rows, neighbour_rows, thumbs, labels, names,
                                         int(cfg.tile_px), titles))
    return int(len(query_rows))


def _loo_accuracy(shard_paths: Sequence[Path], cfg: NeighboursConfig, spaces: list[str],
                  labels: np.ndarray, device, seconds: dict[str, float],
                  notes: list[str], input_pixels: InputPixels | None = None) -> list[dict]:
    """Leave-one-out k-NN accuracy over the labelled images, one entry per space and k."""
    labelled = np.flatnonzero(labels >= 0)
    ks = sorted(set(int(k) for k in cfg.accuracy_k))
    k_max = int(min(max(ks), max(len(labelled) - 1, 0)))
    if k_max < 1:
        notes.append(f"k-NN accuracy needs at least 2 labelled images, the dataset has "
                     f"{len(labelled)}; it was not computed")
        return []
    if k_max < max(ks):
        notes.append(f"neighbours.accuracy_k asks for up to {max(ks)} neighbours but there are "
                     f"{len(labelled)} labelled image(s); k above {k_max} uses k = {k_max} "
                     "(see k_used)")
    local_of_row = np.full(len(labels), -1, dtype=np.int64)
    local_of_row[labelled] = np.arange(len(labelled))
    results = []
    for space in spaces:
        tic = time.perf_counter()
        dist, rows = knn_over_shards(shard_paths, space, k_max, query_rows=labelled,
                                     reference_mask=labels >= 0, device=device,
                                     block_mb=int(cfg.block_mb),
                                     metric=space_metric(space, cfg), input_pixels=input_pixels)
        seconds[f"accuracy_{space}"] = time.perf_counter() - tic
        local = np.where(rows >= 0, local_of_row[np.maximum(rows, 0)], -1)
        accuracy = knn_accuracy(labels[labelled], local, dist, [min(k, k_max) for k in ks])
        for k_asked in ks:
            results.append({"space": space, "features": space_features_name(space, cfg),
                            "metric": space_metric(space, cfg), "k": k_asked,
                            "k_used": min(k_asked, k_max),
                            "accuracy": accuracy[min(k_asked, k_max)],
                            "n": int(len(labelled))})
    return results


def _space_summary(space: str, cfg: NeighboursConfig,
                   input_pixels: InputPixels | None) -> dict:
    """``knn_accuracy.json``'s description of one space: what it compares, and how."""
    features = space_features_name(space, cfg)
    entry = {"features": features, "dataset": None if features == "input" else features,
             "metric": space_metric(space, cfg)}
    if space == "pixel":
        entry["pixel_space"] = features
        if input_pixels is not None:
            entry["input_shape"] = list(input_pixels.shape)
    return entry


def run_neighbours(shard_paths: Sequence[str | os.PathLike], manifest_csv: str | os.PathLike | None,
                   cfg: NeighboursConfig, *, queries: str | os.PathLike,
                   panels: str | os.PathLike, accuracy: str | os.PathLike,
                   preprocess: PreprocessConfig | None = None,
                   n_threads: int | None = None) -> dict:
    """Query panels, the neighbour table and leave-one-out k-NN accuracy, at the given paths.

    ``cfg`` is the validated ``neighbours`` section. ``manifest_csv`` is read
    when the shards carry no ``class_names``, and for ``pixel_space: input``
    (the images' files), which also needs ``preprocess``, the run's
    ``preprocess`` section. ``queries`` (CSV), ``panels`` (PNG) and
    ``accuracy`` (JSON) are the output paths (see the module docstring), each
    written atomically. ``n_threads`` caps torch's CPU threads and the threads
    decoding input pixels. Returns the summary written to ``accuracy``.
    """
    shard_paths = [Path(p) for p in shard_paths]
    if not shard_paths:
        raise ValueError("run_neighbours: no shards given")
    spaces = list(dict.fromkeys(cfg.spaces))
    features_of = {space: space_features_name(space, cfg) for space in spaces}
    input_pixels = None
    if features_of.get("pixel") == "input":
        if manifest_csv is None or preprocess is None:
            raise ValueError("neighbours.pixel_space is 'input': the pixel space reads the "
                             "images from the manifest and prepares them with the preprocess "
                             "section, so run_neighbours needs manifest_csv and preprocess "
                             "(or set neighbours.pixel_space: thumbs)")
    if n_threads:
        torch.set_num_threads(int(n_threads))
    device = resolve_device(str(cfg.device), key="neighbours.device")
    if features_of.get("pixel") == "input":
        input_pixels = InputPixels(manifest_csv, preprocess,
                                   workers=int(n_threads or torch.get_num_threads()))
    index = read_concat(shard_paths, "index").astype(np.int64)
    labels = read_concat(shard_paths, "label").astype(np.int64)
    names = class_names(shard_paths, manifest_csv)
    seconds: dict[str, float] = {}
    notes: list[str] = []
    n_queries = _write_queries(shard_paths, cfg, spaces, index, labels, names, device,
                               queries, panels, seconds, notes, input_pixels)
    results = _loo_accuracy(shard_paths, cfg, spaces, labels, device, seconds, notes,
                            input_pixels)
    for note in notes:
        logger.warning("%s", note)
    labelled = labels[labels >= 0]
    counts = np.bincount(labelled) if len(labelled) else np.zeros(0)
    summary = {
        "n": int(len(labelled)),
        "n_images": int(len(index)),
        "n_classes": int((counts > 0).sum()),
        "majority_class_fraction": float(counts.max() / len(labelled)) if len(labelled) else None,
        "results": results,
        "tie_break": TIE_BREAK,
        "spaces": {space: _space_summary(space, cfg, input_pixels) for space in spaces},
        "n_queries": n_queries,
        "notes": notes,
        "device": str(device),
        "seconds": {key: round(v, 3) for key, v in seconds.items()},
    }
    write_text(accuracy, json.dumps(summary, indent=2))
    return summary
