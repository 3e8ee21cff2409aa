"""Seeded samples of manifest rows whose images can be read, for the explanation stages."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from convscope.data.images import ImageReadError, load_image

__all__ = ["read_sample"]

logger = logging.getLogger(__name__)


def read_sample(rows: pd.DataFrame, count: int, seed: int,
                key: str) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """The first ``count`` readable images of a seeded permutation of ``rows``.

    Unreadable images are skipped with a warning. Raises ValueError naming config ``key``
    when fewer than ``count`` can be read.

    Returns:
        (the chosen rows in sampling order, their (H, W, 3) uint8 original images).
    """
    order = np.random.default_rng(seed).permutation(len(rows))
    chosen, images = [], []
    for position in order:
        row = rows.iloc[int(position)]
        try:
            images.append(load_image(row["path"], int(row["slot"])))
        except ImageReadError as err:
            logger.warning("image %s (%s) skipped: %s", row["index"], row["path"], err)
            continue
        chosen.append(int(position))
        if len(images) == count:
            return rows.iloc[chosen].reset_index(drop=True), images
    raise ValueError(f"config key {key!r}: {count} images are needed but only {len(images)} of "
                     f"the {len(rows)} candidate images could be read")
