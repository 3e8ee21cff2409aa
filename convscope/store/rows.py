"""Which manifest rows go into which shard (no heavy imports: the workflow parses with it)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence

__all__ = ["n_shards", "shard_rows", "tar_runs", "manifest_shards", "manifest_paths"]


def n_shards(n_images: int, shard_size: int) -> int:
    """Number of shards of ``shard_size`` rows for ``n_images`` rows (at least one)."""
    return max(1, math.ceil(n_images / shard_size))


def shard_rows(n_images: int, shard_size: int, shard_id: int) -> range:
    """Manifest rows of shard ``shard_id``: a contiguous range, the last one shorter."""
    return range(shard_id * shard_size, min(n_images, (shard_id + 1) * shard_size))


def tar_runs(paths: Sequence[str]) -> list[range] | None:
    """Row ranges of consecutive rows of one ``.tar`` file when every path is a tar (a
    WebDataset manifest: one shard per tar), else None."""
    paths = [str(p) for p in paths]
    if not paths or not all(p.lower().endswith(".tar") for p in paths):
        return None
    runs, start = [], 0
    for i in range(1, len(paths) + 1):
        if i == len(paths) or paths[i] != paths[start]:
            runs.append(range(start, i))
            start = i
    return runs


def manifest_shards(paths: Sequence[str], shard_size: int) -> list[range]:
    """Every shard's manifest rows: one shard per tar for a WebDataset manifest (`tar_runs`),
    else contiguous ranges of ``shard_size`` rows (`shard_rows`)."""
    runs = tar_runs(paths)
    if runs is not None:
        return runs
    return [shard_rows(len(paths), shard_size, k) for k in range(n_shards(len(paths), shard_size))]


def manifest_paths(csv_path: str) -> list[str]:
    """The ``path`` column of a manifest CSV, read without pandas (the workflow parses with it)."""
    with open(csv_path, newline="") as handle:
        return [row["path"] for row in csv.DictReader(handle)]
