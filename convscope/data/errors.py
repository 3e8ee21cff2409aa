"""The error a user's dataset raises, and how its messages show values."""

from __future__ import annotations

__all__ = ["DatasetError", "shown"]


class DatasetError(ValueError):
    """The dataset given by the user cannot be read; the message says how to fix it."""


def shown(values, n: int = 5) -> str:
    """The first ``n`` of ``values`` as reprs, with the count when there are more."""
    values = list(values)
    return ", ".join(repr(v) for v in values[:n]) + (f" ... ({len(values)} in all)" if len(values) > n else "")
