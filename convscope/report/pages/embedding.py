"""Embedding: the t-SNE mosaic (zoomable, pannable) and the scatter drawn in a canvas from
``coords.csv``, with each point's thumbnail (one sprite PNG from the shards' ``thumbs``)
under the pointer, coloured by class, by correct/incorrect or by an attribute."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from PIL import Image

from convscope.report.readers import read_image_table, read_json
from convscope.store.shards import iter_shards
from convscope.store.tables import read_table

__all__ = ["scatter_points", "thumbnail_sprite", "write_embedding_page", "LOSSLESS_SPRITE_MAX"]

#: Thumbnails up to which the scatter's sprite is a PNG (beyond: JPEG, a tenth of the size).
LOSSLESS_SPRITE_MAX = 2000


def scatter_points(coords: pd.DataFrame, images: pd.DataFrame, class_names: list[str],
                   max_points: int) -> tuple[pd.DataFrame, dict]:
    """The points the scatter draws (at most ``max_points``, a seeded sample) and its data:
    ``x``, ``y``, ``label``, ``pred`` (class ids, -1 unknown), ``index`` and ``attrs``
    (name -> ``{"kind": "number"|"category", "values", "categories"}``)."""
    table = coords[["index", "x", "y"]].merge(images, on="index", how="left")
    if len(table) > max_points:
        keep = np.sort(np.random.default_rng(0).choice(len(table), max_points, replace=False))
        table = table.iloc[keep].reset_index(drop=True)
    attrs = {}
    for name in [c for c in table.columns if c not in ("index", "x", "y", "label", "pred")]:
        column = table[name]
        if pd.api.types.is_numeric_dtype(column):
            attrs[name] = {"kind": "number", "values": column.astype(float).round(4).tolist()}
        else:
            codes, categories = pd.factorize(column.astype(str), sort=True)
            attrs[name] = {"kind": "category", "values": codes.tolist(),
                           "categories": list(categories)}
    data = {"x": table["x"].round(4).tolist(), "y": table["y"].round(4).tolist(),
            "label": table["label"].fillna(-1).astype(int).tolist(),
            "pred": table["pred"].fillna(-1).astype(int).tolist(),
            "index": table["index"].astype(int).tolist(), "classes": list(class_names),
            "attrs": attrs}
    return table, data


def thumbnail_sprite(shard_paths, indices: np.ndarray) -> tuple[Image.Image, int, int]:
    """One image holding the shards' thumbnails of ``indices`` in that order, row-major on a
    grid of ``cols`` columns; returns (sprite, tile side in px, cols)."""
    position = {int(index): i for i, index in enumerate(indices)}
    tiles, tile = {}, 1
    for chunk in iter_shards(shard_paths, ["index", "thumbs"]):
        tile = chunk["thumbs"].shape[1]
        for index, thumb in zip(chunk["index"], chunk["thumbs"]):
            if int(index) in position:
                tiles[position[int(index)]] = thumb
    cols = max(1, math.ceil(math.sqrt(len(indices))))
    rows = max(1, math.ceil(len(indices) / cols))
    sprite = np.full((rows * tile, cols * tile, 3), 128, np.uint8)
    for i, thumb in tiles.items():
        r, c = divmod(i, cols)
        sprite[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = thumb[..., :3]
    return Image.fromarray(sprite), tile, cols


def write_embedding_page(renderer, inputs, manifest: pd.DataFrame, class_names: list[str],
                         cfg) -> None:
    """The embedding page and its data (``assets/data/embedding.js``, the sprite)."""
    writer = renderer.writer
    summary = read_json(inputs.embedding_summary)
    coords = read_table(inputs.coords)
    data = None
    if len(coords) and not summary.get("skipped"):
        table, data = scatter_points(coords, read_image_table(inputs.shards, manifest),
                                     class_names, cfg.scatter_max_points)
        sprite, tile, cols = thumbnail_sprite(inputs.shards, table["index"].to_numpy())
        # lossless for a few thumbnails; JPEG for a large map (20,000 thumbnails by default)
        name = "sprite.png" if len(table) <= LOSSLESS_SPRITE_MAX else "sprite.jpg"
        data["sprite"] = {"href": writer.save_image(sprite, f"assets/embedding/{name}"),
                          "tile": tile, "cols": cols, "width": sprite.width,
                          "height": sprite.height}
        writer.write_data("assets/data/embedding.js", "embedding", data)
    figures = {name: writer.copy(getattr(inputs, name), f"assets/embedding/{name}.png")
               for name in ("mosaic", "scatter", "cloud")}
    renderer.page("embedding.html.j2", "pages/embedding.html", "Embedding of the CNN codes",
                  summary=summary, figures=figures, has_scatter=data is not None,
                  n_points=len(data["x"]) if data else 0, n_coords=len(coords),
                  attrs=sorted(data["attrs"]) if data else [])
