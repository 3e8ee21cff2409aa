"""Results tables (CSV) read with the columns that hold names as text.

pandas reads a column of ``"1"``, ``"4"``, ``"7"`` as integers, so the layers of an
``nn.Sequential`` (named by their position), numeric class names (MNIST's ``"0"``..
``"9"``) or image paths would stop matching the names they came from. `read_table`
reads every column named in `NAME_COLUMNS` (and those a caller adds) as text.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import pandas as pd

__all__ = ["NAME_COLUMNS", "read_table"]

#: columns of convscope's tables that hold a layer, class, image or file name
NAME_COLUMNS = frozenset({"layer", "analysed_layer", "class_name", "top_class", "label_name",
                          "preferred_class", "path", "file", "split", "other", "attribute"})


def read_table(path: str | os.PathLike, *, text: Iterable[str] = (), **kwargs) -> pd.DataFrame:
    """``pd.read_csv(path, **kwargs)`` with `NAME_COLUMNS` and ``text`` read as text (str).

    A ``dtype`` given in ``kwargs`` wins for its columns.
    """
    names = NAME_COLUMNS | set(text)
    header = pd.read_csv(path, nrows=0, sep=kwargs.get("sep", ",")).columns
    usecols = kwargs.get("usecols")
    if usecols is not None and not callable(usecols):
        header = [c for c in header if c in set(usecols)]
    dtype = {column: str for column in header if column in names}
    given = kwargs.pop("dtype", None) or {}
    dtype.update(given if isinstance(given, dict) else {c: given for c in header})
    return pd.read_csv(path, dtype=dtype, **kwargs)
