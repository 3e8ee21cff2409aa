"""Seeded samples of manifest rows whose images can be read, for the explanation stages."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from convscope.config.counts import clip_count
from convscope.data.manifest import read_manifest
from convscope.data.sample import readable_sample
from convscope.explain.columns import check_columns, choose_class

__all__ = ["class_rows", "read_sample"]


def read_sample(rows: pd.DataFrame, count: int, seed: int, key: str,
                minimum: int = 1) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """The first ``count`` readable images of a seeded permutation of ``rows``
    (`convscope.data.sample.readable_sample`).

    When fewer than ``count`` can be read, all readable ones are used, with one warning
    naming config ``key`` (`convscope.config.counts.clip_count`); ValueError naming ``key``
    when fewer than ``minimum``.

    Returns:
        (the chosen rows in sampling order, their (H, W, 3) uint8 original images).
    """
    chosen, images = readable_sample(rows, count, seed)
    if len(images) < minimum:
        raise ValueError(f"config key {key!r}: at least {minimum} readable images are needed but "
                         f"only {len(images)} of the {len(rows)} candidate images could be read")
    clip_count(key, count, len(images), "readable images")
    return chosen, images


def class_rows(manifest_csv, key: str, columns_key: str, columns: Sequence[str] | None,
               target_class, needed: int) -> tuple[pd.DataFrame, list[str], int]:
    """The manifest rows of one class that have every value of ``columns``.

    Args:
        key: the stage's config section (``explain.keypoints``), named in the messages.
        columns_key: the key holding ``columns`` in that section (None columns: error).
        target_class: a class name, id, or None (the class with the most such images).
        needed: the fewest images the stage can work with.
    Returns:
        (the class's rows, the class names, the class id).
    """
    if not columns:
        raise ValueError(f"config key '{key}.{columns_key}' is not set: name the manifest columns "
                         "that locate the part or keypoint in each image")
    manifest, class_names = read_manifest(manifest_csv)
    check_columns(manifest, columns, f"{key}.{columns_key}")
    usable = manifest[manifest[list(columns)].notna().all(axis=1)]
    class_id = choose_class(usable, class_names, target_class, f"{key}.target_class", needed)
    return usable[usable["label"] == class_id], class_names, class_id
