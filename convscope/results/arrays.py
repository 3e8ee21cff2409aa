"""`ShardArray`: one per-image dataset of the feature shards, read lazily, shard by shard.

Rows are images in shard order (the order of `Results.images`); indexing opens
only the shards that hold the requested rows, so no more than one shard's part
is read at a time and the whole array is never loaded unless asked for.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import h5py
import numpy as np

from convscope.store.shards import iter_shards, open_shard

__all__ = ["ShardArray"]


class ShardArray:
    """A ``(n_images, ...)`` array stored across shard files, read on demand.

    ``dataset`` is an HDF5 path inside each shard (e.g. ``"layers/relu2/max"``);
    ``rows`` is the number of images of each shard (their index.json counts).

    Example::

        acts = results.activations("relu2")     # a ShardArray, nothing read yet
        acts.shape                              # (120, 32)
        acts[:10, 5]                            # opens the first shard only
    """

    def __init__(self, shard_paths: Sequence[str | os.PathLike], dataset: str,
                 rows: Sequence[int] | None = None):
        self.shard_paths = [str(p) for p in shard_paths]
        self.dataset = dataset
        if not self.shard_paths:
            raise ValueError(f"no shards hold {dataset!r}")
        if rows is None:
            rows = [_dataset_info(p, dataset)[0][0] for p in self.shard_paths]
        shape, self.dtype = _dataset_info(self.shard_paths[0], dataset)
        self._offsets = np.concatenate([[0], np.cumsum(np.asarray(rows, dtype=np.int64))])
        self.shape = (int(self._offsets[-1]), *shape[1:])

    @property
    def ndim(self) -> int:
        """Number of dimensions (2 for per-channel summaries).

        Example: ``results.activations("relu2").ndim``  ->  ``2``
        """
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return (f"ShardArray({self.dataset!r}, shape={self.shape}, dtype={self.dtype}, "
                f"shards={len(self.shard_paths)})")

    def iter_shards(self) -> Iterator[np.ndarray]:
        """Yield the array shard by shard (one shard in memory at a time).

        Example::

            peak = max(chunk.max() for chunk in results.activations("relu2").iter_shards())
        """
        for chunk in iter_shards(self.shard_paths, [self.dataset]):
            yield chunk[self.dataset]

    def read(self) -> np.ndarray:
        """The whole array in memory (fine for small runs; prefer slicing or `iter_shards`).

        Example: ``results.activations("relu2").read().mean(axis=0)``
        """
        return self[:]

    def __array__(self, dtype=None, copy=None):
        array = self.read()
        return array if dtype is None else array.astype(dtype)

    def __getitem__(self, key) -> np.ndarray:
        """Rows by int, slice, integer or boolean array; then any index of the other axes.

        Example: ``acts[[3, 70], :8]`` reads rows 3 and 70 from their two shards.
        """
        rows, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        scalar = isinstance(rows, (int, np.integer))
        wanted = self._row_numbers(rows)
        out = np.empty((len(wanted), *self.shape[1:]), dtype=self.dtype)
        shard_of = np.searchsorted(self._offsets, wanted, side="right") - 1
        for shard in np.unique(shard_of):
            take = np.flatnonzero(shard_of == shard)
            local = wanted[take] - self._offsets[shard]
            out[take] = self._read_rows(int(shard), local)
        out = out[(slice(None), *rest)] if rest else out
        return out[0] if scalar else out

    def _row_numbers(self, rows) -> np.ndarray:
        """Global row numbers (int64, in the order asked) for an int, slice or index array."""
        n = self.shape[0]
        if isinstance(rows, slice):
            return np.arange(n, dtype=np.int64)[rows]
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if rows.shape != (n,):
                raise IndexError(f"boolean index of length {rows.shape} for {n} rows")
            return np.flatnonzero(rows)
        rows = rows.astype(np.int64).reshape(-1)
        if rows.size and (rows.max() >= n or rows.min() < -n):
            raise IndexError(f"row index out of range for {n} rows")
        return np.where(rows < 0, rows + n, rows)

    def _read_rows(self, shard: int, local: np.ndarray) -> np.ndarray:
        """Rows ``local`` of one shard: one contiguous read from the first to the last."""
        lo, hi = int(local.min()), int(local.max()) + 1
        with open_shard(self.shard_paths[shard]) as f:
            block = f[self.dataset][lo:hi]
        return block[local - lo]


def _dataset_info(path: str, dataset: str) -> tuple[tuple[int, ...], np.dtype]:
    with open_shard(path) as f:
        if dataset not in f:
            raise KeyError(f"shard {path} has no dataset {dataset!r}")
        data = f[dataset]
        if not isinstance(data, h5py.Dataset):
            raise KeyError(f"{dataset!r} in shard {path} is a group, not a dataset")
        return tuple(data.shape), data.dtype
