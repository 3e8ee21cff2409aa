"""Writing the synthesis stages' files: HDF5 arrays, side-by-side pictures, ``summary.json``.

Every file appears atomically (`convscope.store.atomic`); ``summary.json``
follows the "Stage summaries" contract of docs/design.md, with paths relative
to the folder that holds it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from convscope.render.grids import tile_grid, upscale_nearest
from convscope.store.atomic import atomic_path, save_image, write_json

__all__ = ["write_h5", "side_by_side", "save_picture", "save_grid", "write_summary", "figure_entry",
           "display_factor"]

_GAP_GREY = 255


def write_h5(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
             attrs: Mapping[str, object] | None = None) -> None:
    """Write ``arrays`` (name -> array; a ``/`` in a name makes groups) and file ``attrs``."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for name, array in arrays.items():
                array = np.asarray(array)
                if array.dtype.kind == "U":
                    array = array.astype(h5py.string_dtype())
                f.create_dataset(name, data=array)
            for key, value in (attrs or {}).items():
                f.attrs[key] = value


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
    """Save an (h, w, 3) uint8 image as PNG, enlarged ``factor`` times (nearest neighbour)."""
    save_image(path, Image.fromarray(upscale_nearest(image, factor)))


def save_grid(path: str | os.PathLike, tiles: Sequence[np.ndarray], flagged=None,
              ncols: int | None = None) -> None:
    """`tile_grid` of equally sized uint8 tiles, saved as PNG (flagged tiles framed red)."""
    flagged = np.zeros(len(tiles), bool) if flagged is None else np.asarray(flagged, bool)
    save_image(path, Image.fromarray(tile_grid(tiles, flagged, 3, ncols=ncols)))


def figure_entry(path: str | os.PathLike, folder: str | os.PathLike, title: str,
                 caption: str = "") -> dict:
    """One ``figures``/``tables`` entry of a summary, its path relative to ``folder``."""
    return {"path": Path(os.path.relpath(path, folder)).as_posix(), "title": title,
            "caption": caption}


def write_summary(path: str | os.PathLike, stage: str, title: str, caption: str, *,
                  numbers: Mapping[str, object] = (), figures: Sequence[dict] = (),
                  tables: Sequence[dict] = ()) -> None:
    """Write a stage's ``summary.json`` (docs/design.md, "Stage summaries")."""
    write_json(path, {"stage": stage, "title": title, "caption": caption,
                      "numbers": [{"label": k, "value": str(v)} for k, v in dict(numbers).items()],
                      "figures": list(figures), "tables": list(tables)})
