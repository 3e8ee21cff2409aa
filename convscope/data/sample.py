"""Seeded samples of manifest rows whose images can be read (the stages' one sampler)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from convscope.data.images import ImageReadError, load_image

__all__ = ["readable_sample"]

logger = logging.getLogger(__name__)


def readable_sample(rows: pd.DataFrame, count: int,
                    seed: int) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """The first ``count`` readable images of a seeded permutation of ``rows`` (fewer when
    fewer can be read). Unreadable images are skipped with a warning in the log.

    Args:
        rows: manifest rows (columns ``index``, ``path``, ``slot``).
    Returns:
        (the chosen rows in sampling order, index reset; their (H, W, C) uint8 original
        images).
    """
    chosen, images = [], []
    for position in np.random.default_rng(seed).permutation(len(rows)):
        if len(images) == count:
            break
        row = rows.iloc[int(position)]
        try:
            images.append(load_image(str(row["path"]), int(row["slot"])))
        except ImageReadError as err:
            logger.warning("manifest row %d (%s) skipped: %s", int(row["index"]), row["path"], err)
            continue
        chosen.append(int(position))
    return rows.iloc[chosen].reset_index(drop=True), images
