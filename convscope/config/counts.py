"""Counts a config asks for, clipped to what the dataset has, with one warning naming the key."""

from __future__ import annotations

import logging

__all__ = ["clip_count"]

logger = logging.getLogger(__name__)


def clip_count(key: str, asked: int, available: int, what: str = "images") -> int:
    """``min(asked, available)``; a warning naming config ``key`` when that clips ``asked``.

    Args:
        key: the config key holding the count, e.g. ``"explain.invariance.n_images"``.
        asked: the count the config asks for.
        available: how many the dataset can give (usable images, distinct pairs...).
        what: what is counted, for the message.
    Returns:
        the count to use, never negative.
    """
    asked, available = int(asked), max(int(available), 0)
    if asked <= available:
        return asked
    logger.warning("config key %r is %d but only %d %s are available; using %d", key, asked,
                   available, what, available)
    return available
