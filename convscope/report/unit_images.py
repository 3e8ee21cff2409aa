"""Per-unit pictures for the site: the top patch, the strip of top-k patches and of context
crops (the whole image with the receptive-field box), cut from the original images.

The crops are the topk_units stage's own (`convscope.analysis.topk_units`: the same
boxes from ``topk.csv``, the same cell functions), so the site shows exactly what that
stage found; this is rendering only. Each image is read once per group of
`CHANNELS_PER_READ` channels, which bounds memory for layers of thousands of channels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from PIL import Image

# The top-k stage's cell functions, reused so that the site's crops are its crops.
from convscope.analysis.topk_units import context_cell, fires, images_of_rows, patch_cell
from convscope.render.grids import GREY_RGB

__all__ = ["CHANNELS_PER_READ", "strip", "render_layer_units"]


#: Channels whose crops are held in memory at once.
CHANNELS_PER_READ = 256
_GAP = 2


def strip(cells: list[Image.Image | None], cell_px: int) -> Image.Image:
    """Cells side by side, 2 px apart on white; a None cell is grey (no firing, unreadable)."""
    n = max(len(cells), 1)
    canvas = Image.new("RGB", (n * cell_px + (n - 1) * _GAP, cell_px), (255, 255, 255))
    for i, cell in enumerate(cells):
        canvas.paste(cell if cell is not None else Image.new("RGB", (cell_px, cell_px), GREY_RGB),
                     (i * (cell_px + _GAP), 0))
    return canvas


def _crop_cells(rows: pd.DataFrame, manifest: pd.DataFrame, cell_px: int) -> dict:
    """(channel, rank) -> (patch, context) cells for the firing rows, each image read once."""
    cells = {}
    for image, group in images_of_rows(rows[fires(rows)], manifest, "report"):
        for row in group.itertuples(index=False):
            cells[int(row.channel), int(row.rank)] = (patch_cell(image, row, cell_px),
                                                      context_cell(image, row, cell_px))
    return cells


def render_layer_units(rows: pd.DataFrame, manifest: pd.DataFrame, cell_px: int,
                       save: Callable[[Image.Image, str], str], folder: str) -> dict[int, dict]:
    """Write every channel's pictures of one layer's ``topk.csv`` rows under ``folder``.

    Per channel ``c``: ``c{c:04d}-top.png`` (the rank-0 patch, ``cell_px`` square),
    ``c{c:04d}-patches.png`` (all ranks) and ``c{c:04d}-context.png`` (whole images
    with the box, same cell size). ``save(image, rel)`` writes one and
    returns its site path. Returns channel -> ``{"top", "patches", "context"}`` paths.
    """
    written: dict[int, dict] = {}
    channels = np.unique(rows["channel"].to_numpy())
    ranks = int(rows["rank"].max()) + 1 if len(rows) else 0
    for start in range(0, len(channels), CHANNELS_PER_READ):
        chunk = channels[start:start + CHANNELS_PER_READ]
        cells = _crop_cells(rows[rows["channel"].isin(chunk)], manifest, cell_px)
        for channel in map(int, chunk):
            pairs = [cells.get((channel, rank), (None, None)) for rank in range(ranks)]
            stem = f"{folder}/c{channel:04d}"
            written[channel] = {
                "top": save(strip([pairs[0][0] if pairs else None], cell_px), f"{stem}-top.png"),
                "patches": save(strip([p for p, _ in pairs], cell_px), f"{stem}-patches.png"),
                "context": save(strip([c for _, c in pairs], cell_px), f"{stem}-context.png"),
            }
    return written
