"""Figures of the explanation stages: labelled grids of image cells (Pillow, matplotlib colour maps)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

from convscope.render.grids import (caption_font, fit_in_square, scale_to_unit, to_rgb_uint8,
                                    to_uint8)

__all__ = ["heat_cell", "overlay_cell", "image_cell", "signed_rgb_cell", "labelled_grid",
           "class_map_figure"]

_GAP = 3
_TEXT_H = 14
_BACKGROUND = (255, 255, 255)


def image_cell(pixels: np.ndarray, cell_px: int) -> Image.Image:
    """(h, w, 3) uint8 image scaled to fit a ``cell_px`` square."""
    return fit_in_square(Image.fromarray(np.ascontiguousarray(pixels)), cell_px)


def heat_cell(values: np.ndarray, cell_px: int, signed: bool = False) -> Image.Image:
    """(h, w) map coloured by its own range: ``inferno`` from 0 to its maximum, or, signed,
    ``RdBu_r`` symmetric around 0 (red: positive)."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    if signed:
        unit, cmap = scale_to_unit(values, "symmetric"), colormaps["RdBu_r"]
    else:
        peak = float(values.max()) if values.size else 0.0
        unit = values / peak if peak > 0 else np.zeros_like(values)
        cmap = colormaps["inferno"]
    rgb = to_uint8(cmap(np.clip(unit, 0, 1))[..., :3])
    return image_cell(rgb, cell_px)


def overlay_cell(pixels: np.ndarray, values: np.ndarray, cell_px: int) -> Image.Image:
    """The image with the map (0..its maximum, ``jet``) blended over it, half and half."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    peak = float(values.max()) if values.size else 0.0
    unit = values / peak if peak > 0 else np.zeros_like(values)
    heat = colormaps["jet"](np.clip(unit, 0, 1))[..., :3]
    blend = 0.5 * pixels.astype(np.float64) / 255.0 + 0.5 * heat
    return image_cell(to_rgb_uint8(blend), cell_px)


def signed_rgb_cell(values: np.ndarray, cell_px: int) -> Image.Image:
    """(h, w, C) signed values (a reconstruction) as RGB, 0 -> grey, scaled by their maximum |.|."""
    rgb = scale_to_unit(np.asarray(values, dtype=np.float64), "symmetric")
    if rgb.shape[-1] == 1:
        rgb = rgb[..., 0]
    return image_cell(to_rgb_uint8(rgb), cell_px)


def _fit(caption: str, width: int, draw, font) -> str:
    """``caption`` (underscores as spaces) cut to fit ``width`` px, "." marking a cut."""
    text = caption.replace("_", " ")
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength(text + ".", font=font) > width:
        text = text[:-1]
    return text.rstrip() + "."


def labelled_grid(title: str, header: Sequence[str], rows: Sequence[tuple[str, Sequence]],
                  cell_px: int, label_w: int = 0) -> Image.Image:
    """Cells on a grid with a title, a column header and a label per row.

    Args:
        title: text above everything.
        header: one caption per column (may be shorter than the rows).
        rows: (label, cells) per row; a cell is a PIL image of ``cell_px`` or None (grey).
        label_w: width of the label column (0: measured from the labels).
    """
    font = caption_font(11)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    if not label_w:
        label_w = int(max([probe.textlength(label, font=font) for label, _ in rows] + [0])) + 2 * _GAP
    n_cols = max([len(cells) for _, cells in rows] + [len(header), 1])
    step = cell_px + _GAP
    top = 2 * _TEXT_H if header else _TEXT_H
    canvas = Image.new("RGB", (label_w + n_cols * step + _GAP, top + max(len(rows), 1) * step + _GAP),
                       _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((_GAP, 1), title, fill=(0, 0, 0), font=font)
    for col, caption in enumerate(header):
        draw.text((label_w + col * step, _TEXT_H + 1), _fit(caption, cell_px, probe, font),
                  fill=(0, 0, 0), font=font)
    for r, (label, cells) in enumerate(rows):
        y = top + r * step
        draw.text((_GAP, y + cell_px // 2 - 6), label, fill=(0, 0, 0), font=font)
        for col, cell in enumerate(cells):
            canvas.paste(cell if cell is not None else Image.new("RGB", (cell_px, cell_px),
                                                                 (128, 128, 128)),
                         (label_w + col * step, y))
    return canvas


def class_map_figure(mean_maps: np.ndarray, counts: np.ndarray, names: Sequence[str],
                     title: str, path: str | os.PathLike) -> None:
    """Save a map per class (``mean_maps`` (K, H, W), ``counts`` (K,) images averaged) as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from convscope.analysis.common import save_figure

    shown = [k for k in range(len(counts)) if counts[k] > 0]
    n_cols = max(1, min(5, len(shown)))
    n_rows = max(1, -(-len(shown) // n_cols))
    fig = Figure(figsize=(2.2 * n_cols, 2.4 * n_rows + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    fig.suptitle(title, fontsize=10)
    for i, k in enumerate(shown):
        ax = fig.add_subplot(n_rows, n_cols, i + 1)
        ax.imshow(mean_maps[k], cmap="inferno", vmin=0)
        ax.set_title(f"{names[k] if k < len(names) else k} (n={int(counts[k])})", fontsize=8)
        ax.axis("off")
    if not shown:
        fig.text(0.5, 0.5, "no image with a known class", ha="center", va="center")
    save_figure(fig, path, bbox_inches="tight")
