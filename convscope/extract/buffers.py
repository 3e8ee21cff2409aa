"""Host arrays of one shard, filled batch by batch, each image at its manifest row's place."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from convscope.data.images import PIXEL_ATTRIBUTE_NAMES
from convscope.store.shards import layer_key

__all__ = ["ShardBuffers"]


class ShardBuffers:
    """The shard's per-image arrays (see `convscope.store.shards`), one slot per manifest row.

    Batches may arrive in any order and hold their images in any order: `put`
    places each image by its manifest row; `finished` keeps the rows that were
    filled (failed images leave theirs empty), in manifest order.
    """

    def __init__(self, rows: Sequence[int], layer_shapes: Mapping[str, Sequence[int]],
                 codes_dim: int, thumb_px: int):
        """``rows``: the shard's manifest rows, ascending; ``layer_shapes``: layer name ->
        output shape (C, ...); ``codes_dim``: D of the (N, D) codes."""
        self.rows = np.asarray(rows, dtype=np.int64)
        if len(self.rows) > 1 and not (np.diff(self.rows) > 0).all():
            raise ValueError("shard rows must be ascending")
        n = len(self.rows)
        self.filled = np.zeros(n, dtype=bool)
        self.arrays: dict[str, np.ndarray] = {
            "index": np.zeros(n, np.int64),
            "label": np.zeros(n, np.int32),
            "topk/class": np.zeros((n, 5), np.int32),
            "topk/prob": np.zeros((n, 5), np.float32),
            "codes": np.zeros((n, codes_dim), np.float32),
            "thumbs": np.zeros((n, thumb_px, thumb_px, 3), np.uint8),
        }
        for name, (channels, *_rest) in layer_shapes.items():
            key = layer_key(name)
            self.arrays[f"layers/{key}/max"] = np.zeros((n, channels), np.float32)
            self.arrays[f"layers/{key}/argmax"] = np.zeros((n, channels), np.int32)
            self.arrays[f"layers/{key}/mean"] = np.zeros((n, channels), np.float32)
        for attr in PIXEL_ATTRIBUTE_NAMES:
            self.arrays[f"image_attrs/{attr}"] = np.zeros(n, np.float32)

    @property
    def n_filled(self) -> int:
        return int(self.filled.sum())

    def put(self, host: Mapping[str, torch.Tensor]) -> None:
        """One batch on the host: ``index`` (n,) manifest rows, ``attrs`` (n, 7) pixel
        attributes, and (n, ...) tensors named as the shard's datasets."""
        index = host["index"].numpy()
        slots = np.searchsorted(self.rows, index)
        if (slots >= len(self.rows)).any() or (self.rows[np.minimum(slots, len(self.rows) - 1)]
                                               != index).any():
            raise KeyError(f"manifest rows {index.tolist()} are not all in this shard")
        for name, value in host.items():
            if name == "attrs":
                for j, attr in enumerate(PIXEL_ATTRIBUTE_NAMES):
                    self.arrays[f"image_attrs/{attr}"][slots] = value[:, j].numpy()
            else:
                self.arrays[name][slots] = value.numpy()
        self.filled[slots] = True

    def finished(self) -> dict[str, np.ndarray]:
        """The filled rows of every array, in manifest order."""
        return {name: array[self.filled] for name, array in self.arrays.items()}
