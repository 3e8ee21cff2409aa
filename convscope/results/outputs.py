"""`StageOutput`: the files of one explanation or synthesis stage (summary, HDF5, tables)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from convscope.store.tables import read_table

__all__ = ["StageOutput"]


class StageOutput:
    """One explanation or synthesis stage's folder under ``results/`` (e.g. explain/attribution).

    Example::

        maps = results.explanation("attribution")
        maps.summary["title"]          # 'Attribution maps'
        maps.datasets()                # {'gradcam/true': (6, 32, 32), ...}
        maps.read("gradcam/true")      # (6, 32, 32) float array
    """

    def __init__(self, name: str, folder: str | Path):
        self.name = name
        self.folder = Path(folder)

    def __repr__(self) -> str:
        return f"StageOutput({self.name!r}, h5={self.h5_files}, tables={self.tables})"

    @property
    def summary(self) -> dict:
        """The stage's ``summary.json`` (title, caption, numbers, figures, tables, units).

        Example: ``[f["path"] for f in results.synthesis("dream").summary["figures"]]``
        """
        return json.loads((self.folder / "summary.json").read_text())

    @property
    def h5_files(self) -> list[str]:
        """The stage's HDF5 files, relative to its folder, sorted.

        Example: ``results.explanation("attribution").h5_files``  ->  ``['maps.h5']``
        (the chunk files of a chunked stage, ``chunks/NNNNN/``, are left out: the stage's
        file holds their rows)
        """
        return self._files("*.h5")

    def _files(self, pattern: str) -> list[str]:
        found = (p.relative_to(self.folder) for p in self.folder.rglob(pattern))
        return sorted(str(p) for p in found if p.parts[0] != "chunks")

    @property
    def tables(self) -> list[str]:
        """The stage's CSV tables, relative to its folder, sorted.

        Example: ``results.synthesis("fooling").tables``  ->  ``['table.csv']``
        """
        return self._files("*.csv")

    def _h5(self, file: str | None) -> Path:
        files = self.h5_files
        if file is None:
            if len(files) != 1:
                raise ValueError(f"stage {self.name} has HDF5 files {files}; name one with file=")
            file = files[0]
        if file not in files:
            raise KeyError(f"stage {self.name} has no HDF5 file {file!r}; it has {files}")
        return self.folder / file

    def datasets(self, file: str | None = None) -> dict[str, tuple[int, ...]]:
        """Dataset path -> shape in one HDF5 file (the only one when ``file`` is None).

        Example: ``results.synthesis("fooling").datasets()``
        """
        found = {}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                found[name] = tuple(obj.shape)

        with h5py.File(self._h5(file), "r") as f:
            f.visititems(visit)
        return found

    def read(self, dataset: str, file: str | None = None) -> np.ndarray:
        """One dataset of an HDF5 file as a numpy array (strings as ``str``).

        Example: ``results.synthesis("dream").read("dreamed")``
        """
        with h5py.File(self._h5(file), "r") as f:
            if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
                raise KeyError(f"{self._h5(file)} has no dataset {dataset!r}; it has "
                               f"{sorted(self.datasets(file))}")
            data = f[dataset]
            if h5py.check_string_dtype(data.dtype) is not None:
                return np.array(data.asstr()[()], dtype=object)
            return data[()]

    def attrs(self, file: str | None = None, dataset: str | None = None) -> dict:
        """The attributes of an HDF5 file (or of one of its datasets), bytes decoded.

        Example: ``results.synthesis("dream").attrs()``
        """
        with h5py.File(self._h5(file), "r") as f:
            obj = f if dataset is None else f[dataset]
            return {key: _plain(value) for key, value in obj.attrs.items()}

    def table(self, name: str) -> pd.DataFrame:
        """One of the stage's CSV tables (``name`` with or without ``.csv``).

        Example: ``results.synthesis("adversarial").table("table")``
        """
        file = name if name.endswith(".csv") else f"{name}.csv"
        if file not in self.tables:
            raise KeyError(f"stage {self.name} has no table {file!r}; it has {self.tables}")
        return read_table(self.folder / file)


def _plain(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
