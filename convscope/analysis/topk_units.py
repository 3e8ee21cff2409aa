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

Figures, per layer:

- ``patches.png``: rows are channels, columns the rank; each cell is the
  receptive-field patch of one top image (as in Zeiler & Fergus 2013, Fig. 2).
- ``context.png``: for layers whose receptive field covers most of the input,
  the whole original images with the box drawn (as in Girshick et al.'s pool5
  figure).

A slot is grey when the unit does not fire on that image (value ``<= 0`` or
not finite; the same "fires = above zero" rule as `convscope.analysis.unit_stats`),
or when the image cannot be read.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from convscope.data.preprocess import input_box_to_original, input_hw
from convscope.nn.receptive_field import ReceptiveField
from convscope.stats.running import RunningTopK
from convscope.store.shards import iter_shards, layer_key, read_attrs

__all__ = [
    "TOPK_COLUMNS",
    "topk_units",
    "covers_most_of_input",
    "render_patch_grid",
    "render_context_grid",
    "safe_layer_name",
    "run_topk_units",
]

logger = logging.getLogger(__name__)

TOPK_COLUMNS = ["layer", "channel", "rank", "index", "value", "fy", "fx",
                "x0", "y0", "x1", "y1"]

_GREY = (128, 128, 128)
_BACKGROUND = (255, 255, 255)
_BOX_COLOUR = (255, 0, 0)
_GAP = 2


# --------------------------------------------------------------------------
# the table


def _resolve_layers(attrs: dict, layer_names: Sequence[str] | None, path) -> list[str]:
    available = list(attrs.get("layer_names", []))
    if layer_names is None:
        return available
    if isinstance(layer_names, str):
        layer_names = [layer_names]
    unknown = [name for name in layer_names if name not in available]
    if unknown:
        raise ValueError(
            f"layer(s) {', '.join(map(repr, unknown))} not in shard {path}; "
            f"valid choices: {', '.join(available) or 'none'}"
        )
    return list(layer_names)


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


def topk_units(shard_paths: Sequence[str | os.PathLike], layer_names: Sequence[str] | None = None,
               k: int = 9) -> pd.DataFrame:
    """The k images with the largest maximum activation of every unit.

    Args:
        shard_paths: extraction shards; read one at a time.
        layer_names: layers to analyse (default: all layers in the shards).
        k: images per unit.
    Returns:
        DataFrame with `TOPK_COLUMNS`, one row per (layer, channel, rank):
        ``index`` the manifest row, ``value`` the spatial maximum (NaN as
        -inf), ``fy``/``fx`` its feature-map position, ``x0, y0, x1, y1`` the
        receptive-field box in original-image pixels (continuous coordinates,
        x1/y1 exclusive, clipped to the image and to what the model saw).
        Rows are ordered by layer (shard order), channel, rank; ties in value
        go to the smaller manifest row.
    """
    shard_paths = [os.fspath(path) for path in shard_paths]
    if not shard_paths:
        raise ValueError("topk_units: no shards given")
    attrs = read_attrs(shard_paths[0])
    layers = _resolve_layers(attrs, layer_names, shard_paths[0])
    if "preprocess" not in attrs:
        raise KeyError(f"shard {shard_paths[0]} has no 'preprocess' attribute")

    running = {layer: RunningTopK(k) for layer in layers}
    names = ["index"]
    for layer in layers:
        names += [f"layers/{layer_key(layer)}/max", f"layers/{layer_key(layer)}/argmax"]
    for chunk in tqdm(iter_shards(shard_paths, names), total=len(shard_paths),
                      desc="top-k units", unit="shard", file=sys.stderr):
        for layer in layers:
            running[layer].add(chunk[f"layers/{layer_key(layer)}/max"], chunk["index"],
                               payload=chunk[f"layers/{layer_key(layer)}/argmax"])

    results = {layer: running[layer].result() for layer in layers}
    winners = np.unique(np.concatenate([ids.ravel() for _, ids, _ in results.values()]
                                       or [np.zeros(0, np.int64)]))
    sizes = _original_sizes(shard_paths, winners)

    frames = []
    for layer in layers:
        values, ids, positions = results[layer]
        channels, kept = values.shape
        height, width = _feature_hw(attrs, layer)
        positions = np.clip(positions, 0, height * width - 1)
        fy, fx = np.divmod(positions.ravel(), width)
        ids = ids.ravel()
        orig_wh = np.array([sizes[int(i)] for i in ids], dtype=np.int64).reshape(-1, 2)
        boxes = input_box_to_original(_input_boxes(attrs, layer, fy, fx), orig_wh,
                                      attrs["preprocess"])
        frames.append(pd.DataFrame({
            "layer": layer,
            "channel": np.repeat(np.arange(channels), kept),
            "rank": np.tile(np.arange(kept), channels),
            "index": ids,
            "value": values.ravel(),
            "fy": fy.astype(np.int64),
            "fx": fx.astype(np.int64),
            "x0": boxes[:, 0], "y0": boxes[:, 1], "x1": boxes[:, 2], "y1": boxes[:, 3],
        }, columns=TOPK_COLUMNS))
    if not frames:
        return pd.DataFrame(columns=TOPK_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def covers_most_of_input(shard_attrs: dict, layer: str, fraction: float = 0.5) -> bool:
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


def _fit(image: Image.Image, cell_px: int) -> Image.Image:
    """``image`` scaled to fit a ``cell_px`` square, centred on grey."""
    cell = Image.new("RGB", (cell_px, cell_px), _GREY)
    scale = cell_px / max(image.width, image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
    image = image.resize(size, resample)
    cell.paste(image, ((cell_px - size[0]) // 2, (cell_px - size[1]) // 2))
    return cell


def _patch_cell(image: np.ndarray, row, cell_px: int) -> Image.Image | None:
    """The receptive-field patch of ``row`` (original-pixel box), or None if empty."""
    height, width = image.shape[:2]
    x0, y0 = max(0, math.floor(row.x0)), max(0, math.floor(row.y0))
    x1, y1 = min(width, math.ceil(row.x1)), min(height, math.ceil(row.y1))
    if x1 <= x0 or y1 <= y0:
        return None
    return _fit(Image.fromarray(image[y0:y1, x0:x1]), cell_px)


def _context_cell(image: np.ndarray, row, cell_px: int) -> Image.Image:
    """The whole image fitted to the cell, with the receptive-field box drawn."""
    height, width = image.shape[:2]
    cell = _fit(Image.fromarray(image), cell_px)
    scale = cell_px / max(width, height)
    left = (cell_px - max(1, round(width * scale))) // 2
    top = (cell_px - max(1, round(height * scale))) // 2
    box = [left + row.x0 * scale, top + row.y0 * scale,
           left + row.x1 * scale - 1, top + row.y1 * scale - 1]
    box[2], box[3] = max(box[0], box[2]), max(box[1], box[3])
    ImageDraw.Draw(cell).rectangle(box, outline=_BOX_COLOUR, width=max(1, cell_px // 48))
    return cell


def _render_grid(table: pd.DataFrame, manifest: pd.DataFrame, channels, max_channels: int,
                 cell_px: int, make_cell) -> Image.Image:
    """Rows = channels, columns = rank; each cell from ``make_cell(image, row, cell_px)``."""
    if table["layer"].nunique() > 1:
        raise ValueError(f"render one layer at a time; table holds {sorted(table['layer'].unique())}")
    if channels is None:
        channels = np.unique(table["channel"].to_numpy())
    channels = [int(c) for c in channels][: int(max_channels)]
    table = table[table["channel"].isin(channels)]
    ranks = int(table["rank"].max()) + 1 if len(table) else 0
    lookup = _manifest_lookup(manifest)

    font = ImageFont.load_default()
    layer = str(table["layer"].iloc[0]) if len(table) else ""
    live_mask = np.isfinite(table["value"].to_numpy()) & (table["value"].to_numpy() > 0)
    # a channel whose best image does not fire never fires: flag it as dead
    dead = set(channels) - set(table.loc[live_mask, "channel"].astype(int))
    labels = {c: f"ch {c} dead" if c in dead else f"ch {c}" for c in channels}
    label_w = max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=font))
                  for text in [*labels.values(), "ch 0"]) + 2 * _GAP
    header_h = 14
    step = cell_px + _GAP
    canvas = Image.new("RGB", (label_w + max(ranks, 1) * step + _GAP,
                               header_h + max(len(channels), 1) * step + _GAP), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((_GAP, 1), layer, fill=(0, 0, 0), font=font)
    row_of = {channel: i for i, channel in enumerate(channels)}
    for channel, i in row_of.items():
        draw.text((_GAP, header_h + i * step + cell_px // 2 - 5), labels[channel],
                  fill=(200, 0, 0) if channel in dead else (0, 0, 0), font=font)
        for rank in range(ranks):
            xy = (label_w + rank * step, header_h + i * step)
            canvas.paste(Image.new("RGB", (cell_px, cell_px), _GREY), xy)

    live = table[live_mask]
    for index, rows in live.groupby("index", sort=True):
        try:
            entry = lookup.loc[int(index)]
            slot = int(entry["slot"]) if "slot" in lookup.columns else -1
            image = _load_image(str(entry["path"]), slot)
        except Exception as error:  # an unreadable image leaves its slots grey
            logger.warning("top-k units: cannot read image %s: %s", index, error)
            continue
        for row in rows.itertuples(index=False):
            cell = make_cell(image, row, cell_px)
            if cell is not None:
                xy = (label_w + int(row.rank) * step, header_h + row_of[int(row.channel)] * step)
                canvas.paste(cell, xy)
    return canvas


def render_patch_grid(table: pd.DataFrame, manifest: pd.DataFrame, channels: Sequence[int] | None = None,
                      patch_px: int = 48, max_channels: int = 64) -> Image.Image:
    """Receptive-field patches of one layer's top images (Zeiler & Fergus, Fig. 2).

    Args:
        table: rows of `topk_units` for ONE layer.
        manifest: the manifest (``index``, ``path``, ``slot`` columns).
        channels: channels to show, in row order (default: all in ``table``);
            only the first ``max_channels`` are drawn.
        patch_px: side of each cell in pixels.
    Returns:
        RGB image: a channel label on the left of each row, ranks left to
        right; each patch is cropped from the original image and scaled to
        fit the cell; grey where the unit does not fire or the image is unreadable.
    """
    return _render_grid(table, manifest, channels, max_channels, int(patch_px), _patch_cell)


def render_context_grid(table: pd.DataFrame, manifest: pd.DataFrame,
                        channels: Sequence[int] | None = None, thumb_px: int = 96,
                        max_channels: int = 64) -> Image.Image:
    """Whole original images with the receptive-field box drawn in red (Girshick et al.).

    Same layout as `render_patch_grid`; meant for layers whose receptive field
    covers most of the input (`covers_most_of_input`).
    """
    return _render_grid(table, manifest, channels, max_channels, int(thumb_px), _context_cell)


# --------------------------------------------------------------------------
# the stage


def safe_layer_name(layer: str) -> str:
    """A file-name-safe version of a layer name (``features/0`` -> ``features_0``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", layer).strip("._") or "layer"
    return name


def _layer_dirs(layers: Sequence[str]) -> dict[str, str]:
    """Layer -> unique safe directory name."""
    dirs: dict[str, str] = {}
    used: set[str] = set()
    for layer in layers:
        base = name = safe_layer_name(layer)
        suffix = 1
        while name in used:
            suffix += 1
            name = f"{base}-{suffix}"
        used.add(name)
        dirs[layer] = name
    return dirs


def _save_png(image: Image.Image, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)


def _write_text(text: str, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_manifest(manifest_csv: str | os.PathLike) -> pd.DataFrame:
    header = pd.read_csv(manifest_csv, nrows=0).columns
    missing = [column for column in ("index", "path") if column not in header]
    if missing:
        raise KeyError(f"manifest {manifest_csv} has no column {missing[0]!r}; "
                       f"columns: {', '.join(header)}")
    columns = [column for column in ("index", "path", "slot") if column in header]
    return pd.read_csv(manifest_csv, usecols=columns)


def run_topk_units(shard_paths: Sequence[str | os.PathLike], manifest_csv: str | os.PathLike,
                   out_dir: str | os.PathLike, k: int = 9, patch_px: int = 48,
                   max_channels: int = 64, layer_names: Sequence[str] | None = None,
                   context_min_fraction: float = 0.5, thumb_px: int | None = None) -> None:
    """The top-k units stage: table and figures under ``out_dir``.

    Writes ``topk.csv`` (see `topk_units`), per layer ``<layer>/patches.png``
    (``patches-000.png``, ... when the layer has more than ``max_channels``
    channels) and, for layers whose receptive field covers at least
    ``context_min_fraction`` of the input, ``<layer>/context.png`` (paged the
    same way). ``topk.json``, written last, maps each layer name to its image
    files (paths relative to ``out_dir``).
    """
    shard_paths = [os.fspath(path) for path in shard_paths]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = topk_units(shard_paths, layer_names=layer_names, k=k)
    _write_text(table.to_csv(index=False), out_dir / "topk.csv")

    attrs = read_attrs(shard_paths[0])
    manifest = _read_manifest(manifest_csv)
    layers = list(dict.fromkeys(table["layer"]))
    dirs = _layer_dirs(layers)
    thumb_px = int(thumb_px or 2 * patch_px)
    written: dict[str, list[str]] = {}
    for layer in tqdm(layers, desc="top-k figures", unit="layer", file=sys.stderr):
        layer_dir = out_dir / dirs[layer]
        layer_dir.mkdir(exist_ok=True)
        for stale in list(layer_dir.glob("patches*.png")) + list(layer_dir.glob("context*.png")):
            stale.unlink()
        rows = table[table["layer"] == layer]
        channels = np.unique(rows["channel"].to_numpy())
        pages = [channels[i:i + max_channels] for i in range(0, len(channels), max_channels)]
        kinds = [("patches", render_patch_grid, patch_px)]
        if covers_most_of_input(attrs, layer, context_min_fraction):
            kinds.append(("context", render_context_grid, thumb_px))
        written[layer] = []
        for kind, render, cell_px in kinds:
            for number, page in enumerate(pages):
                name = f"{kind}.png" if len(pages) == 1 else f"{kind}-{number:03d}.png"
                image = render(rows[rows["channel"].isin(page)], manifest, page, cell_px,
                               max_channels)
                _save_png(image, layer_dir / name)
                written[layer].append(f"{dirs[layer]}/{name}")
    _write_text(json.dumps(written, indent=1), out_dir / "topk.json")
