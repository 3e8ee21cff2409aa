"""Tile grids: small images laid out on a framed grid, and the helpers that make tiles.

Filter images, activation panels and top-k patch pages are all grids of
small pictures. The pieces here are plain functions over numpy arrays and
PIL images:

- `scale_to_unit` maps an array to 0..1 by its own range;
- `to_rgb_uint8` turns 0..1 values into an RGB ``uint8`` tile;
- `upscale_nearest` enlarges a tile by an integer factor (pixels stay square);
- `fit_in_square` scales a picture to fit a square cell, centred on grey;
- `tile_grid` lays equally sized tiles on a grid, each in a frame whose
  colour can flag it (e.g. a dead channel in red);
- `caption_font` is the font of the captions drawn on these figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFont

__all__ = ["GREY_RGB", "scale_to_unit", "to_uint8", "to_rgb_uint8", "upscale_nearest",
           "fit_in_square", "tile_grid", "caption_font"]

#: Fill of an empty cell (nothing to show there).
GREY_RGB = (128, 128, 128)


def scale_to_unit(values: np.ndarray, scale: str) -> np.ndarray:
    """Map ``values`` (any shape) to 0..1 by their own range.

    ``scale="minmax"`` maps min..max to 0..1; ``scale="symmetric"`` maps
    ``-m..m`` with ``m = max |values|``, so 0 lands on 0.5. A constant array
    (or an all-zero one for ``symmetric``) becomes 0.5 everywhere.
    """
    if scale == "minmax":
        lo, hi = float(values.min()), float(values.max())
        if hi - lo <= 0:
            return np.full_like(values, 0.5, dtype=np.float64)
        return (values - lo) / (hi - lo)
    if scale == "symmetric":
        peak = float(np.abs(values).max())
        if peak <= 0:
            return np.full_like(values, 0.5, dtype=np.float64)
        return 0.5 + 0.5 * values / peak
    raise ValueError(f"scale must be 'minmax' or 'symmetric', got {scale!r}")


def to_uint8(images01: np.ndarray) -> np.ndarray:
    """Values in 0..1, any shape -> uint8 ``round(255 v)`` (half to even), clipped to 0..255
    (the inverse of the 1/255 step of `convscope.data.preprocess.normalize`)."""
    return np.clip(np.rint(np.asarray(images01) * 255.0), 0, 255).astype(np.uint8)


def to_rgb_uint8(tile01: np.ndarray) -> np.ndarray:
    """(h, w) or (h, w, 3) values in 0..1 -> (h, w, 3) uint8 (grey tiles repeat the channel)."""
    tile = to_uint8(tile01)
    if tile.ndim == 2:
        tile = np.repeat(tile[..., None], 3, axis=2)
    return tile


def upscale_nearest(tile: np.ndarray, factor: int) -> np.ndarray:
    """(h, w, ...) -> (h * factor, w * factor, ...) by pixel repetition; ``factor <= 1`` returns it."""
    if factor <= 1:
        return tile
    return np.repeat(np.repeat(tile, factor, axis=0), factor, axis=1)


def fit_in_square(image: Image.Image, cell_px: int, fill=GREY_RGB) -> Image.Image:
    """``image`` scaled to fit a ``cell_px`` x ``cell_px`` RGB cell, centred on ``fill``.

    Shrinking uses Lanczos, enlarging bicubic; the aspect ratio is kept.
    """
    cell = Image.new("RGB", (cell_px, cell_px), fill)
    scale = cell_px / max(image.width, image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
    image = image.resize(size, resample)
    cell.paste(image, ((cell_px - size[0]) // 2, (cell_px - size[1]) // 2))
    return cell


def tile_grid(tiles: Sequence[np.ndarray], flagged: np.ndarray, pad: int, *,
              ncols: int | None = None, background: int = 40,
              flag_rgb: tuple[int, int, int] = (220, 30, 30)) -> np.ndarray:
    """Lay equally sized (h, w, 3) uint8 tiles on a grid, each framed by ``pad`` pixels.

    Args:
        tiles: the tiles, row by row.
        flagged: (len(tiles),) bool; a flagged tile's frame is ``flag_rgb``,
            the others' is the ``background`` grey level.
        pad: frame width in pixels.
        ncols: columns; default the count that makes the grid about square.
    Returns:
        (rows * (h + 2 pad) + pad, ncols * (w + 2 pad) + pad, 3) uint8 image.
    """
    tile_h, tile_w = tiles[0].shape[:2]
    n = len(tiles)
    if ncols is None:
        ncols = max(1, math.ceil(math.sqrt(n * tile_h / tile_w)))
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    cell_h, cell_w = tile_h + 2 * pad, tile_w + 2 * pad
    canvas = np.full((nrows * cell_h + pad, ncols * cell_w + pad, 3), background, np.uint8)
    for i, tile in enumerate(tiles):
        y, x = (i // ncols) * cell_h + pad // 2, (i % ncols) * cell_w + pad // 2
        if flagged[i]:
            canvas[y:y + cell_h, x:x + cell_w] = flag_rgb
        canvas[y + pad:y + pad + tile_h, x + pad:x + pad + tile_w] = tile
    return canvas


def caption_font(size: int):
    """Pillow's default font at ``size`` px (fixed size on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()
