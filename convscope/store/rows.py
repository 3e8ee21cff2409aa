"""Which manifest rows go into which shard (no heavy imports: the workflow parses with it)."""

from __future__ import annotations

import math

__all__ = ["n_shards", "shard_rows"]


def n_shards(n_images: int, shard_size: int) -> int:
    """Number of shards of ``shard_size`` rows for ``n_images`` rows (at least one)."""
    return max(1, math.ceil(n_images / shard_size))


def shard_rows(n_images: int, shard_size: int, shard_id: int) -> range:
    """Manifest rows of shard ``shard_id``: a contiguous range, the last one shorter."""
    return range(shard_id * shard_size, min(n_images, (shard_id + 1) * shard_size))
