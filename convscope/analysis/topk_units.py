"""Top-k images per unit, and their receptive-field patches.

For every analysed layer and channel (a "unit") we find, over the whole
dataset, the ``k`` images with the largest spatial maximum of that channel
(``layers/<key>/max`` in the shards), with the feature-map position of the
maximum (``layers/<key>/argmax``). Shards are streamed one at a time into a
`convscope.stats.running.RunningTopK` per layer, so memory does not grow with the
number of images.

The position is mapped to a box of model-input pixels through the layer's
receptive field (`convscope.nn.receptive_field.ReceptiveField`), clipped to the
input, and then to original-image pixels through the preprocessing
(`convscope.data.preprocess.input_box_to_original`). Patches are cropped from the
*original* images, which are read only for the winners.

Figures, per layer, in pages of ``units.max_channels`` channels:

- ``patches-NNN.png``: rows are channels, columns the rank; each cell is the
  receptive-field patch of one top image (as in Zeiler & Fergus 2013, Fig. 2).
- ``context-NNN.png``: for layers whose receptive field covers most of the
  input (`CONTEXT_MIN_FRACTION`), the whole original images with the box
  drawn (as in Girshick et al.'s pool5 figure).

A slot is grey when the unit does not fire on that image (value ``<= 0`` or
not finite; the same "fires = above zero" rule as `convscope.analysis.unit_stats`),
or when the image cannot be read.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from convscope.analysis.layer_names import layer_file_names, select_shard_layers
from convscope.config.sections import UnitsConfig
from convscope.data.preprocess import input_box_to_original, input_hw
from convscope.nn.receptive_field import ReceptiveField
from convscope.render.grids import GREY_RGB, fit_in_square
from convscope.stats.running import RunningTopK
from convscope.store.atomic import save_image, write_text
from convscope.store.paths import resolved_paths
from convscope.store.shards import iter_shards, layer_key, read_attrs
from convscope.store.tables import read_table

__all__ = [
    "TOPK_COLUMNS",
    "images_of_rows",
    "patch_cell",
    "context_cell",
    "fires",
    "CONTEXT_MIN_FRACTION",
    "topk_units",
    "covers_most_of_input",
    "render_patch_grid",
    "render_context_grid",
    "write_layer_pages",
    "run_topk_units",
]

logger = logging.getLogger(__name__)

TOPK_COLUMNS = ["layer", "channel", "rank", "index", "value", "fy", "fx",
                "x0", "y0", "x1", "y1"]

#: A layer gets context pages when its receptive field spans at least this
#: fraction of the input's height and width.
CONTEXT_MIN_FRACTION = 0.5

_BACKGROUND = (255, 255, 255)
_BOX_COLOUR = (255, 0, 0)
_GAP = 2
_HEADER_H = 14  # height of the layer title above the grid, in pixels


# --------------------------------------------------------------------------
# the table


def _feature_hw(attrs: dict, layer: str) -> tuple[int, int]:
    """(H, W) of a layer's feature map from ``layer_shapes`` ([C, H, W]; [C] -> 1 x 1)."""
    shape = list(attrs.get("layer_shapes", {}).get(layer, []))
    if len(shape) >= 3:
        return int(shape[-2]), int(shape[-1])
    return 1, 1


def _receptive_field(attrs: dict, layer: str) -> ReceptiveField | None:
    """The layer's receptive field, or None when it has none (fully connected layers)."""
    geometry = attrs.get("receptive_fields", {}) or {}
    if layer not in geometry or geometry[layer] is None:
        return None
    return ReceptiveField.from_dict(geometry[layer])


def _input_boxes(attrs: dict, layer: str, fy: np.ndarray, fx: np.ndarray) -> np.ndarray:
    """(n, 4) model-input boxes (x0, y0, x1, y1) of feature positions, clipped to the input."""
    in_h, in_w = input_hw(attrs["preprocess"])
    rf = _receptive_field(attrs, layer)
    if rf is None:
        boxes = np.tile(np.array([0, 0, in_w, in_h], dtype=np.float64), (len(fy), 1))
    else:
        boxes = np.asarray(rf.boxes_xyxy(fy, fx), dtype=np.float64).reshape(-1, 4)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, in_w)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, in_h)
    return boxes


def _original_sizes(shard_paths: Sequence, wanted: np.ndarray) -> dict[int, tuple[int, int]]:
    """Manifest row -> original (width, height) for the rows in ``wanted``."""
    names = ["index", "image_attrs/width", "image_attrs/height"]
    sizes: dict[int, tuple[int, int]] = {}
    for chunk in iter_shards(shard_paths, names):
        keep = np.isin(chunk["index"], wanted)
        for index, width, height in zip(chunk["index"][keep], chunk["image_attrs/width"][keep],
                                        chunk["image_attrs/height"][keep]):
            sizes[int(index)] = (int(round(float(width))), int(round(float(height))))
    return sizes


def _stream_topk(shard_paths: Sequence[str], layers: Sequence[str], k: int) -> dict:
    """Layer -> ``(values, ids, argmax)`` of its `RunningTopK` over all shards, each (C, k')."""
    running = {layer: RunningTopK(k) for layer in layers}
    names = ["index"]
    for layer in layers:
        names += [f"layers/{layer_key(layer)}/max", f"layers/{layer_key(layer)}/argmax"]
    for chunk in tqdm(iter_shards(shard_paths, names), total=len(shard_paths),
                      desc="top-k units", unit="shard", file=sys.stderr):
        for layer in layers:
            running[layer].add(chunk[f"layers/{layer_key(layer)}/max"], chunk["index"],
                               payload=chunk[f"layers/{layer_key(layer)}/argmax"])
    return {layer: running[layer].result() for layer in layers}


def _layer_frame(attrs: dict, layer: str, result: tuple, sizes: dict) -> pd.DataFrame:
    """The `TOPK_COLUMNS` rows of one layer from its top-k ``result`` and the original sizes."""
    values, ids, positions = result
    channels, kept = values.shape
    height, width = _feature_hw(attrs, layer)
    positions = np.clip(positions, 0, height * width - 1)
    fy, fx = np.divmod(positions.ravel(), width)
    ids = ids.ravel()
    orig_wh = np.array([sizes[int(i)] for i in ids], dtype=np.int64).reshape(-1, 2)
    boxes = input_box_to_original(_input_boxes(attrs, layer, fy, fx), orig_wh,
                                  attrs["preprocess"])
    return pd.DataFrame({
        "layer": layer,
        "channel": np.repeat(np.arange(channels), kept),
        "rank": np.tile(np.arange(kept), channels),
        "index": ids,
        "value": values.ravel(),
        "fy": fy.astype(np.int64),
        "fx": fx.astype(np.int64),
        "x0": boxes[:, 0], "y0": boxes[:, 1], "x1": boxes[:, 2], "y1": boxes[:, 3],
    }, columns=TOPK_COLUMNS)


def topk_units(shard_paths: Sequence[str | os.PathLike], k: int,
               layers: Sequence[str] | None = None) -> pd.DataFrame:
    """The k images with the largest maximum activation of every unit.

    Args:
        shard_paths: extraction shards; read one at a time.
        k: images per unit (``units.top_k``).
        layers: layers to analyse (config key ``layers``); None: all layers
            in the shards.
    Returns:
        DataFrame with `TOPK_COLUMNS`, one row per (layer, channel, rank):
        ``index`` the manifest row, ``value`` the spatial maximum (NaN as
        -inf), ``fy``/``fx`` its feature-map position, ``x0, y0, x1, y1`` the
        receptive-field box in original-image pixels (continuous coordinates,
        x1/y1 exclusive, clipped to the image and to what the model saw).
        Rows are ordered by layer (in the order given), channel, rank; ties
        in value go to the smaller manifest row.
    """
    shard_paths = [os.fspath(path) for path in shard_paths]
    if not shard_paths:
        raise ValueError("topk_units: no shards given")
    attrs = read_attrs(shard_paths[0])
    layers = select_shard_layers(attrs, layers, key="layers", source=f"shard {shard_paths[0]}")
    if "preprocess" not in attrs:
        raise KeyError(f"shard {shard_paths[0]} has no 'preprocess' attribute")
    results = _stream_topk(shard_paths, layers, k)
    winners = np.unique(np.concatenate([ids.ravel() for _, ids, _ in results.values()]
                                       or [np.zeros(0, np.int64)]))
    sizes = _original_sizes(shard_paths, winners)
    frames = [_layer_frame(attrs, layer, results[layer], sizes) for layer in layers]
    if not frames:
        return pd.DataFrame(columns=TOPK_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def covers_most_of_input(shard_attrs: dict, layer: str,
                         fraction: float = CONTEXT_MIN_FRACTION) -> bool:
    """Whether the layer's receptive field spans at least ``fraction`` of the input's height and width.

    Layers without a receptive field (fully connected) see the whole input.
    """
    rf = _receptive_field(shard_attrs, layer)
    if rf is None:
        return True
    in_h, in_w = input_hw(shard_attrs["preprocess"])
    rf_h, rf_w = rf.size
    return rf_h >= fraction * in_h and rf_w >= fraction * in_w


# --------------------------------------------------------------------------
# figures


def _load_image(path: str, slot: int) -> np.ndarray:
    """(H, W, 3) uint8 original image (``slot`` >= 0: a row of an array file)."""
    from convscope.data.images import load_image

    return load_image(path, slot)


def _manifest_lookup(manifest: pd.DataFrame) -> pd.DataFrame:
    """Manifest indexed by manifest row, with ``path`` and ``slot``."""
    if "index" in manifest.columns:
        manifest = manifest.set_index("index")
    missing = [column for column in ("path",) if column not in manifest.columns]
    if missing:
        raise KeyError(f"manifest has no column {missing[0]!r}; columns: {', '.join(manifest.columns)}")
    return manifest


def patch_cell(image: np.ndarray, row, cell_px: int) -> Image.Image | None:
    """The receptive-field patch of ``row`` (original-pixel box), or None if empty."""
    height, width = image.shape[:2]
    x0, y0 = max(0, math.floor(row.x0)), max(0, math.floor(row.y0))
    x1, y1 = min(width, math.ceil(row.x1)), min(height, math.ceil(row.y1))
    if x1 <= x0 or y1 <= y0:
        return None
    return fit_in_square(Image.fromarray(image[y0:y1, x0:x1]), cell_px)


def context_cell(image: np.ndarray, row, cell_px: int) -> Image.Image:
    """The whole image fitted to the cell, with the receptive-field box drawn."""
    height, width = image.shape[:2]
    cell = fit_in_square(Image.fromarray(image), cell_px)
    scale = cell_px / max(width, height)
    left = (cell_px - max(1, round(width * scale))) // 2
    top = (cell_px - max(1, round(height * scale))) // 2
    box = [left + row.x0 * scale, top + row.y0 * scale,
           left + row.x1 * scale - 1, top + row.y1 * scale - 1]
    box[2], box[3] = max(box[0], box[2]), max(box[1], box[3])
    ImageDraw.Draw(cell).rectangle(box, outline=_BOX_COLOUR, width=max(1, cell_px // 48))
    return cell


def fires(table: pd.DataFrame) -> np.ndarray:
    """(len(table),) bool: the unit fires on the row's image (value finite and > 0)."""
    values = table["value"].to_numpy()
    return np.isfinite(values) & (values > 0)


def _empty_grid(layer: str, channels: list[int], dead: set, ranks: int,
                cell_px: int) -> tuple[Image.Image, int]:
    """Canvas with the layer title, channel labels (dead ones in red) and grey cells.

    Returns the canvas and the width of the label column in pixels.
    """
    font = ImageFont.load_default()
    labels = {c: f"ch {c} dead" if c in dead else f"ch {c}" for c in channels}
    label_w = max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=font))
                  for text in [*labels.values(), "ch 0"]) + 2 * _GAP
    step = cell_px + _GAP
    canvas = Image.new("RGB", (label_w + max(ranks, 1) * step + _GAP,
                               _HEADER_H + max(len(channels), 1) * step + _GAP), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((_GAP, 1), layer, fill=(0, 0, 0), font=font)
    for i, channel in enumerate(channels):
        draw.text((_GAP, _HEADER_H + i * step + cell_px // 2 - 5), labels[channel],
                  fill=(200, 0, 0) if channel in dead else (0, 0, 0), font=font)
        for rank in range(ranks):
            xy = (label_w + rank * step, _HEADER_H + i * step)
            canvas.paste(Image.new("RGB", (cell_px, cell_px), GREY_RGB), xy)
    return canvas, label_w


def images_of_rows(rows: pd.DataFrame, manifest: pd.DataFrame, who: str):
    """Yield ``(image, rows of that image)`` for each manifest row in ``rows["index"]``,
    reading each original image once, in index order; an unreadable image is logged
    (``who``: the stage, for the message) and skipped, so its cells stay grey."""
    lookup = _manifest_lookup(manifest)
    for index, group in rows.groupby("index", sort=True):
        try:
            entry = lookup.loc[int(index)]
            slot = int(entry["slot"]) if "slot" in lookup.columns else -1
            image = _load_image(str(entry["path"]), slot)
        except Exception as error:  # an unreadable image leaves its cells grey
            logger.warning("%s: cannot read image %s: %s", who, index, error)
            continue
        yield image, group


def _paste_cells(canvas: Image.Image, live: pd.DataFrame, manifest: pd.DataFrame,
                 row_of: dict[int, int], label_w: int, cell_px: int, make_cell) -> None:
    """Read each image of ``live`` once and paste its cells; an unreadable image stays grey."""
    step = cell_px + _GAP
    for image, rows in images_of_rows(live, manifest, "top-k units"):
        for row in rows.itertuples(index=False):
            cell = make_cell(image, row, cell_px)
            if cell is not None:
                xy = (label_w + int(row.rank) * step, _HEADER_H + row_of[int(row.channel)] * step)
                canvas.paste(cell, xy)


def _render_grid(table: pd.DataFrame, manifest: pd.DataFrame, channels, max_channels,
                 cell_px: int, make_cell) -> Image.Image:
    """Rows = channels, columns = rank; each cell from ``make_cell(image, row, cell_px)``."""
    if table["layer"].nunique() > 1:
        raise ValueError(f"render one layer at a time; table holds {sorted(table['layer'].unique())}")
    if channels is None:
        channels = np.unique(table["channel"].to_numpy())
    channels = [int(c) for c in channels]
    if max_channels is not None:
        channels = channels[: int(max_channels)]
    table = table[table["channel"].isin(channels)]
    ranks = int(table["rank"].max()) + 1 if len(table) else 0
    layer = str(table["layer"].iloc[0]) if len(table) else ""
    firing = fires(table)
    # a channel whose best image does not fire never fires: flag it as dead
    dead = set(channels) - set(table.loc[firing, "channel"].astype(int))
    canvas, label_w = _empty_grid(layer, channels, dead, ranks, cell_px)
    row_of = {channel: i for i, channel in enumerate(channels)}
    _paste_cells(canvas, table[firing], manifest, row_of, label_w, cell_px, make_cell)
    return canvas


def render_patch_grid(table: pd.DataFrame, manifest: pd.DataFrame, patch_px: int,
                      channels: Sequence[int] | None = None,
                      max_channels: int | None = None) -> Image.Image:
    """Receptive-field patches of one layer's top images (Zeiler & Fergus, Fig. 2).

    Args:
        table: rows of `topk_units` for ONE layer.
        manifest: the manifest (``index``, ``path``, ``slot`` columns).
        patch_px: side of each cell in pixels.
        channels: channels to show, in row order (default: all in ``table``).
        max_channels: draw only the first this many channels (None: all).
    Returns:
        RGB image: a channel label on the left of each row, ranks left to
        right; each patch is cropped from the original image and scaled to
        fit the cell; grey where the unit does not fire or the image is unreadable.
    """
    return _render_grid(table, manifest, channels, max_channels, int(patch_px), patch_cell)


def render_context_grid(table: pd.DataFrame, manifest: pd.DataFrame, thumb_px: int,
                        channels: Sequence[int] | None = None,
                        max_channels: int | None = None) -> Image.Image:
    """Whole original images with the receptive-field box drawn in red (Girshick et al.).

    Same layout as `render_patch_grid`, cells ``thumb_px`` pixels wide; meant
    for layers whose receptive field covers most of the input
    (`covers_most_of_input`).
    """
    return _render_grid(table, manifest, channels, max_channels, int(thumb_px), context_cell)


# --------------------------------------------------------------------------
# the stage


def _read_manifest(manifest_csv: str | os.PathLike) -> pd.DataFrame:
    """The manifest's ``index``, ``path`` (and ``slot``) columns; KeyError naming a missing one."""
    header = read_table(manifest_csv, nrows=0).columns
    missing = [column for column in ("index", "path") if column not in header]
    if missing:
        raise KeyError(f"manifest {manifest_csv} has no column {missing[0]!r}; "
                       f"columns: {', '.join(header)}")
    columns = [column for column in ("index", "path", "slot") if column in header]
    manifest = read_table(manifest_csv, usecols=columns)
    manifest["path"] = resolved_paths(manifest["path"].astype(str), Path(manifest_csv).parent)
    return manifest


def write_layer_pages(rows: pd.DataFrame, manifest: pd.DataFrame, units: UnitsConfig,
                      with_context: bool, layer_dir: str | os.PathLike) -> list[Path]:
    """Write one layer's figure pages into ``layer_dir``; returns their paths in order.

    Channels are cut into pages of ``units.max_channels``; page ``NNN`` is
    ``patches-NNN.png`` (cells of ``units.patch_px``) and, with
    ``with_context``, ``context-NNN.png`` (cells of twice that). Earlier
    ``patches-*.png`` / ``context-*.png`` in ``layer_dir`` are removed first.
    """
    layer_dir = Path(layer_dir)
    layer_dir.mkdir(parents=True, exist_ok=True)
    for stale in list(layer_dir.glob("patches*.png")) + list(layer_dir.glob("context*.png")):
        stale.unlink()
    channels = np.unique(rows["channel"].to_numpy())
    step = units.max_channels
    pages = [channels[i:i + step] for i in range(0, len(channels), step)]
    kinds = [("patches", render_patch_grid, units.patch_px)]
    if with_context:
        kinds.append(("context", render_context_grid, 2 * units.patch_px))
    written = []
    for kind, render, cell_px in kinds:
        for number, page in enumerate(pages):
            image = render(rows[rows["channel"].isin(page)], manifest, cell_px, page)
            path = layer_dir / f"{kind}-{number:03d}.png"
            save_image(path, image)
            written.append(path)
    return written


def run_topk_units(shard_paths: Sequence[str | os.PathLike], manifest_csv: str | os.PathLike,
                   units: UnitsConfig, *, table_csv: str | os.PathLike,
                   index_json: str | os.PathLike, pages_dir: str | os.PathLike,
                   layers: Sequence[str] | None = None) -> pd.DataFrame:
    """The top-k units stage: the table, the figure pages and their index.

    Args:
        shard_paths: extraction shards.
        manifest_csv: the manifest (``index``, ``path``, ``slot``), to read the winners.
        units: the ``units`` section (``topk``, ``patch_px``, ``max_channels``).
        table_csv: where the `topk_units` table goes.
        index_json: where the page index goes: layer name -> list of its page
            files, as paths relative to the folder holding ``index_json``;
            written last.
        pages_dir: folder of the pages, one sub-folder per layer (a file-safe
            name, see `convscope.analysis.layer_names.layer_file_names`)
            holding `write_layer_pages`' files.
        layers: layers to analyse (config key ``layers``); None: all in the shards.
    Returns:
        the table.
    """
    shard_paths = [os.fspath(path) for path in shard_paths]
    table = topk_units(shard_paths, units.top_k, layers=layers)
    write_text(table_csv, table.to_csv(index=False))
    attrs = read_attrs(shard_paths[0])
    manifest = _read_manifest(manifest_csv)
    layer_names = list(dict.fromkeys(table["layer"]))
    dirs = layer_file_names(layer_names)
    index_root = Path(index_json).parent
    pages: dict[str, list[str]] = {}
    for layer in tqdm(layer_names, desc="top-k figures", unit="layer", file=sys.stderr):
        written = write_layer_pages(table[table["layer"] == layer], manifest, units,
                                    covers_most_of_input(attrs, layer),
                                    Path(pages_dir) / dirs[layer])
        pages[layer] = [Path(os.path.relpath(path, index_root)).as_posix() for path in written]
    write_text(index_json, json.dumps(pages, indent=1))
    return table
