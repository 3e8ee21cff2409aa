"""Reading the stages' files for the report: small functions, no analysis.

Every function reads what a stage wrote and returns plain Python or pandas
values; nothing here recomputes a statistic (sums and maxima of benchmark rows
per rule are the only arithmetic, to show one line per rule).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from convscope.store.shards import iter_shards, open_shard, read_attrs
from convscope.store.tables import read_table

__all__ = ["read_json", "failed_rows", "nonfinite_counts", "benchmark_rows", "read_unit_stats",
           "read_unit_histograms", "read_image_table", "BENCHMARK_COLUMNS"]

#: Columns of a Snakemake benchmark file (``benchmark:`` directive).
BENCHMARK_COLUMNS = ["s", "h:m:s", "max_rss", "max_vms", "max_uss", "max_pss", "io_in", "io_out",
                     "mean_load", "cpu_time"]


def read_json(path: str | os.PathLike):
    """The JSON value stored at ``path``."""
    return json.loads(Path(path).read_text())


def failed_rows(shard_paths: Sequence[str], manifest: pd.DataFrame) -> list[dict]:
    """Images the extraction could not read: manifest row, path and reason."""
    paths = manifest.set_index("index")["path"]
    rows = []
    for chunk in iter_shards(shard_paths, ["failed/index", "failed/reason"]):
        for index, reason in zip(chunk["failed/index"], chunk["failed/reason"]):
            rows.append({"index": int(index), "path": paths.get(int(index), "?"),
                         "reason": reason})
    return rows


def nonfinite_counts(shard_paths: Sequence[str]) -> dict[str, int]:
    """Per layer, the (image, channel) maps with NaN or infinite values, over all shards."""
    totals: dict[str, int] = {}
    for path in shard_paths:
        for layer, count in (read_attrs(path).get("nonfinite_maps") or {}).items():
            totals[layer] = totals.get(layer, 0) + int(count)
    return totals


def _benchmark_rule(path: Path) -> str:
    """``results/benchmarks/<rule>.tsv`` or ``results/benchmarks/<rule>/<wildcards>.tsv`` -> rule."""
    parts = path.with_suffix("").parts
    if "benchmarks" in parts[:-1]:
        return parts[len(parts) - 1 - parts[::-1].index("benchmarks") + 1]
    return path.stem


def benchmark_rows(paths: Sequence[str | os.PathLike]) -> list[dict]:
    """One row per rule from Snakemake benchmark TSVs: jobs, wall time summed (s), peak
    resident memory (max ``max_rss``, MB) and CPU time summed (s); rules by wall time."""
    per_rule: dict[str, dict] = {}
    for path in map(Path, paths):
        table = pd.read_csv(path, sep="\t")
        missing = [c for c in ("s", "max_rss") if c not in table.columns]
        if missing:
            raise ValueError(f"benchmark file {path} has no column {missing[0]!r}; a Snakemake "
                             f"benchmark has {', '.join(BENCHMARK_COLUMNS)}")
        numbers = table.apply(pd.to_numeric, errors="coerce")
        row = per_rule.setdefault(_benchmark_rule(path), {"jobs": 0, "seconds": 0.0,
                                                          "max_rss_mb": np.nan, "cpu_s": 0.0})
        row["jobs"] += len(table)
        row["seconds"] += float(numbers["s"].sum())
        row["max_rss_mb"] = float(np.fmax(row["max_rss_mb"], numbers["max_rss"].max()))
        if "cpu_time" in numbers:
            row["cpu_s"] += float(numbers["cpu_time"].sum())
    rows = [{"rule": rule, **values} for rule, values in per_rule.items()]
    return sorted(rows, key=lambda row: -row["seconds"])


def read_unit_stats(stats_csv: str | os.PathLike) -> pd.DataFrame:
    """The units stage's ``stats.csv``; ``preferred_class`` (str, "" when unknown) and
    ``class_selectivity`` (float in [0, 1], NaN when unknown) are added when absent."""
    table = read_table(stats_csv, keep_default_na=False, na_values=[""])
    if "preferred_class" not in table.columns:
        table["preferred_class"] = ""
    table["preferred_class"] = table["preferred_class"].fillna("").astype(str)
    if "class_selectivity" not in table.columns:
        table["class_selectivity"] = np.nan
    table["dead"] = table["dead"].astype(str).str.lower().isin(["true", "1"])
    return table


def read_unit_histograms(path: str | os.PathLike | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per layer ``(counts (C, B) int64, edges (C, B+1) float64)`` from ``histograms.h5``;
    {} when ``path`` is None. Layer groups are named as in the shards (`layer_key`)."""
    if path is None:
        return {}
    result = {}
    with h5py.File(path, "r") as f:
        for key, group in f.items():
            result[key.replace("\\", "/")] = (group["counts"][()], group["edges"][()])
    return result


def read_image_table(shard_paths: Sequence[str], manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per extracted image: ``index``, ``label``, ``pred`` (top-1 class), the
    manifest's attribute columns and the shards' pixel attributes (``image_attrs/*``)."""
    frames = []
    for path in shard_paths:
        with open_shard(path) as f:
            frame = pd.DataFrame({"index": f["index"][()], "label": f["label"][()],
                                  "pred": f["topk/class"][:, 0]})
            for name, values in f.get("image_attrs", {}).items():
                frame[name] = values[()]
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["index", "label", "pred"])
    extra = [c for c in manifest.columns
             if c not in ("index", "path", "slot", "label", "split") and c not in table.columns]
    return table.merge(manifest[["index", *extra]], on="index", how="left")

