"""Where a part or a keypoint is in each image, from manifest columns, in original pixels.

The correspondence and keypoint stages locate a part (a box) or a keypoint (a
point) per image from columns of the manifest. Columns are in pixels of the
original image (pixel i covers [i, i + 1)) or in fractions of its width (x)
and height (y). With no columns configured, the demo dataset uses the shape
the generator drew (`convscope.data.demo`: ``pos_x``, ``pos_y`` = its centre
and ``shape_size`` = its diameter, fractions of the image side); other
datasets have no such stage (`stage_columns`).

No torch here: the workflow imports this module while it parses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "DEMO_PART_COLUMNS",
    "DEMO_POINT_COLUMNS",
    "stage_columns",
    "check_columns",
    "part_boxes",
    "keypoints_xy",
    "choose_class",
]

#: the demo shape's box: centre x, centre y, side (fractions of the image side)
DEMO_PART_COLUMNS: tuple[str, str, str] = ("pos_x", "pos_y", "shape_size")
#: the demo shape's centre (fractions of the image width and height)
DEMO_POINT_COLUMNS: tuple[str, str] = ("pos_x", "pos_y")


def stage_columns(section: Mapping, columns_key: str, units_key: str, dataset_kind: str,
                  demo_columns: Sequence[str]) -> dict | None:
    """The section with its columns filled in, or None when the stage does not run.

    A null ``section[columns_key]`` means the demo's columns (in fractions) for the demo
    dataset and no stage otherwise.
    """
    section = dict(section)
    if section.get(columns_key):
        return section
    if dataset_kind != "demo":
        return None
    section[columns_key] = list(demo_columns)
    section[units_key] = "fraction"
    return section


def check_columns(manifest: pd.DataFrame, columns: Sequence[str], key: str) -> None:
    """ValueError naming config ``key`` when a column is missing or not numeric."""
    missing = [name for name in columns if name not in manifest.columns]
    if missing:
        listed = ", ".join(map(str, manifest.columns))
        raise ValueError(f"config key {key!r}: manifest has no column(s) {missing}; "
                         f"its columns are: {listed}")
    for name in columns:
        if not pd.api.types.is_numeric_dtype(manifest[name]):
            raise ValueError(f"config key {key!r}: manifest column {name!r} is not numeric "
                             f"(example value {manifest[name].iloc[0]!r})")


def _scale(values: np.ndarray, sizes: np.ndarray, units: str) -> np.ndarray:
    return values * sizes if units == "fraction" else values


def part_boxes(rows: pd.DataFrame, columns: Sequence[str], units: str,
               orig_wh: np.ndarray) -> np.ndarray:
    """(n, 4) float64 boxes (x0, y0, x1, y1) in original-image pixels.

    Args:
        rows: manifest rows holding ``columns``.
        columns: 4 names (x0, y0, x1, y1) or 3 names (centre x, centre y, side).
        units: ``pixels`` or ``fraction`` (x of the width, y of the height).
        orig_wh: (n, 2) original widths and heights in pixels.
    """
    values = rows[list(columns)].to_numpy(dtype=np.float64)
    width = np.asarray(orig_wh, dtype=np.float64)[:, 0]
    height = np.asarray(orig_wh, dtype=np.float64)[:, 1]
    if len(columns) == 4:
        x0, y0, x1, y1 = values.T
    elif len(columns) == 3:
        cx, cy, side = values.T
        x0, x1 = cx - side / 2, cx + side / 2
        y0, y1 = cy - side / 2, cy + side / 2
    else:
        raise ValueError(f"a part box needs 3 or 4 columns, got {list(columns)}")
    return np.stack([_scale(x0, width, units), _scale(y0, height, units),
                     _scale(x1, width, units), _scale(y1, height, units)], axis=1)


def keypoints_xy(rows: pd.DataFrame, columns: Sequence[str], units: str,
                 orig_wh: np.ndarray) -> np.ndarray:
    """(n, 2) float64 keypoints (x, y) in original-image pixels from 2 columns in ``units``."""
    values = rows[list(columns)].to_numpy(dtype=np.float64)
    orig_wh = np.asarray(orig_wh, dtype=np.float64)
    return np.stack([_scale(values[:, 0], orig_wh[:, 0], units),
                     _scale(values[:, 1], orig_wh[:, 1], units)], axis=1)


def choose_class(manifest: pd.DataFrame, class_names: Sequence[str], target_class, key: str,
                 needed: int) -> int:
    """The class id of config ``key`` (a name, an id, or None = the class with most images).

    Raises ValueError naming ``key`` for an unknown class, and when the class has fewer
    than ``needed`` labelled images.
    """
    counts = manifest.loc[manifest["label"] >= 0, "label"].value_counts()
    if target_class is None:
        if counts.empty:
            raise ValueError(f"config key {key!r}: the manifest has no labelled images")
        top = counts.max()
        class_id = int(min(counts.index[counts == top]))
    elif isinstance(target_class, str) and target_class in class_names:
        class_id = list(class_names).index(target_class)
    elif isinstance(target_class, int) and 0 <= target_class < max(len(class_names), 1):
        class_id = int(target_class)
    else:
        raise ValueError(f"config key {key!r}: {target_class!r} is not a class; valid names: "
                         f"{', '.join(map(str, class_names))} (or ids 0..{len(class_names) - 1})")
    have = int(counts.get(class_id, 0))
    if have < needed:
        name = class_names[class_id] if class_id < len(class_names) else class_id
        raise ValueError(f"config key {key!r}: class {name!r} has {have} labelled images with "
                         f"the needed columns, {needed} are needed; choose another class or ask "
                         "for fewer images")
    return class_id
