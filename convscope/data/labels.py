"""Class names and labels: class lists from files, labels (names or ids) to class ids.

Labels may be class names or integer ids (not both: `encode_labels`). Class
names, in the model's output order, come from the config's
``dataset.class_names`` (a list or a file with one name per line,
`load_class_names`), else from ``<stem>.classes.json`` or ``classes.json``
next to a table (`read_class_names`), else from the sorted label strings (a
categorical's own order), or ``"0".."K-1"`` for integer labels.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from convscope.data.errors import DatasetError, shown

__all__ = [
    "classes_path",
    "read_class_names",
    "find_class_file",
    "decode_strings",
    "load_class_names",
    "encode_labels",
]


def classes_path(csv_path: str | os.PathLike) -> Path:
    """``<dir>/<stem>.classes.json`` next to a manifest CSV: where `read_manifest`
    looks for the class names when not told (the workflow's ``manifest`` rule
    declares this path as its ``classes`` output)."""
    csv_path = Path(csv_path)
    return csv_path.with_name(f"{csv_path.stem}.classes.json")


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names from a JSON file: a list of names, ``{"classes": [...]}`` or ``{"0": name, ...}``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"cannot read class names from {path}: {error}") from None
    if isinstance(data, dict):
        # {"0": "cat", "1": "dog"} or {"classes": [...]}
        if "classes" in data and isinstance(data["classes"], list):
            data = data["classes"]
        else:
            try:
                items = sorted((int(key), value) for key, value in data.items())
            except ValueError:
                raise DatasetError(
                    f"{path}: expected a JSON list of class names or an object mapping "
                    "class ids to names"
                ) from None
            if [key for key, _ in items] != list(range(len(items))):
                raise DatasetError(f"{path}: class ids must be 0..K-1 without gaps")
            data = [value for _, value in items]
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of class names")
    return [str(name) for name in data]


def find_class_file(table_path: Path) -> Path | None:
    """``<stem>.classes.json`` or ``classes.json`` beside ``table_path``, whichever exists first."""
    for candidate in (classes_path(table_path), table_path.with_name("classes.json")):
        if candidate.is_file():
            return candidate
    return None


def decode_strings(values: np.ndarray) -> np.ndarray:
    """Byte strings (fixed ``S`` or object ``bytes``, as stored by numpy/h5py) -> str objects."""
    values = np.asarray(values)
    if values.dtype.kind == "S":
        return np.char.decode(values, "utf-8").astype(object)
    if values.dtype.kind == "O":
        return np.array([x.decode("utf-8") if isinstance(x, bytes) else x for x in values], dtype=object)
    return values


def load_class_names(spec: Sequence[str] | str | os.PathLike | None,
                     key: str = "dataset.class_names") -> list[str] | None:
    """The class names of config key ``key`` (``dataset.class_names``), in the model's output order.

    ``spec`` is None (no list), a list of names, or the path of a text file with one name
    per line (blank lines skipped; a ``.json`` file is read by `read_class_names`). Raises
    `DatasetError` naming ``key`` for a missing or empty file and for a name given twice.
    """
    if spec is None:
        return None
    if isinstance(spec, (list, tuple)):
        names, where = [str(name) for name in spec], "the list"
    else:
        path = Path(os.path.expanduser(os.fspath(spec)))
        if not path.is_file():
            raise DatasetError(f"config key {key!r}: class list {path} does not exist (give a "
                               "text file with one class name per line, in the model's output "
                               "order, or a list of names)")
        if path.suffix.lower() == ".json":
            names = read_class_names(path)
        else:
            names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        where = str(path)
    if not names:
        raise DatasetError(f"config key {key!r}: {where} holds no class names")
    seen, repeated = set(), []
    for name in names:
        if name in seen and name not in repeated:
            repeated.append(name)
        seen.add(name)
    if repeated:
        raise DatasetError(f"config key {key!r}: {where} gives the class names {repeated[:5]} "
                           "more than once; each output id needs its own name")
    return names


def _is_integer_like(value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    if isinstance(value, (float, np.floating)):
        return bool(np.isfinite(value) and value == round(value))
    return isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value) is not None


def _unwrap_categorical(series: pd.Series) -> tuple[pd.Series, list[str] | None]:
    """A pandas categorical as plain values, and its category order when it holds names."""
    if not isinstance(series.dtype, pd.CategoricalDtype):
        return series, None
    categories = series.cat.categories
    if pd.api.types.is_numeric_dtype(categories.dtype):
        return series.astype(categories.dtype if not series.isna().any() else "float64"), None
    return series.astype(object), [str(c) for c in categories]


def _integer_strings(present: pd.Series, class_names: list[str] | None,
                     source: str) -> pd.Series | None:
    """Text labels that are all integer ids, as int64 (None when they are names); a column
    mixing names and ids raises, unless every value is one of ``class_names``."""
    distinct = pd.unique(present)
    as_text = [str(v) for v in distinct]
    if class_names is not None and set(as_text) <= set(class_names):
        return None
    integer_like = [_is_integer_like(v) for v in distinct]
    if any(integer_like) and not all(integer_like):
        ids = sorted(t for t, i in zip(as_text, integer_like) if i)
        names = sorted(t for t, i in zip(as_text, integer_like) if not i)
        raise DatasetError(
            f"{source} mixes class names ({shown(names)}) and integer ids "
            f"({shown(ids)}); use one kind: names (mapped through dataset.class_names) "
            "or ids 0..K-1 of the model's outputs")
    if not (distinct.size and all(integer_like)):
        return None
    return pd.Series([int(str(v).strip()) if isinstance(v, str) else int(v) for v in present],
                     index=present.index, dtype=np.int64)


def _encode_ids(present: pd.Series, class_names: list[str] | None,
                source: str) -> tuple[np.ndarray, list[str]]:
    """Integer labels -> (ids of the present values, class names)."""
    as_float = present.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(as_float)) or not np.all(as_float == np.round(as_float)):
        bad = present[(~np.isfinite(as_float)) | (as_float != np.round(as_float))]
        raise DatasetError(
            f"{source}: labels must be class names or integer ids; found {bad.iloc[0]!r}")
    ids = as_float.astype(np.int64)
    if np.any(ids < -1):
        raise DatasetError(
            f"{source}: integer labels must be >= 0 (or -1 for unknown); found {ids.min()}")
    n_classes = int(ids.max()) + 1 if ids.size else 0
    if class_names is None:
        class_names = [str(i) for i in range(n_classes)]
    elif n_classes > len(class_names):
        raise DatasetError(
            f"{source}: label {n_classes - 1} is out of range for the "
            f"{len(class_names)} class names given (dataset.class_names)")
    return ids, list(class_names)


def _encode_names(names: pd.Series, class_names: list[str] | None, category_order,
                  source: str, names_required: bool) -> tuple[np.ndarray, list[str]]:
    """Class-name labels -> (ids of the present values, class names)."""
    if class_names is None:
        if names_required:
            raise DatasetError(
                f"{source} holds class names ({shown(sorted(set(names)))}) but "
                "dataset.class_names is not set, so nothing says which model output each name "
                "is (sorting them would silently mismatch the model); set dataset.class_names "
                "to the names in the model's output order: a list, or a text file with one "
                "name per line")
        class_names = category_order if category_order is not None else sorted(set(names))
    lookup = {name: i for i, name in enumerate(class_names)}
    unknown = sorted(set(names) - set(lookup))
    if unknown:
        raise DatasetError(
            f"{source}: labels {shown(unknown)} are not among the class names "
            f"{class_names[:10]}{' ...' if len(class_names) > 10 else ''} (dataset.class_names, "
            "or the classes.json next to the table)")
    return names.map(lookup).to_numpy(dtype=np.int64), list(class_names)


def encode_labels(
    values: pd.Series | np.ndarray, class_names: list[str] | None, source: str,
    *, names_required: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """Label values (names or ids, missing allowed) -> int64 ids (-1 missing), class names.

    ``class_names`` is the model's output order (`load_class_names`), or None:

    - integer ids are kept; with ``class_names`` they get its names (an id past its end is
      an error), without it the names are ``"0".."K-1"``;
    - names are mapped through ``class_names``; a name not in it is an error naming it;
      without it, ``names_required`` (a model that was not trained by this workflow) makes
      them an error too, since nothing says which output id each name is; otherwise ids are
      the sorted names, or a pandas categorical's own category order;
    - a column mixing names and integer ids is an error naming some of each.
    """
    if isinstance(values, np.ndarray):
        values = decode_strings(values)
    series, category_order = _unwrap_categorical(pd.Series(values).reset_index(drop=True))
    missing = series.isna().to_numpy()
    present = series[~missing]
    numeric = (pd.api.types.is_numeric_dtype(series.dtype)
               and not pd.api.types.is_bool_dtype(series.dtype))
    if not numeric:
        as_ids = _integer_strings(present, class_names, source)
        if as_ids is not None:
            present, numeric = as_ids, True
    codes = np.full(len(series), -1, dtype=np.int64)
    if numeric:
        codes[~missing], class_names = _encode_ids(present, class_names, source)
    else:
        codes[~missing], class_names = _encode_names(present.astype(str), class_names,
                                                     category_order, source, names_required)
    return codes, class_names
