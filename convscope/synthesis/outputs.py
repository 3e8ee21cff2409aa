"""The synthesis stages' pictures: enlarged, side by side, in grids, saved as PNG.

Every file appears atomically (`convscope.store.atomic`). HDF5 arrays and
``summary.json`` are written by `convscope.store.h5.write_h5` and
`convscope.store.summary.write_summary`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from convscope.render.grids import tile_grid, upscale_nearest
from convscope.store.atomic import save_image

__all__ = ["PNG_MIN_SIDE", "upscaled", "side_by_side", "save_picture", "save_grid",
           "display_factor"]

_GAP_GREY = 255

#: Images smaller than this are enlarged (nearest neighbour) in the PNGs, in pixels.
PNG_MIN_SIDE = 128


def _rgb(image: np.ndarray) -> np.ndarray:
    """(h, w, 1) grey -> (h, w, 3); RGB unchanged."""
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def upscaled(image: np.ndarray, min_side: int = PNG_MIN_SIDE) -> np.ndarray:
    """(H, W, C) uint8 -> RGB (H k, W k, 3), k the smallest making the short side >= min_side."""
    return upscale_nearest(_rgb(image), max(1, -(-min_side // min(image.shape[:2]))))


def display_factor(height: int, target_px: int = 128) -> int:
    """Integer nearest-neighbour enlargement bringing a ``height`` px image near ``target_px``."""
    return max(1, int(round(target_px / max(1, height))))


def side_by_side(images: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """Equally tall (h, w, 3) uint8 images in a row, white ``gap`` px between them."""
    height = images[0].shape[0]
    parts = []
    for image in images:
        parts += [image, np.full((height, gap, 3), _GAP_GREY, np.uint8)]
    return np.concatenate(parts[:-1], axis=1)


def save_picture(path: str | os.PathLike, image: np.ndarray, factor: int = 1) -> None:
    """Save an (h, w, 3) or (h, w, 1) uint8 image as RGB PNG, atomically, enlarged ``factor``
    times (nearest neighbour)."""
    save_image(path, Image.fromarray(np.ascontiguousarray(upscale_nearest(_rgb(image), factor))))


def save_grid(path: str | os.PathLike, tiles: Sequence[np.ndarray], flagged=None,
              ncols: int | None = None) -> None:
    """`tile_grid` of equally sized uint8 tiles, saved as PNG (flagged tiles framed red)."""
    flagged = np.zeros(len(tiles), bool) if flagged is None else np.asarray(flagged, bool)
    save_image(path, Image.fromarray(tile_grid(tiles, flagged, 3, ncols=ncols)))
