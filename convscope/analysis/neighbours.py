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

Search is exact brute force in tiles, never an N x N matrix, and a query
never counts as its own neighbour (leave-one-out); k-NN classification is a
majority vote with distance tie-breaks (`convscope.analysis.knn`).

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
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw

from convscope.analysis.common import class_name, class_names
from convscope.analysis.input_pixels import InputPixels
from convscope.analysis.knn import (TIE_BREAK, knn_accuracy, knn_over_shards,
                                    space_features_name, space_metric)
from convscope.config.sections import NeighboursConfig, PreprocessConfig
from convscope.nn.device import resolve_device
from convscope.render.grids import caption_font
from convscope.render.mosaic import gather_thumbs
from convscope.store.atomic import atomic_path, save_image, write_text
from convscope.store.shards import read_concat

__all__ = ["sample_queries", "render_panels", "run_neighbours"]

logger = logging.getLogger(__name__)


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


def _label_counts(labels: np.ndarray) -> dict:
    """``n`` labelled images, ``n_classes`` present and the ``majority_class_fraction``."""
    labelled = labels[labels >= 0]
    counts = np.bincount(labelled) if len(labelled) else np.zeros(0)
    return {"n": int(len(labelled)), "n_classes": int((counts > 0).sum()),
            "majority_class_fraction": (float(counts.max() / len(labelled)) if len(labelled)
                                        else None)}


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
    uses_input = features_of.get("pixel") == "input"
    if uses_input and (manifest_csv is None or preprocess is None):
        raise ValueError("neighbours.pixel_space is 'input': the pixel space reads the "
                         "images from the manifest and prepares them with the preprocess "
                         "section, so run_neighbours needs manifest_csv and preprocess "
                         "(or set neighbours.pixel_space: thumbs)")
    if n_threads:
        torch.set_num_threads(int(n_threads))
    device = resolve_device(str(cfg.device), key="neighbours.device")
    input_pixels = None
    if uses_input:
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
    summary = {
        **_label_counts(labels),
        "n_images": int(len(index)),
        "results": results,
        "tie_break": TIE_BREAK,
        "spaces": {space: _space_summary(space, cfg, input_pixels) for space in spaces},
        "n_queries": n_queries,
        "notes": notes,
        "device": str(device),
    }
    logger.info("neighbours: seconds per step %s (wall-clock timings are in the rule's "
                "benchmark file, not in the results)", {k: round(v, 3) for k, v in seconds.items()})
    write_text(accuracy, json.dumps(summary, indent=2))
    return summary
