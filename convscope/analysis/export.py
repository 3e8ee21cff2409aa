"""Export for the tools people pair with convscope (pandas, DuckDB, FiftyOne): Parquet files.

`export_tables` writes, each at the path it is given:

``images``  one row per manifest row, in manifest order: ``index`` (the image id, manifest
            row), ``path`` (as the manifest holds it), ``label`` / ``label_name``,
            ``split``, ``prediction`` / ``prediction_name`` / ``confidence`` (top-1 class and
            its probability), ``correct``, the manifest's attribute columns, the measured
            image attributes (``attr_<name>``: brightness, width, ...), ``tsne_x`` /
            ``tsne_y`` (null where the image is not on the map), ``neighbours`` /
            ``neighbour_distances`` (the ``neighbours.k`` nearest images by cosine distance
            of the CNN codes, as manifest rows, nearest first) and ``failed`` (why an image
            that could not be read has no numbers; null otherwise);
``codes``   ``index`` and ``code`` (a fixed-size list of float32: the CNN code), one row per
            image with numbers, written shard by shard (one row group each).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from convscope.analysis.common import class_names as shard_class_names
from convscope.analysis.knn import knn_over_shards
from convscope.config.sections import NeighboursConfig
from convscope.data.readers import MANIFEST_COLUMNS
from convscope.nn.device import resolve_device
from convscope.store.atomic import atomic_path
from convscope.store.shards import iter_shards, open_shard
from convscope.store.tables import read_table

__all__ = ["export_tables"]


def _shard_columns(shard_paths: Sequence) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per image with numbers: index, prediction, confidence, measured attributes; and the
    failed images (index, reason)."""
    rows, failed = [], []
    for path in shard_paths:
        with open_shard(path) as f:
            frame = pd.DataFrame({"index": f["index"][()].astype(np.int64),
                                  "prediction": f["topk/class"][:, 0].astype(np.int64),
                                  "confidence": f["topk/prob"][:, 0].astype(np.float32)})
            for name in sorted(f["image_attrs"]) if "image_attrs" in f else []:
                frame[f"attr_{name}"] = f[f"image_attrs/{name}"][()]
            rows.append(frame)
            if "failed/index" in f:
                failed.append(pd.DataFrame({
                    "index": f["failed/index"][()].astype(np.int64),
                    "failed": [r.decode() if isinstance(r, bytes) else str(r)
                               for r in f["failed/reason"][()]]}))
    empty = pd.DataFrame({"index": pd.Series([], dtype=np.int64), "failed": []})
    return pd.concat(rows, ignore_index=True), pd.concat(failed or [empty], ignore_index=True)


def _neighbour_columns(shard_paths: Sequence, index: np.ndarray, cfg: NeighboursConfig):
    """``neighbours`` (manifest rows) and ``neighbour_distances`` of every image with numbers,
    as lists (cosine distance of the codes, exact, nearest first)."""
    k = min(int(cfg.k), max(len(index) - 1, 0))
    if k == 0:
        return [[] for _ in index], [[] for _ in index]
    distances, positions = knn_over_shards(shard_paths, "code", k, block_mb=cfg.block_mb,
                                           device=resolve_device(cfg.device, "neighbours.device"),
                                           metric="cosine")
    found = positions >= 0
    neighbours = [index[p[m]].tolist() for p, m in zip(positions, found)]
    return neighbours, [d[m].astype(np.float32).tolist() for d, m in zip(distances, found)]


def _images_table(shard_paths, manifest_csv, coords_csv, cfg) -> pd.DataFrame:
    manifest = read_table(manifest_csv)
    names = shard_class_names(shard_paths)
    numbers, failed = _shard_columns(shard_paths)
    neighbours, distances = _neighbour_columns(shard_paths, numbers["index"].to_numpy(), cfg)
    numbers["neighbours"], numbers["neighbour_distances"] = neighbours, distances
    coords = read_table(coords_csv)[["index", "x", "y"]].rename(
        columns={"x": "tsne_x", "y": "tsne_y"})
    table = manifest[list(MANIFEST_COLUMNS)].drop(columns="slot")
    table["split"] = table["split"].fillna("all")

    def name_of(ids):
        return [names[i] if 0 <= i < len(names) else None for i in ids]

    table.insert(table.columns.get_loc("label") + 1, "label_name",
                 name_of(table["label"].astype(np.int64)))
    table = table.merge(numbers, on="index", how="left").merge(coords, on="index", how="left")
    table.insert(table.columns.get_loc("prediction") + 1, "prediction_name",
                 [None if pd.isna(p) else name_of([int(p)])[0] for p in table["prediction"]])
    table["prediction"] = table["prediction"].astype("Int64")
    table["correct"] = (table["prediction"] == table["label"]).where(table["label"] >= 0)
    attributes = [c for c in manifest.columns if c not in MANIFEST_COLUMNS]
    for column in attributes:
        table[column] = manifest[column].to_numpy()
    table = table.merge(failed, on="index", how="left")
    table["failed"] = table["failed"].astype("string")
    return table.sort_values("index", kind="stable").reset_index(drop=True)


def _write_codes(shard_paths: Sequence, out: str | os.PathLike) -> int:
    """``codes`` Parquet: index and code, one row group per shard; returns the code length."""
    writer, dim = None, 0
    with atomic_path(out) as tmp:
        try:
            for chunk in iter_shards(shard_paths, ["index", "codes"]):
                codes = np.ascontiguousarray(chunk["codes"], dtype=np.float32)
                dim = codes.shape[1]
                values = pa.FixedSizeListArray.from_arrays(pa.array(codes.reshape(-1)), dim)
                batch = pa.table({"index": pa.array(chunk["index"].astype(np.int64)),
                                  "code": values})
                if writer is None:
                    writer = pq.ParquetWriter(tmp, batch.schema)
                writer.write_table(batch)
        finally:
            if writer is not None:
                writer.close()
    return dim


def export_tables(shard_paths: Sequence[str | os.PathLike], manifest_csv: str | os.PathLike,
                  coords_csv: str | os.PathLike, cfg: NeighboursConfig, *,
                  images: str | os.PathLike, codes: str | os.PathLike) -> dict:
    """Write the ``images`` and ``codes`` Parquet files (see the module doc); returns counts."""
    table = _images_table(list(shard_paths), manifest_csv, coords_csv, cfg)
    with atomic_path(images) as tmp:
        table.to_parquet(tmp, index=False)
    dim = _write_codes(list(shard_paths), codes)
    counts = {"images": len(table), "with_numbers": int(table["prediction"].notna().sum()),
              "failed": int(table["failed"].notna().sum()), "code_dim": dim}
    print(f"exported {counts['images']} images ({counts['failed']} unreadable), codes of "
          f"length {dim}")
    return counts
