"""Writing a small HDF5 file of named arrays in one go (the stages' result files)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import h5py
import numpy as np

from convscope.store.atomic import atomic_path

__all__ = ["write_h5"]


def write_h5(path: str | os.PathLike, datasets: Mapping[str, np.ndarray],
             attrs: Mapping[str, object] | None = None) -> None:
    """Write ``datasets`` (name -> array; a ``/`` in a name makes groups; text arrays as
    UTF-8 strings) and file ``attrs`` to ``path``, atomically."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name, values in datasets.items():
            values = np.asarray(values)
            if values.dtype.kind in "UO":
                values = values.astype(object).astype(str).astype(h5py.string_dtype())
            f.create_dataset(name, data=values)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
