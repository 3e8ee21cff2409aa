"""The model's input pixels of manifest images, decoded again for pixel-space neighbours."""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from convscope.config.sections import PreprocessConfig
from convscope.data.images import ImageReadError, load_image
from convscope.data.preprocess import as_preprocess_config, input_hw, prepare_uint8

__all__ = ["InputPixels"]


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
