"""Tables for the pages: a CSV or DataFrame as column names and rows of display strings."""

from __future__ import annotations

import math
import os

import pandas as pd
from convscope.store.tables import read_table

__all__ = ["format_value", "table", "csv_table"]


def format_value(value) -> str:
    """A cell as text: floats with 3 decimals (integers as such), NaN/None as empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.3f}"
    return str(value)


def table(frame: pd.DataFrame, max_rows: int | None = None) -> dict:
    """``{"columns", "rows", "total"}`` of ``frame`` (its first ``max_rows`` rows), cells as text."""
    total = len(frame)
    if max_rows is not None:
        frame = frame.head(max_rows)
    rows = [[format_value(v) for v in row] for row in frame.astype(object).itertuples(index=False)]
    return {"columns": [str(c) for c in frame.columns], "rows": rows, "total": total}


def csv_table(path: str | os.PathLike, max_rows: int | None = None) -> dict:
    """`table` of a CSV file (empty strings stay empty, not NaN)."""
    return table(read_table(path, keep_default_na=False, na_values=[""]), max_rows)
