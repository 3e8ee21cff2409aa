"""t-SNE map of the CNN codes, after Karpathy's "t-SNE visualization of CNN codes".

Pipeline, streamed shard by shard so that only the reduced codes are held::

    codes (N, D) --L2 normalise (optional)--> IncrementalPCA (N, p <= 50)
                 --openTSNE--> coordinates (N, 2)

PCA is fitted with `sklearn.decomposition.IncrementalPCA` (``partial_fit``
over batches of shards) and applied shard by shard, so memory holds the
(N, p) float32 reduced codes, not the (N, D) codes. openTSNE picks its
Barnes-Hut gradient below 10 000 points and its FFT-interpolation gradient
above (``method: auto``). When N exceeds ``fit_max``, t-SNE is fitted on a
seeded random sample of ``fit_max`` points and the others are placed into
that map with openTSNE's ``transform`` (in batches of ``transform_batch_size``);
``coords.csv`` marks which points were fitted.

The trustworthiness of the map (`sklearn.manifold.trustworthiness`, 1 = the
map invents no neighbours) is measured on a seeded sample of
``trust_sample`` points against the PCA-reduced codes that t-SNE was given.

Outputs of `run_embedding`, each at the path it is given:

``coords``   CSV: index (manifest row), x, y, label, fitted, grid_row, grid_col
``scatter``  PNG: the map, points coloured by class
``mosaic``   PNG: thumbnails snapped to an S x S grid (see `convscope.render.mosaic`)
``cloud``    PNG: thumbnails pasted at their map positions
``summary``  JSON: n, trustworthiness, perplexity, PCA variance explained, timings, ...

With fewer than `MIN_TSNE_IMAGES` images there is no map to draw: every
output is still written (coords with empty x/y, figures that say why) and
the summary's ``skipped`` says why, so the report can show it.

Settings come from the ``embedding`` section (`EmbeddingConfig`); their
defaults and ranges are in the config schema.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from convscope.analysis.common import class_name, class_names, save_figure, save_placeholder
from convscope.config.sections import EmbeddingConfig
from convscope.render.mosaic import gather_thumbs, grid_assign, render_cloud, render_mosaic
from convscope.store.atomic import atomic_path, save_image, write_text
from convscope.store.shards import iter_shards, open_shard, read_concat

__all__ = [
    "MIN_TSNE_IMAGES",
    "l2_normalize",
    "reduce_codes",
    "fit_tsne",
    "map_trustworthiness",
    "plot_scatter",
    "run_embedding",
]

logger = logging.getLogger(__name__)

#: The fewest images a t-SNE map is computed for (openTSNE needs perplexity >= 1,
#: i.e. at least 4 points).
MIN_TSNE_IMAGES = 4


def l2_normalize(codes: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``codes`` (n, D) divided by their L2 norm (zero rows stay zero), float32."""
    codes = np.asarray(codes, dtype=np.float32)
    norms = np.linalg.norm(codes, axis=1, keepdims=True)
    return codes / np.maximum(norms, eps)


def _iter_code_batches(shard_paths: Sequence, min_rows: int,
                       normalize: bool) -> Iterator[np.ndarray]:
    """Codes in batches of at least ``min_rows`` rows (IncrementalPCA needs >= p per call).

    Shards are concatenated until a batch is big enough; a short tail is
    folded into the previous batch. At most about three batches are held.
    """
    pending: np.ndarray | None = None
    buffer: list[np.ndarray] = []
    buffered = 0
    for chunk in iter_shards(shard_paths, ["codes"]):
        codes = chunk["codes"].astype(np.float32, copy=False)
        buffer.append(l2_normalize(codes) if normalize else codes)
        buffered += len(codes)
        if buffered >= min_rows:
            if pending is not None:
                yield pending
            pending = np.concatenate(buffer)
            buffer, buffered = [], 0
    if buffer:
        tail = np.concatenate(buffer)
        if pending is None:
            pending = tail
        elif len(tail) < min_rows:
            pending = np.concatenate([pending, tail])
        else:
            yield pending
            pending = tail
    if pending is not None:
        yield pending


def _codes_shape(shard_paths: Sequence) -> tuple[int, int]:
    """(N, D) of the codes over all shards, read from the HDF5 headers only."""
    n, dims = 0, None
    for path in shard_paths:
        with open_shard(path) as f:
            if "codes" not in f:
                raise KeyError(f"shard {path} has no dataset 'codes'")
            n += int(f["codes"].shape[0])
            dims = int(f["codes"].shape[1])
    return n, dims


def reduce_codes(shard_paths: Sequence[str | os.PathLike], pca_dims: int | None,
                 normalize: bool) -> tuple[np.ndarray, dict]:
    """Stream the shards' codes through (optional) L2 normalisation and IncrementalPCA.

    Returns ``(reduced, info)``: ``reduced`` is (N, p) float32 with
    p = min(pca_dims, D, N) (or the normalised codes themselves when
    ``pca_dims`` is 0/None), ``info`` holds ``n``, ``dims_in``, ``dims_out``
    and ``pca_variance_explained`` (fraction per component, a list).
    Two passes over the shards: fit, then transform.
    """
    from sklearn.decomposition import IncrementalPCA

    shard_paths = list(shard_paths)
    if not shard_paths:
        raise ValueError("reduce_codes: no shards given")
    n, dims_in = _codes_shape(shard_paths)
    info = {"n": n, "dims_in": dims_in, "l2_normalize": bool(normalize)}
    if not pca_dims:
        parts = [l2_normalize(c["codes"]) if normalize else c["codes"].astype(np.float32)
                 for c in iter_shards(shard_paths, ["codes"])]
        reduced = np.concatenate(parts)
        info.update(dims_out=dims_in, pca_variance_explained=None)
        return reduced, info
    n_components = int(min(pca_dims, dims_in, n))
    # Batches of >= max(5 * p, 1000) rows keep each partial_fit well conditioned.
    min_rows = min(n, max(5 * n_components, 1000))
    pca = IncrementalPCA(n_components=n_components)
    for batch in tqdm(_iter_code_batches(shard_paths, min_rows, normalize),
                      desc="PCA fit", unit="batch"):
        pca.partial_fit(batch)
    reduced = np.empty((n, n_components), dtype=np.float32)
    start = 0
    for chunk in tqdm(iter_shards(shard_paths, ["codes"]), total=len(shard_paths),
                      desc="PCA transform", unit="shard"):
        codes = chunk["codes"].astype(np.float32, copy=False)
        codes = l2_normalize(codes) if normalize else codes
        reduced[start:start + len(codes)] = pca.transform(codes)
        start += len(codes)
    info.update(dims_out=n_components,
                pca_variance_explained=[float(v) for v in pca.explained_variance_ratio_])
    return reduced, info


def _fit_rows(n: int, fit_max: int, seed: int) -> np.ndarray:
    """Rows t-SNE is fitted on: all ``n``, or a sorted seeded sample of ``fit_max``."""
    if n > fit_max:
        return np.sort(np.random.default_rng(seed).choice(n, size=fit_max, replace=False))
    return np.arange(n)


def fit_tsne(points: np.ndarray, cfg: EmbeddingConfig, *, n_jobs: int = 1,
             verbose: bool = False) -> tuple[np.ndarray, np.ndarray, dict]:
    """2-D t-SNE coordinates of ``points`` (N, p) with openTSNE.

    Reads ``perplexity``, ``n_iter``, ``early_exaggeration_iter``,
    ``learning_rate``, ``method``, ``neighbours``, ``seed``, ``fit_max`` and
    ``transform_batch_size`` of ``cfg``. Returns ``(xy, fitted, info)``: ``xy``
    (N, 2) float32, ``fitted`` (N,) bool (False for points placed by
    ``transform`` after fitting on a seeded sample of ``fit_max`` points),
    ``info`` with the effective perplexity, the gradient method, ``n_fitted``
    and the KL divergence of the fit. The same inputs and seed give the same
    map (with ``n_jobs=1``; more threads may reorder floating-point sums).
    """
    from openTSNE import TSNE

    points = np.ascontiguousarray(points, dtype=np.float32)
    n = len(points)
    if n < MIN_TSNE_IMAGES:
        raise ValueError(f"fit_tsne: need at least {MIN_TSNE_IMAGES} points, got {n}")
    seed, perplexity = int(cfg.seed), float(cfg.perplexity)
    fit_rows = _fit_rows(n, int(cfg.fit_max), seed)
    fitted = np.zeros(n, dtype=bool)
    fitted[fit_rows] = True
    n_fit = len(fit_rows)
    effective_perplexity = float(min(perplexity, (n_fit - 1) / 3.0))
    if effective_perplexity < perplexity:
        logger.warning("perplexity %.1f is too large for %d points; using %.1f",
                       perplexity, n_fit, effective_perplexity)
    grad_method = cfg.method if cfg.method != "auto" else ("bh" if n_fit < 10_000 else "fft")
    tsne = TSNE(
        n_components=2,
        perplexity=effective_perplexity,
        learning_rate=cfg.learning_rate,
        early_exaggeration_iter=int(cfg.early_exaggeration_iter),
        n_iter=int(cfg.n_iter),
        negative_gradient_method=grad_method,
        neighbors=cfg.neighbours,
        random_state=seed,
        n_jobs=int(n_jobs),
        verbose=verbose,
    )
    logger.info("t-SNE: fitting %d points (%s gradient, perplexity %.1f)",
                n_fit, grad_method, effective_perplexity)
    embedding = tsne.fit(points[fit_rows])
    xy = np.empty((n, 2), dtype=np.float32)
    xy[fit_rows] = np.asarray(embedding, dtype=np.float32)
    _place_rest(embedding, points, xy, np.flatnonzero(~fitted), int(cfg.transform_batch_size))
    info = {
        "perplexity": perplexity,
        "perplexity_effective": effective_perplexity,
        "method": grad_method,
        "n_fitted": int(n_fit),
        "kl_divergence": float(getattr(embedding, "kl_divergence", float("nan"))),
    }
    return xy, fitted, info


def _place_rest(embedding, points: np.ndarray, xy: np.ndarray, rest: np.ndarray,
                batch: int) -> None:
    """Fill ``xy[rest]`` (in place) with openTSNE ``transform`` of ``points[rest]``, in batches."""
    for start in tqdm(range(0, len(rest), batch), desc="t-SNE transform", unit="batch",
                      disable=len(rest) == 0):
        rows = rest[start:start + batch]
        xy[rows] = np.asarray(embedding.transform(points[rows]), dtype=np.float32)


def map_trustworthiness(points: np.ndarray, xy: np.ndarray, n_neighbors: int, sample: int,
                        seed: int) -> tuple[float, int, int]:
    """Trustworthiness of ``xy`` (N, 2) w.r.t. ``points`` (N, p) on a seeded sample.

    Returns ``(trustworthiness, n_sample, n_neighbors)``; ``n_neighbors`` is
    lowered below n_sample / 2 as scikit-learn requires.
    """
    from sklearn.manifold import trustworthiness

    n = len(points)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    k = int(max(1, min(n_neighbors, (len(rows) - 1) // 2)))
    value = trustworthiness(points[rows], xy[rows], n_neighbors=k)
    return float(value), int(len(rows)), k


def _scatter_classes(ax, xy: np.ndarray, labels: np.ndarray, rows: np.ndarray,
                     names: Sequence[str], size: float) -> None:
    """Draw the points ``rows`` of ``xy`` on ``ax``: grey unlabelled, one colour per class."""
    present = sorted(int(c) for c in np.unique(labels[rows]))
    unknown = rows[labels[rows] < 0]
    if len(unknown):
        ax.scatter(xy[unknown, 0], xy[unknown, 1], s=size, c="0.7", lw=0, label="unlabelled",
                   rasterized=True)
    known = [c for c in present if c >= 0]
    if len(known) > 20:
        sel = rows[labels[rows] >= 0]
        ax.scatter(xy[sel, 0], xy[sel, 1], s=size, c=labels[sel], cmap="turbo", lw=0,
                   rasterized=True)
        return
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(known) <= 10 else "tab20"]
    for i, c in enumerate(known):
        sel = rows[labels[rows] == c]
        ax.scatter(xy[sel, 0], xy[sel, 1], s=size, color=palette(i), lw=0,
                   label=class_name(names, c), rasterized=True)
    if known or len(unknown):
        ax.legend(loc="best", fontsize=7, markerscale=max(1.0, 12.0 / size), frameon=False)


def plot_scatter(xy: np.ndarray, labels: np.ndarray, names: Sequence[str],
                 path: str | os.PathLike, *, title: str, max_points: int, seed: int) -> None:
    """Scatter plot of the map ``xy`` (N, 2), one colour per class, saved as PNG at ``path``.

    ``labels`` (N,) are class ids (-1 = unlabelled, drawn grey), ``names``
    their names. At most ``max_points`` points are drawn (a seeded sample). A
    legend is drawn for up to 20 classes; beyond, colours come from a
    continuous colour map.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = np.asarray(labels)
    n = len(xy)
    rows = np.arange(n)
    if n > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))
    size = float(np.clip(2000.0 / math.sqrt(max(len(rows), 1)), 0.5, 20.0))
    fig = Figure(figsize=(8, 8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    _scatter_classes(ax, xy, labels, rows, names, size)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def _grid_side(n: int, cfg: EmbeddingConfig) -> int:
    """Mosaic side S: ``grid_size``, or min(``grid_max``, floor(sqrt(n))) when it is 0."""
    if cfg.grid_size:
        return int(cfg.grid_size)
    return int(max(1, min(cfg.grid_max, math.isqrt(n))))


def _write_mosaic(shard_paths: Sequence[Path], xy: np.ndarray, cfg: EmbeddingConfig,
                  path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Snap the map to the grid and save the mosaic PNG; ``(cells (S, S), grid method)``."""
    side = _grid_side(len(xy), cfg)
    cells = grid_assign(xy, side, exact_max_cells=int(cfg.exact_max_cells), seed=int(cfg.seed))
    grid_method = "exact" if side * side <= int(cfg.exact_max_cells) else "recursive-bisection"
    filled = cells >= 0
    thumbs = gather_thumbs(shard_paths, cells[filled])  # in row-major cell order
    tile_of_cell = np.full(cells.shape, -1, dtype=np.int64)
    tile_of_cell[filled] = np.arange(int(filled.sum()))
    save_image(path, render_mosaic(tile_of_cell, thumbs, int(cfg.tile_px)))
    return cells, grid_method


def _grid_positions(cells: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(grid_row, grid_col), each (n,) int64: the cell of every point, -1 if not placed."""
    grid_row = np.full(n, -1, dtype=np.int64)
    grid_col = np.full(n, -1, dtype=np.int64)
    rr, cc = np.nonzero(cells >= 0)  # cells[rr, cc] are the placed points
    grid_row[cells[rr, cc]] = rr
    grid_col[cells[rr, cc]] = cc
    return grid_row, grid_col


def _write_cloud(shard_paths: Sequence[Path], xy: np.ndarray, cfg: EmbeddingConfig,
                 path: str | os.PathLike) -> int:
    """Paste a seeded sample of thumbnails at their map positions; save; the number pasted."""
    rng = np.random.default_rng(int(cfg.seed))
    cloud_rows = rng.permutation(len(xy))[: int(cfg.cloud_max_images)]  # pasted in this order
    cloud_thumbs = gather_thumbs(shard_paths, cloud_rows)
    save_image(path, render_cloud(xy[cloud_rows], cloud_thumbs, int(cfg.cloud_px),
                                  int(cfg.cloud_tile_px)))
    return int(len(cloud_rows))


def _write_coords(path: str | os.PathLike, index: np.ndarray, xy: np.ndarray,
                  labels: np.ndarray, fitted: np.ndarray, cells: np.ndarray) -> None:
    """The coordinates table, one row per image in shard order."""
    grid_row, grid_col = _grid_positions(cells, len(xy))
    table = pd.DataFrame({
        "index": index, "x": xy[:, 0], "y": xy[:, 1], "label": labels, "fitted": fitted,
        "grid_row": grid_row, "grid_col": grid_col,
    })
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def _summary(cfg: EmbeddingConfig, pca_info: dict, tsne_info: dict, trust: tuple,
             cells: np.ndarray, grid_method: str, n_cloud: int, names: list[str]) -> dict:
    """The JSON summary of a run (see the module docstring); no wall-clock times, which
    live in the rule's benchmark file, so the same config gives the same file."""
    variance = pca_info["pca_variance_explained"]
    trustworthiness, trust_n, trust_k = trust
    return {
        "n": int(pca_info["n"]),
        "n_fitted": tsne_info["n_fitted"],
        "dims_in": pca_info["dims_in"],
        "pca_dims": pca_info["dims_out"],
        "pca_variance_explained": None if variance is None else float(sum(variance)),
        "pca_variance_explained_per_component": variance,
        "l2_normalize": bool(cfg.l2_normalize),
        "perplexity": tsne_info["perplexity"],
        "perplexity_effective": tsne_info["perplexity_effective"],
        "method": tsne_info["method"],
        # openTSNE sums the KL divergence over its threads in no fixed order: its last
        # digits vary from run to run (the map does not), so keep 6 significant digits
        "kl_divergence": float(f"{tsne_info['kl_divergence']:.6g}"),
        "seed": int(cfg.seed),
        "trustworthiness": trustworthiness,
        "trustworthiness_k": trust_k,
        "trustworthiness_sample": trust_n,
        "grid_size": int(cells.shape[0]),
        "grid_method": grid_method,
        "grid_filled": int((cells >= 0).sum()),
        "cloud_images": n_cloud,
        "class_names": names,
    }


def _write_skipped(index: np.ndarray, labels: np.ndarray, names: list[str], *, coords, scatter,
                   mosaic, cloud, summary) -> dict:
    """Every output of a dataset too small for a map: empty coordinates, notes, the reason."""
    reason = (f"t-SNE needs at least {MIN_TSNE_IMAGES} images, the dataset has {len(index)} "
              "(readable); no map was made")
    logger.warning("embedding skipped: %s", reason)
    n = len(index)
    _write_coords(coords, index, np.full((n, 2), np.nan, dtype=np.float32), labels,
                  np.zeros(n, dtype=bool), np.full((0, 0), -1, dtype=np.int64))
    for path in (scatter, mosaic, cloud):
        save_placeholder(path, reason)
    result = {"n": int(n), "skipped": reason, "trustworthiness": None, "class_names": names}
    write_text(summary, json.dumps(result, indent=2))
    return result


def run_embedding(shard_paths: Sequence[str | os.PathLike], manifest_csv: str | os.PathLike | None,
                  cfg: EmbeddingConfig, *, coords: str | os.PathLike,
                  scatter: str | os.PathLike, mosaic: str | os.PathLike,
                  cloud: str | os.PathLike, summary: str | os.PathLike,
                  n_jobs: int = 1) -> dict:
    """Compute the t-SNE map of the codes in ``shard_paths`` and write the five outputs.

    ``cfg`` is the validated ``embedding`` section. ``manifest_csv`` is read
    only when the shards carry no ``class_names``. ``coords``, ``scatter``,
    ``mosaic``, ``cloud`` and ``summary`` are the output paths (see the module
    docstring), each written atomically. ``n_jobs`` is the number of threads
    openTSNE may use. Returns the summary written to ``summary``.
    """
    shard_paths = [Path(p) for p in shard_paths]
    if not shard_paths:
        raise ValueError("run_embedding: no shards given")
    seconds: dict[str, float] = {}
    tic = time.perf_counter()
    index = read_concat(shard_paths, "index").astype(np.int64)
    labels = read_concat(shard_paths, "label").astype(np.int64)
    names = class_names(shard_paths, manifest_csv)
    if len(index) < MIN_TSNE_IMAGES:
        return _write_skipped(index, labels, names, coords=coords, scatter=scatter,
                              mosaic=mosaic, cloud=cloud, summary=summary)
    reduced, pca_info = reduce_codes(shard_paths, cfg.pca_dims, cfg.l2_normalize)
    seconds["pca"] = time.perf_counter() - tic

    tic = time.perf_counter()
    xy, fitted, tsne_info = fit_tsne(reduced, cfg, n_jobs=n_jobs)
    seconds["tsne"] = time.perf_counter() - tic
    tic = time.perf_counter()
    trust = map_trustworthiness(reduced, xy, int(cfg.trust_k), int(cfg.trust_sample),
                                int(cfg.seed))
    seconds["trustworthiness"] = time.perf_counter() - tic
    del reduced

    tic = time.perf_counter()
    cells, grid_method = _write_mosaic(shard_paths, xy, cfg, mosaic)
    seconds["mosaic"] = time.perf_counter() - tic
    tic = time.perf_counter()
    n_cloud = _write_cloud(shard_paths, xy, cfg, cloud)
    seconds["cloud"] = time.perf_counter() - tic
    tic = time.perf_counter()
    title = (f"t-SNE of CNN codes: {len(xy)} images, perplexity "
             f"{tsne_info['perplexity_effective']:.0f}, trustworthiness {trust[0]:.3f} "
             f"(k={trust[2]})")
    plot_scatter(xy, labels, names, scatter, title=title,
                 max_points=int(cfg.scatter_max_points), seed=int(cfg.seed))
    seconds["scatter"] = time.perf_counter() - tic

    _write_coords(coords, index, xy, labels, fitted, cells)
    result = _summary(cfg, pca_info, tsne_info, trust, cells, grid_method, n_cloud, names)
    write_text(summary, json.dumps(result, indent=2))
    logger.info("embedding: %d points, trustworthiness %.3f; seconds per step %s", len(xy),
                trust[0], {k: round(v, 3) for k, v in seconds.items()})
    return result
