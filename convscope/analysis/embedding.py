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
that map with openTSNE's ``transform`` (in batches of ``transform_batch``);
``coords.csv`` marks which points were fitted.

The trustworthiness of the map (`sklearn.manifold.trustworthiness`, 1 = the
map invents no neighbours) is measured on a seeded sample of
``trust_sample`` points against the PCA-reduced codes that t-SNE was given.

Outputs of `run_embedding` (under ``out_dir``):

``coords.csv``      index (manifest row), x, y, label, fitted, grid_row, grid_col
``scatter.png``     the map, points coloured by class
``mosaic.png``      thumbnails snapped to an S x S grid (see `convscope.render.mosaic`)
``cloud.png``       thumbnails pasted at their map positions
``embedding.json``  n, trustworthiness, perplexity, PCA variance explained, timings, ...
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from convscope.render.mosaic import gather_thumbs, grid_assign, render_cloud, render_mosaic
from convscope.store.shards import iter_shards, read_attrs, read_concat

__all__ = [
    "EMBEDDING_DEFAULTS",
    "check_embedding_config",
    "l2_normalize",
    "reduce_codes",
    "fit_tsne",
    "map_trustworthiness",
    "plot_scatter",
    "run_embedding",
]

logger = logging.getLogger(__name__)

#: Config section ``embedding``: every key with its default.
EMBEDDING_DEFAULTS: dict = {
    "l2_normalize": True,          # divide each code by its L2 norm before PCA
    "pca_dims": 50,                # PCA components (<= D, <= N); 0 or null = no PCA
    "perplexity": 30.0,            # lowered to (n_fit - 1) / 3 for tiny datasets
    "n_iter": 500,                 # optimisation iterations after early exaggeration
    "early_exaggeration_iter": 250,
    "learning_rate": "auto",       # "auto" (N / exaggeration) or a number
    "method": "auto",              # auto | bh | fft  (openTSNE negative_gradient_method)
    "neighbors": "auto",           # auto | exact | annoy | pynndescent (openTSNE)
    "seed": 0,
    "fit_max": 50000,              # fit on a sample of this many points, transform the rest
    "transform_batch": 50000,      # points placed per openTSNE transform call
    "trust_sample": 1000,          # points used to measure trustworthiness
    "trust_k": 10,                 # neighbourhood size of the trustworthiness
    "grid_size": 0,                # mosaic S (S x S cells); 0 = min(grid_max, floor(sqrt(N)))
    "grid_max": 40,
    "exact_max_cells": 2500,       # exact assignment up to this many cells, scalable above
    "tile_px": 32,                 # mosaic cell size in pixels
    "cloud_px": 2000,              # side of the cloud image in pixels
    "cloud_max_images": 1500,      # thumbnails pasted into the cloud (seeded sample)
    "cloud_tile_px": 32,
    "scatter_max_points": 200000,  # points drawn in the scatter plot (seeded sample)
}

_CHOICES = {
    "method": ("auto", "bh", "fft"),
    "neighbors": ("auto", "exact", "approx", "annoy", "pynndescent"),
}
_POSITIVE_INTS = ("n_iter", "fit_max", "transform_batch", "trust_sample", "trust_k", "grid_max",
                  "exact_max_cells", "tile_px", "cloud_px", "cloud_max_images", "cloud_tile_px",
                  "scatter_max_points")


def check_embedding_config(cfg: dict | None) -> dict:
    """``cfg`` merged over `EMBEDDING_DEFAULTS`; raise ValueError naming a bad key."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(EMBEDDING_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown embedding config key(s) {unknown}; valid keys: "
                         + ", ".join(EMBEDDING_DEFAULTS))
    merged = {**EMBEDDING_DEFAULTS, **cfg}
    for key, choices in _CHOICES.items():
        if merged[key] not in choices:
            raise ValueError(f"embedding.{key} is {merged[key]!r}; valid values: {list(choices)}")
    for key in _POSITIVE_INTS:
        if not isinstance(merged[key], (int, np.integer)) or merged[key] < 1:
            raise ValueError(f"embedding.{key} must be an integer >= 1, got {merged[key]!r}")
    if not merged["perplexity"] or float(merged["perplexity"]) <= 0:
        raise ValueError(f"embedding.perplexity must be > 0, got {merged['perplexity']!r}")
    if merged["pca_dims"] is not None and int(merged["pca_dims"]) < 0:
        raise ValueError(f"embedding.pca_dims must be >= 0 or null, got {merged['pca_dims']!r}")
    if int(merged["grid_size"] or 0) < 0:
        raise ValueError(f"embedding.grid_size must be >= 0, got {merged['grid_size']!r}")
    lr = merged["learning_rate"]
    if lr != "auto" and (not isinstance(lr, (int, float)) or lr <= 0):
        raise ValueError(f"embedding.learning_rate must be 'auto' or a number > 0, got {lr!r}")
    return merged


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
        with h5py.File(path, "r", locking=False) as f:
            if "codes" not in f:
                raise KeyError(f"shard {path} has no dataset 'codes'")
            n += int(f["codes"].shape[0])
            dims = int(f["codes"].shape[1])
    return n, dims


def reduce_codes(shard_paths: Sequence[str | os.PathLike], pca_dims: int | None = 50,
                 normalize: bool = True) -> tuple[np.ndarray, dict]:
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


def fit_tsne(points: np.ndarray, *, perplexity: float = 30.0, n_iter: int = 500,
             early_exaggeration_iter: int = 250, learning_rate="auto", method: str = "auto",
             neighbors: str = "auto", seed: int = 0, n_jobs: int = 1, fit_max: int = 50000,
             transform_batch: int = 50000,
             verbose: bool = False) -> tuple[np.ndarray, np.ndarray, dict]:
    """2-D t-SNE coordinates of ``points`` (N, p) with openTSNE.

    Returns ``(xy, fitted, info)``: ``xy`` (N, 2) float32, ``fitted`` (N,)
    bool (False for points placed by ``transform`` after fitting on a seeded
    sample of ``fit_max`` points), ``info`` with the effective perplexity,
    the gradient method, ``n_fitted`` and the KL divergence of the fit.
    The same inputs and seed give the same map (with ``n_jobs=1``; more
    threads may reorder floating-point sums).
    """
    from openTSNE import TSNE

    points = np.ascontiguousarray(points, dtype=np.float32)
    n = len(points)
    if n < 4:
        raise ValueError(f"fit_tsne: need at least 4 points, got {n}")
    rng = np.random.default_rng(seed)
    fitted = np.ones(n, dtype=bool)
    if n > fit_max:
        fit_rows = np.sort(rng.choice(n, size=fit_max, replace=False))
        fitted[:] = False
        fitted[fit_rows] = True
    else:
        fit_rows = np.arange(n)
    n_fit = len(fit_rows)
    effective_perplexity = float(min(perplexity, (n_fit - 1) / 3.0))
    if effective_perplexity < perplexity:
        logger.warning("perplexity %.1f is too large for %d points; using %.1f",
                       perplexity, n_fit, effective_perplexity)
    grad_method = method if method != "auto" else ("bh" if n_fit < 10_000 else "fft")
    tsne = TSNE(
        n_components=2,
        perplexity=effective_perplexity,
        learning_rate=learning_rate,
        early_exaggeration_iter=early_exaggeration_iter,
        n_iter=n_iter,
        negative_gradient_method=grad_method,
        neighbors=neighbors,
        random_state=seed,
        n_jobs=n_jobs,
        verbose=verbose,
    )
    logger.info("t-SNE: fitting %d points (%s gradient, perplexity %.1f)",
                n_fit, grad_method, effective_perplexity)
    embedding = tsne.fit(points[fit_rows])
    xy = np.empty((n, 2), dtype=np.float32)
    xy[fit_rows] = np.asarray(embedding, dtype=np.float32)
    rest = np.flatnonzero(~fitted)
    for start in tqdm(range(0, len(rest), transform_batch), desc="t-SNE transform",
                      unit="batch", disable=len(rest) == 0):
        rows = rest[start:start + transform_batch]
        xy[rows] = np.asarray(embedding.transform(points[rows]), dtype=np.float32)
    info = {
        "perplexity": float(perplexity),
        "perplexity_effective": effective_perplexity,
        "method": grad_method,
        "n_fitted": int(n_fit),
        "kl_divergence": float(getattr(embedding, "kl_divergence", float("nan"))),
    }
    return xy, fitted, info


def map_trustworthiness(points: np.ndarray, xy: np.ndarray, n_neighbors: int = 10,
                        sample: int = 1000, seed: int = 0) -> tuple[float, int, int]:
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


def plot_scatter(xy: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                 path: str | os.PathLike, *, title: str = "", max_points: int = 200000,
                 seed: int = 0) -> None:
    """Scatter plot of the map ``xy`` (N, 2), one colour per class, saved as PNG.

    A legend is drawn for up to 20 classes; beyond, colours come from a
    continuous colour map. Unlabelled points (label -1) are grey.
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
    present = sorted(int(c) for c in np.unique(labels[rows]))
    unknown = rows[labels[rows] < 0]
    if len(unknown):
        ax.scatter(xy[unknown, 0], xy[unknown, 1], s=size, c="0.7", lw=0, label="unlabelled",
                   rasterized=True)
    known = [c for c in present if c >= 0]
    if len(known) <= 20:
        from matplotlib import colormaps

        palette = colormaps["tab10" if len(known) <= 10 else "tab20"]
        for i, c in enumerate(known):
            sel = rows[labels[rows] == c]
            name = class_names[c] if c < len(class_names) else str(c)
            ax.scatter(xy[sel, 0], xy[sel, 1], s=size, color=palette(i), lw=0, label=name,
                       rasterized=True)
        if known or len(unknown):
            ax.legend(loc="best", fontsize=7, markerscale=max(1.0, 12.0 / size), frameon=False)
    else:
        sel = rows[labels[rows] >= 0]
        ax.scatter(xy[sel, 0], xy[sel, 1], s=size, c=labels[sel], cmap="turbo", lw=0,
                   rasterized=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def _class_names(shard_paths: Sequence, manifest_csv) -> list[str]:
    """Class names from the shard attributes, else from the manifest."""
    names = read_attrs(shard_paths[0]).get("class_names") or []
    if not names and manifest_csv is not None:
        from convscope.data.manifest import read_manifest

        names = read_manifest(manifest_csv)[1]
    return [str(name) for name in names]


def _grid_side(n: int, cfg: dict) -> int:
    if cfg["grid_size"]:
        return int(cfg["grid_size"])
    return int(max(1, min(cfg["grid_max"], math.isqrt(n))))


def run_embedding(shard_paths: Sequence[str | os.PathLike], manifest_csv: str | os.PathLike | None,
                  out_dir: str | os.PathLike, cfg: dict | None = None, n_jobs: int = 1) -> dict:
    """Compute the t-SNE map of the codes in ``shard_paths`` and write it under ``out_dir``.

    ``cfg`` is the ``embedding`` config section (keys: `EMBEDDING_DEFAULTS`).
    ``manifest_csv`` is read only when the shards carry no ``class_names``.
    ``n_jobs`` is the number of threads openTSNE may use. Returns the
    summary written to ``embedding.json``.
    """
    cfg = check_embedding_config(cfg)
    shard_paths = [Path(p) for p in shard_paths]
    if not shard_paths:
        raise ValueError("run_embedding: no shards given")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    seed = int(cfg["seed"])

    tic = time.perf_counter()
    index = read_concat(shard_paths, "index").astype(np.int64)
    labels = read_concat(shard_paths, "label").astype(np.int64)
    class_names = _class_names(shard_paths, manifest_csv)
    reduced, pca_info = reduce_codes(shard_paths, cfg["pca_dims"], cfg["l2_normalize"])
    seconds["pca"] = time.perf_counter() - tic

    tic = time.perf_counter()
    xy, fitted, tsne_info = fit_tsne(
        reduced, perplexity=float(cfg["perplexity"]), n_iter=int(cfg["n_iter"]),
        early_exaggeration_iter=int(cfg["early_exaggeration_iter"]),
        learning_rate=cfg["learning_rate"], method=cfg["method"], neighbors=cfg["neighbors"],
        seed=seed, n_jobs=int(n_jobs), fit_max=int(cfg["fit_max"]),
        transform_batch=int(cfg["transform_batch"]))
    seconds["tsne"] = time.perf_counter() - tic

    tic = time.perf_counter()
    trust, trust_n, trust_k = map_trustworthiness(reduced, xy, int(cfg["trust_k"]),
                                                  int(cfg["trust_sample"]), seed)
    seconds["trustworthiness"] = time.perf_counter() - tic
    del reduced

    tic = time.perf_counter()
    n = len(xy)
    side = _grid_side(n, cfg)
    cells = grid_assign(xy, side, exact_max_cells=int(cfg["exact_max_cells"]), seed=seed)
    grid_method = "exact" if side * side <= int(cfg["exact_max_cells"]) else "recursive-bisection"
    grid_row = np.full(n, -1, dtype=np.int64)
    grid_col = np.full(n, -1, dtype=np.int64)
    rr, cc = np.nonzero(cells >= 0)  # cells[rr, cc] are the placed points
    grid_row[cells[rr, cc]] = rr
    grid_col[cells[rr, cc]] = cc
    filled = cells >= 0
    thumbs = gather_thumbs(shard_paths, cells[filled])  # in row-major cell order
    tile_of_cell = np.full(cells.shape, -1, dtype=np.int64)
    tile_of_cell[filled] = np.arange(int(filled.sum()))
    render_mosaic(tile_of_cell, thumbs, int(cfg["tile_px"])).save(out_dir / "mosaic.png")
    del thumbs
    seconds["mosaic"] = time.perf_counter() - tic

    tic = time.perf_counter()
    rng = np.random.default_rng(seed)
    cloud_rows = rng.permutation(n)[: int(cfg["cloud_max_images"])]  # pasted in this order
    cloud_thumbs = gather_thumbs(shard_paths, cloud_rows)
    render_cloud(xy[cloud_rows], cloud_thumbs, int(cfg["cloud_px"]),
                 int(cfg["cloud_tile_px"])).save(out_dir / "cloud.png")
    del cloud_thumbs
    seconds["cloud"] = time.perf_counter() - tic

    tic = time.perf_counter()
    title = (f"t-SNE of CNN codes: {n} images, perplexity {tsne_info['perplexity_effective']:.0f}, "
             f"trustworthiness {trust:.3f} (k={trust_k})")
    plot_scatter(xy, labels, class_names, out_dir / "scatter.png", title=title,
                 max_points=int(cfg["scatter_max_points"]), seed=seed)
    seconds["scatter"] = time.perf_counter() - tic

    pd.DataFrame({
        "index": index, "x": xy[:, 0], "y": xy[:, 1], "label": labels, "fitted": fitted,
        "grid_row": grid_row, "grid_col": grid_col,
    }).to_csv(out_dir / "coords.csv", index=False)
    variance = pca_info["pca_variance_explained"]
    summary = {
        "n": int(n),
        "n_fitted": tsne_info["n_fitted"],
        "dims_in": pca_info["dims_in"],
        "pca_dims": pca_info["dims_out"],
        "pca_variance_explained": None if variance is None else float(sum(variance)),
        "pca_variance_explained_per_component": variance,
        "l2_normalize": bool(cfg["l2_normalize"]),
        "perplexity": tsne_info["perplexity"],
        "perplexity_effective": tsne_info["perplexity_effective"],
        "method": tsne_info["method"],
        "kl_divergence": tsne_info["kl_divergence"],
        "seed": seed,
        "trustworthiness": trust,
        "trustworthiness_k": trust_k,
        "trustworthiness_sample": trust_n,
        "grid_size": int(side),
        "grid_method": grid_method,
        "grid_filled": int((cells >= 0).sum()),
        "cloud_images": int(len(cloud_rows)),
        "class_names": class_names,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
    with open(out_dir / "embedding.json", "w") as fh:
        json.dump(summary, fh, indent=2)
    logger.info("embedding: %d points, trustworthiness %.3f", n, trust)
    return summary
