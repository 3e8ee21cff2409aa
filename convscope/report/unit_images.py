"""Per-unit pictures for the site, packed into sprite sheets: each unit's top-k patches and
context crops (the whole image with the receptive-field box), cut from the original images.

A layer's units are drawn `CHANNELS_PER_SHEET` at a time into one JPEG sheet: one row per
channel, its ``k`` patches then (unless they would repeat them) its ``k`` context crops,
cells ``cell_px`` square and `GAP` px apart. The pages show a unit's part of a sheet with
``<img class="sprite">`` (CSS ``object-fit: none`` and ``object-position``), so a layer of
2,048 channels costs 64 files instead of 6,144, and the browser loads a sheet once for the
32 gallery cards it serves. Where a unit's every patch is its whole image (the receptive
field covers the image), the context crops would show the same pictures again: they are
left out of the sheet and the page says so.

The crops are the topk_units stage's own (`convscope.analysis.topk_units`: the same
boxes from ``topk.csv``, the same cell functions), so the site shows exactly what that
stage found; this is rendering only. Each image is read once per sheet, which bounds
memory for layers of thousands of channels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd
from PIL import Image

# The top-k stage's cell functions, reused so that the site's crops are its crops.
from convscope.analysis.topk_units import context_cell, fires, images_of_rows, patch_cell
from convscope.render.grids import GREY_RGB

__all__ = ["CHANNELS_PER_SHEET", "GAP", "sprite", "render_layer_units"]

#: Channels (rows) of one sprite sheet.
CHANNELS_PER_SHEET = 32
#: Pixels between cells of a sheet (white).
GAP = 2


def _covers_image(image: np.ndarray, row) -> bool:
    """Whether the row's box spans the whole original image (patch = whole image)."""
    height, width = image.shape[:2]
    return (math.floor(row.x0) <= 0 and math.floor(row.y0) <= 0
            and math.ceil(row.x1) >= width and math.ceil(row.y1) >= height)


def _crop_cells(rows: pd.DataFrame, manifest: pd.DataFrame, cell_px: int) -> tuple[dict, dict]:
    """(channel, rank) -> (patch, context) cells of the firing rows, each image read once;
    and channel -> whether every firing patch of it is its whole image."""
    cells, whole = {}, {}
    firing = rows[fires(rows)]
    columns = ["channel", "rank", "x0", "y0", "x1", "y1"]
    for image, group in images_of_rows(firing[["index", *columns]], manifest, "report"):
        # plain tuples: pandas' itertuples costs more than the crops at ResNet-50 size
        for channel, rank, x0, y0, x1, y1 in group[columns].to_numpy().tolist():
            box = _Box(x0, y0, x1, y1)
            cells[int(channel), int(rank)] = (patch_cell(image, box, cell_px),
                                              context_cell(image, box, cell_px))
            whole[int(channel)] = whole.get(int(channel), True) and _covers_image(image, box)
    return cells, whole


class _Box(NamedTuple):
    """A top-k row's box in original-image pixels (what the cell functions read)."""

    x0: float
    y0: float
    x1: float
    y1: float


def sprite(src: str, x: int, y: int, width: int, height: int) -> dict:
    """A part of a sheet as the templates show it: ``{"src", "x", "y", "w", "h"}`` (px)."""
    return {"src": src, "x": int(x), "y": int(y), "w": int(width), "h": int(height)}


def _sheet(chunk, cells: dict, whole: dict, ranks: int, cell_px: int):
    """The sheet image of ``chunk``'s channels, and per channel whether it has context crops."""
    step = cell_px + GAP
    with_context = {c: not whole.get(c, False) for c in chunk}
    columns = ranks * (2 if any(with_context.values()) else 1)
    canvas = Image.new("RGB", (max(columns * step - GAP, 1), len(chunk) * step - GAP),
                       (255, 255, 255))
    grey = Image.new("RGB", (cell_px, cell_px), GREY_RGB)
    for r, channel in enumerate(chunk):
        for rank in range(ranks):
            patch, context = cells.get((channel, rank), (None, None))
            canvas.paste(patch or grey, (rank * step, r * step))
            if with_context[channel]:
                canvas.paste(context or grey, ((ranks + rank) * step, r * step))
    return canvas, with_context


def render_layer_units(rows: pd.DataFrame, manifest: pd.DataFrame, cell_px: int,
                       save: Callable[[Image.Image, str], str], folder: str) -> dict[int, dict]:
    """Write one layer's sprite sheets (``topk.csv`` rows) as ``folder/sheet-NNN.jpg``.

    ``save(image, rel)`` writes a sheet and returns its site path. Returns channel ->
    ``{"top", "patches", "context"}`` (`sprite` dicts; ``context`` None where the
    receptive field is the whole image, so the patches already are the whole images),
    plus ``"whole_image"`` (bool). A grey cell: the unit does not fire on that image.
    """
    written: dict[int, dict] = {}
    channels = [int(c) for c in np.unique(rows["channel"].to_numpy())]
    ranks = int(rows["rank"].max()) + 1 if len(rows) else 0
    step = cell_px + GAP
    strip_w = max(ranks * step - GAP, cell_px)
    for number, start in enumerate(range(0, len(channels), CHANNELS_PER_SHEET)):
        chunk = channels[start:start + CHANNELS_PER_SHEET]
        cells, whole = _crop_cells(rows[rows["channel"].isin(chunk)], manifest, cell_px)
        image, with_context = _sheet(chunk, cells, whole, ranks, cell_px)
        src = save(image, f"{folder}/sheet-{number:03d}.jpg")
        for r, channel in enumerate(chunk):
            y = r * step
            written[channel] = {
                "top": sprite(src, 0, y, cell_px, cell_px),
                "patches": sprite(src, 0, y, strip_w, cell_px),
                "context": sprite(src, ranks * step, y, strip_w, cell_px)
                if with_context[channel] else None,
                "whole_image": bool(whole.get(channel, False))}
    return written
