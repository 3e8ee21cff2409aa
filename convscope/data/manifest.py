"""The manifest: one table, one row per image.

Columns, in order:

===========  ========  ==========================================================
``index``    int64     row number 0..N-1 in the final order
``path``     str       absolute path of the image file or of the array file
``slot``     int64     row in the array file, -1 for image files
``label``    int64     class id, -1 if unknown
``split``    str       ``train`` / ``test`` / ... as given, else ``all``
...          any       attribute columns (user metadata), dtypes kept
===========  ========  ==========================================================

`build_manifest` reads three kinds of dataset:

``folder``
    ``root/<class>/.../*.png`` (any of `IMAGE_EXTENSIONS`, case-insensitive).
    Classes are the sorted names of the non-hidden subfolders of ``root``;
    files are sorted by class, then by path. Split ``all``.
``manifest``
    A ``.csv`` or ``.parquet`` table with one row per image. Relative paths
    are resolved against the table's folder. Labels may be class names or
    integer ids (not both: `encode_labels`). Class names, in the model's
    output order, come from ``class_names`` (the config's
    ``dataset.class_names``: a list or a file with one name per line), else
    from ``<stem>.classes.json`` or ``classes.json`` next to the table, else
    sorted label strings (a categorical's own order; refused with
    ``names_required``), or ``"0".."K-1"`` for integer labels.
    A ``split`` column is the split when its values are `KNOWN_SPLITS`; a
    ``slot`` column gives rows in array files when some path names one.
    Every other column becomes an attribute column; a user column called
    ``index`` (or ``slot`` / ``split`` not meaning the above, or ``path`` /
    ``label`` when those are not the chosen columns) is kept as
    ``source_<name>``, with a note in ``manifest.attrs["notes"]``.
``array``
    An ``.npz`` / ``.h5`` / ``.hdf5`` file with ``images`` (N, H, W) or
    (N, H, W, C) and optional ``labels`` (N,) (integer ids or strings) and
    ``class_names`` (the config's list wins); an optional ``split`` (N,) is kept, and any other 1-D
    array of length N becomes an attribute column.

The workflow's ``manifest`` rule calls `write_dataset_manifest` with the
`DatasetConfig` and the two paths it declares; the stages downstream read the
pair back with `read_manifest`.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from convscope.config.sections import DatasetConfig
from convscope.store.atomic import atomic_path, write_json

__all__ = [
    "DatasetError",
    "MANIFEST_COLUMNS",
    "DATASET_KINDS",
    "IMAGE_EXTENSIONS",
    "build_manifest",
    "write_manifest",
    "read_manifest",
    "read_class_names",
    "load_class_names",
    "encode_labels",
    "check_labels",
    "KNOWN_SPLITS",
    "classes_path",
    "dataset_manifest",
    "write_dataset_manifest",
]

os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

MANIFEST_COLUMNS: tuple[str, ...] = ("index", "path", "slot", "label", "split")
DATASET_KINDS: tuple[str, ...] = ("folder", "manifest", "array")
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

_TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
_ARRAY_SUFFIXES = (".npz", ".h5", ".hdf5")

#: values of a ``split`` column that make it the split (any other value: an attribute column)
KNOWN_SPLITS: tuple[str, ...] = ("train", "test", "val", "valid", "validation", "all")

_RESERVED_WHY = {
    "index": "the manifest numbers its rows in 'index'",
    "path": "the image paths come from dataset.path_column",
    "label": "the labels come from dataset.label_column",
    "slot": "'slot' means a row of an array file, and no path names an array file",
    "split": "'split' is the split only when its values are " + ", ".join(KNOWN_SPLITS),
}


class DatasetError(ValueError):
    """The dataset given by the user cannot be read; the message says how to fix it."""


# --------------------------------------------------------------------------
# helpers


def classes_path(csv_path: str | os.PathLike) -> Path:
    """``<dir>/<stem>.classes.json`` next to a manifest CSV: where `read_manifest`
    looks for the class names when not told (the workflow's ``manifest`` rule
    declares this path as its ``classes`` output)."""
    csv_path = Path(csv_path)
    return csv_path.with_name(f"{csv_path.stem}.classes.json")


def _normalise_extensions(extensions: Iterable[str]) -> tuple[str, ...]:
    """Extensions as lower-case ``.ext`` strings; raises `DatasetError` when none are given."""
    if isinstance(extensions, str):
        extensions = [extensions]
    out = []
    for ext in extensions:
        ext = str(ext).strip().lower()
        out.append(ext if ext.startswith(".") else "." + ext)
    if not out:
        raise DatasetError("extensions is empty; give at least one, e.g. ('.png', '.jpg')")
    return tuple(out)


def _absolute(path: str, base: str) -> str:
    """``path`` (``~`` expanded) resolved against the folder ``base``, normalised."""
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


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


def _find_class_file(table_path: Path) -> Path | None:
    """``<stem>.classes.json`` or ``classes.json`` beside ``table_path``, whichever exists first."""
    for candidate in (classes_path(table_path), table_path.with_name("classes.json")):
        if candidate.is_file():
            return candidate
    return None


def _decode_strings(values: np.ndarray) -> np.ndarray:
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


def _shown(values, n: int = 5) -> str:
    values = list(values)
    return ", ".join(repr(v) for v in values[:n]) + (f" ... ({len(values)} in all)" if len(values) > n else "")


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
            f"{source} mixes class names ({_shown(names)}) and integer ids "
            f"({_shown(ids)}); use one kind: names (mapped through dataset.class_names) "
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
                f"{source} holds class names ({_shown(sorted(set(names)))}) but "
                "dataset.class_names is not set, so nothing says which model output each name "
                "is (sorting them would silently mismatch the model); set dataset.class_names "
                "to the names in the model's output order: a list, or a text file with one "
                "name per line")
        class_names = category_order if category_order is not None else sorted(set(names))
    lookup = {name: i for i, name in enumerate(class_names)}
    unknown = sorted(set(names) - set(lookup))
    if unknown:
        raise DatasetError(
            f"{source}: labels {_shown(unknown)} are not among the class names "
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
        values = _decode_strings(values)
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


def _finish(
    paths: Sequence[str],
    slots: np.ndarray,
    labels: np.ndarray,
    splits: Sequence[str] | np.ndarray,
    attributes: pd.DataFrame | None,
    source: str,
) -> pd.DataFrame:
    """The manifest frame: `MANIFEST_COLUMNS` for the N images, then the attribute columns."""
    n = len(paths)
    if n == 0:
        raise DatasetError(f"{source}: no images found")
    manifest = pd.DataFrame(
        {
            "index": np.arange(n, dtype=np.int64),
            "path": pd.Series(list(paths), dtype=object).astype(str),
            "slot": np.asarray(slots, dtype=np.int64),
            "label": np.asarray(labels, dtype=np.int64),
            "split": pd.Series(list(splits), dtype=object).astype(str),
        }
    )
    if attributes is not None and len(attributes.columns):
        manifest = pd.concat([manifest, attributes.reset_index(drop=True)], axis=1)
    return manifest


# --------------------------------------------------------------------------
# the three kinds


def _from_folder(root: Path, extensions: tuple[str, ...],
                 given_names: list[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Manifest of ``root/<class>/.../<image>`` files: classes are the sorted subfolder names,
    or with ``given_names`` (the model's output order) each subfolder's position in it."""
    if not root.is_dir():
        raise DatasetError(
            f"folder dataset {root} is not a directory; expected root/<class>/<image files>"
        )
    class_names = sorted(
        entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith(".")
    )
    if not class_names:
        raise DatasetError(
            f"folder dataset {root} has no class subfolders; expected root/<class>/<image files>"
        )
    folders = class_names
    if given_names is not None:
        _from_folder_names(root, given_names)
        class_names = list(given_names)
    paths, labels = [], []
    for name in folders:
        label = class_names.index(name)
        found = []
        for folder, subfolders, files in os.walk(root / name, followlinks=True):
            subfolders[:] = [d for d in subfolders if not d.startswith(".")]
            for file in files:
                if not file.startswith(".") and os.path.splitext(file)[1].lower() in extensions:
                    found.append(os.path.join(folder, file))
        found.sort()
        paths += [os.path.abspath(p) for p in found]
        labels += [label] * len(found)
    if not paths:
        raise DatasetError(
            f"folder dataset {root}: no images with extensions {', '.join(extensions)} "
            f"in the class folders {', '.join(class_names[:10])}"
        )
    manifest = _finish(paths, np.full(len(paths), -1), np.array(labels), ["all"] * len(paths), None, str(root))
    return manifest, class_names


def _read_table(path: Path) -> pd.DataFrame:
    """A ``.csv`` or ``.parquet`` table; an unreadable file raises `DatasetError`."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise DatasetError(f"manifest {path} is empty; expected a header row and one row per image") from None
    except Exception as error:
        raise DatasetError(f"cannot read manifest {path}: {type(error).__name__}: {error}") from None


def _check_table(table: pd.DataFrame, path: Path, label_column: str | None, path_column: str) -> None:
    """Raise `DatasetError` when the chosen columns are missing or the table is empty."""
    present = ", ".join(map(str, table.columns)) or "none"
    if path_column not in table.columns:
        raise DatasetError(
            f"manifest {path} has no path column {path_column!r}; columns present: {present}"
        )
    if label_column is not None and label_column not in table.columns:
        raise DatasetError(
            f"manifest {path} has no label column {label_column!r}; columns present: {present} "
            "(set label_column to one of them, or to None for an unlabelled dataset)"
        )
    if len(table) == 0:
        raise DatasetError(f"manifest {path}: no images (the table has no rows)")


def _known_split(values: pd.Series | np.ndarray) -> bool:
    """Whether every non-missing value is one of `KNOWN_SPLITS` (so the column is a split)."""
    present = pd.Series(values).dropna().astype(str)
    return bool(set(present.unique()) <= set(KNOWN_SPLITS))


def _rename_reserved(columns: Sequence[str], renamed: Sequence[str], source: str,
                     notes: list[str], why: dict[str, str]) -> list[str]:
    """Attribute column names with each of ``renamed`` prefixed ``source_`` (a note each)."""
    out = []
    for column in map(str, columns):
        if column in renamed:
            notes.append(f"note: {source}: column {column!r} is kept as attribute "
                         f"'source_{column}' ({why.get(column, 'the manifest uses that name')})")
            column = f"source_{column}"
        out.append(column)
    return out


def _table_slots_and_splits(
    table: pd.DataFrame, path: Path, paths: Sequence[str], label_column: str | None,
    path_column: str,
) -> tuple[np.ndarray, list[str], set[str]]:
    """(N,) int64 array rows (-1: an image file), (N,) split names (``all`` when absent), and
    the names of the columns used for them.

    ``slot`` means "row in an array file" only when some path names an array file;
    ``split`` is the split only when it holds `KNOWN_SPLITS` values. Otherwise they are
    attribute columns (renamed by the caller).
    """
    used: set[str] = set()
    is_array = np.array([os.path.splitext(p)[1].lower() in _ARRAY_SUFFIXES for p in paths])
    slots = np.full(len(table), -1, dtype=np.int64)
    if is_array.any():
        if "slot" not in table.columns or "slot" in (path_column, label_column):
            rows = np.flatnonzero(is_array)[:5].tolist()
            raise DatasetError(f"manifest {path}: rows {rows} name array files, which need a "
                               "'slot' column (the image's row in the array file)")
        raw = pd.to_numeric(table["slot"], errors="coerce").to_numpy(dtype=np.float64)
        bad = is_array & ~(np.isfinite(raw) & (raw >= 0) & (raw == np.round(raw)))
        if bad.any():
            rows = np.flatnonzero(bad)[:5].tolist()
            raise DatasetError(f"manifest {path}: column 'slot' must hold the integer row "
                               f"(>= 0) in the array file for every array-file row; rows {rows} "
                               f"hold {table['slot'].iloc[rows].tolist()}")
        slots[is_array] = raw[is_array].astype(np.int64)
        used.add("slot")
    if "split" in table.columns and label_column != "split" and path_column != "split" \
            and _known_split(table["split"]):
        splits = table["split"].astype(object).where(table["split"].notna(), "all").astype(str)
        used.add("split")
    else:
        splits = ["all"] * len(table)
    return slots, list(splits), used


def _from_table(
    path: Path, label_column: str | None, path_column: str,
    class_names: list[str] | None = None, names_required: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """Manifest of a table with one row per image (see the module docstring)."""
    if path.suffix.lower() not in _TABLE_SUFFIXES:
        raise DatasetError(
            f"manifest {path} must be a table with suffix {', '.join(_TABLE_SUFFIXES)}"
        )
    if not path.is_file():
        raise DatasetError(f"manifest {path} does not exist")
    table = _read_table(path)
    _check_table(table, path, label_column, path_column)

    raw_paths = table[path_column]
    if raw_paths.isna().any():
        rows = np.flatnonzero(raw_paths.isna().to_numpy())[:5].tolist()
        raise DatasetError(f"manifest {path}: column {path_column!r} is empty in rows {rows}")
    base = os.path.abspath(path.parent)
    paths = [_absolute(str(p), base) for p in raw_paths]

    if class_names is None:
        class_file = _find_class_file(path)
        class_names = read_class_names(class_file) if class_file is not None else None
    if label_column is None:
        labels, class_names = np.full(len(table), -1, dtype=np.int64), list(class_names or [])
    else:
        labels, class_names = encode_labels(
            table[label_column], class_names, f"manifest {path}, column {label_column!r}",
            names_required=names_required)
    slots, splits, used = _table_slots_and_splits(table, path, paths, label_column, path_column)

    used |= {path_column, label_column}
    attributes = table[[c for c in table.columns if c not in used]].copy()
    notes: list[str] = []
    attributes.columns = _rename_reserved(attributes.columns, MANIFEST_COLUMNS,
                                          f"manifest {path}", notes, _RESERVED_WHY)
    manifest = _finish(paths, slots, labels, splits, attributes, f"manifest {path}")
    manifest.attrs["notes"] = notes
    return manifest, class_names


def _npz_arrays(path: Path) -> tuple[dict[str, tuple[int, ...]], callable]:
    """Shapes of the arrays in an .npz without loading them, and a loader."""
    shapes = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            with archive.open(member) as stream:
                version = np.lib.format.read_magic(stream)
                header = (
                    np.lib.format.read_array_header_1_0(stream)
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0(stream)
                )
            shapes[member[: -len(".npy")]] = header[0]

    def load(key: str) -> np.ndarray:
        with np.load(path, allow_pickle=False) as data:
            return _decode_strings(data[key])

    return shapes, load


def _h5_arrays(path: Path) -> tuple[dict[str, tuple[int, ...]], callable]:
    """Shapes of the datasets in an HDF5 file (None for groups) without loading them, and a loader."""
    import h5py

    with h5py.File(path, "r", locking=False) as f:
        shapes = {key: f[key].shape for key in f.keys() if isinstance(f[key], h5py.Dataset)}
        groups = [key for key in f.keys() if not isinstance(f[key], h5py.Dataset)]
    for key in groups:
        shapes.setdefault(key, None)

    def load(key: str) -> np.ndarray:
        with h5py.File(path, "r", locking=False) as f:
            return _decode_strings(f[key][()])

    return shapes, load


def _from_array(path: Path, class_names: list[str] | None = None,
                names_required: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """Manifest of an ``.npz``/``.h5`` array file: one row per entry of ``images``."""
    suffix = path.suffix.lower()
    if suffix not in _ARRAY_SUFFIXES:
        raise DatasetError(f"array dataset {path} must have suffix {', '.join(_ARRAY_SUFFIXES)}")
    if not path.is_file():
        raise DatasetError(f"array dataset {path} does not exist")
    try:
        shapes, load = _npz_arrays(path) if suffix == ".npz" else _h5_arrays(path)
    except Exception as error:
        raise DatasetError(f"cannot read array dataset {path}: {type(error).__name__}: {error}") from None
    keys = ", ".join(shapes) or "none"
    if "images" not in shapes:
        raise DatasetError(f"array dataset {path} has no 'images' array; keys present: {keys}")
    shape = shapes["images"]
    if shape is None or len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in (1, 3, 4)):
        raise DatasetError(
            f"array dataset {path}: 'images' has shape {shape}; expected (N, H, W) or "
            "(N, H, W, C) with C in 1, 3, 4"
        )
    n = int(shape[0])
    if n == 0:
        raise DatasetError(f"array dataset {path}: no images ('images' has 0 rows)")

    def column(key: str) -> np.ndarray:
        if shapes.get(key) != (n,):
            raise DatasetError(
                f"array dataset {path}: '{key}' has shape {shapes.get(key)}; expected ({n},) to match 'images'"
            )
        return load(key)

    given_names = class_names
    if given_names is None and "class_names" in shapes:
        given_names = [str(x) for x in load("class_names")]
    elif given_names is None:
        class_file = _find_class_file(path)
        given_names = read_class_names(class_file) if class_file is not None else None
    if "labels" in shapes:
        labels, class_names = encode_labels(column("labels"), given_names,
                                            f"array dataset {path}, 'labels'",
                                            names_required=names_required)
    else:
        labels, class_names = np.full(n, -1, dtype=np.int64), list(given_names or [])
    reserved = {"images", "labels", "class_names"}
    splits = np.full(n, "all", dtype=object)
    if "split" in shapes:
        split_values = column("split")
        if _known_split(split_values):
            splits = pd.Series(split_values, dtype=object).where(
                pd.notna(split_values), "all").astype(str).to_numpy()
            reserved.add("split")

    attributes = pd.DataFrame(
        {key: load(key) for key, key_shape in shapes.items() if key not in reserved and key_shape == (n,)}
    )
    notes: list[str] = []
    why = {**_RESERVED_WHY, "slot": "each image's slot is its row in 'images'"}
    attributes.columns = _rename_reserved(attributes.columns, MANIFEST_COLUMNS,
                                          f"array dataset {path}", notes, why)
    absolute = os.path.abspath(path)
    manifest = _finish([absolute] * n, np.arange(n), labels, list(splits), attributes, f"array dataset {path}")
    manifest.attrs["notes"] = notes
    return manifest, class_names


# --------------------------------------------------------------------------
# public API


def build_manifest(
    kind: str,
    path: str | os.PathLike,
    *,
    label_column: str | None = "label",
    path_column: str = "path",
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    class_names: Sequence[str] | str | None = None,
    names_required: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """Read a dataset of ``kind`` (``folder``, ``manifest`` or ``array``) into a manifest.

    Returns ``(manifest, class_names)``; see the module docstring for the
    columns and for what each kind expects. ``label_column`` and
    ``path_column`` apply to ``manifest`` tables, ``extensions`` to folders.
    ``class_names`` (a list or a file, `load_class_names`) is the model's output order:
    labels are mapped through it (it wins over a ``classes.json`` beside the data);
    ``names_required`` refuses label names without it (see `encode_labels`). Notes on
    renamed columns are in ``manifest.attrs["notes"]``.
    Raises `DatasetError` with a message naming the file or key at fault.
    """
    if kind not in DATASET_KINDS:
        raise DatasetError(f"unknown dataset kind {kind!r}; valid kinds: {', '.join(DATASET_KINDS)}")
    path = Path(os.path.expanduser(os.fspath(path)))
    if not path.exists():
        raise DatasetError(f"{kind} dataset {path} does not exist")
    names = load_class_names(class_names)
    if kind == "folder":
        return _from_folder(path, _normalise_extensions(extensions), names)
    if kind == "manifest":
        return _from_table(path, label_column, path_column, names, names_required)
    return _from_array(path, names, names_required)


def _check_manifest(manifest: pd.DataFrame, source: str) -> None:
    """Raise `DatasetError` naming the `MANIFEST_COLUMNS` missing from ``manifest``."""
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise DatasetError(
            f"{source} lacks the manifest columns {missing}; columns present: "
            + ", ".join(map(str, manifest.columns))
        )


def write_manifest(
    manifest: pd.DataFrame,
    class_names: Sequence[str],
    csv_path: str | os.PathLike,
    classes_json: str | os.PathLike | None = None,
) -> None:
    """Write ``manifest`` to ``csv_path`` and ``class_names`` (a JSON list) to ``classes_json``.

    The manifest columns come first (`MANIFEST_COLUMNS`), then the attribute
    columns in their order. ``classes_json`` defaults to `classes_path`
    (``<stem>.classes.json`` next to the CSV), which is where `read_manifest`
    looks for it; the workflow passes the path its rule declares. Each file
    appears complete under its name or not at all (`convscope.store.atomic`).
    """
    _check_manifest(manifest, "manifest to write")
    ordered = list(MANIFEST_COLUMNS) + [c for c in manifest.columns if c not in MANIFEST_COLUMNS]
    with atomic_path(csv_path) as tmp:
        manifest[ordered].to_csv(tmp, index=False)
    classes_json = classes_path(csv_path) if classes_json is None else classes_json
    write_json(classes_json, [str(name) for name in class_names], indent=1)


def dataset_manifest(dataset: DatasetConfig, source: str | os.PathLike, *,
                     names_required: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """The manifest of the configured dataset, read from ``source``: ``(manifest, class_names)``.

    ``source`` is the folder, table or array file the dataset's ``kind``
    reads; a ``demo`` dataset is read as the ``manifest`` table that
    `convscope.data.demo.generate_demo_dataset` wrote. ``dataset.path`` is not
    read: the caller resolves the source (the workflow's rule input).
    """
    kind = "manifest" if dataset.kind == "demo" else dataset.kind
    return build_manifest(kind, source, label_column=dataset.label_column,
                          path_column=dataset.path_column, class_names=dataset.class_names,
                          names_required=names_required)


def write_dataset_manifest(
    dataset: DatasetConfig,
    source: str | os.PathLike,
    csv_out: str | os.PathLike,
    classes_out: str | os.PathLike,
    *,
    names_required: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """Build the configured dataset's manifest (`dataset_manifest`) and write it
    (`write_manifest`) to ``csv_out`` and ``classes_out``; returns what was written."""
    manifest, class_names = dataset_manifest(dataset, source, names_required=names_required)
    for note in manifest.attrs.get("notes", []):
        print(note)
    write_manifest(manifest, class_names, csv_out, classes_out)
    print(f"{len(manifest)} images, {len(class_names)} classes")
    return manifest, class_names


def read_manifest(
    csv_path: str | os.PathLike, classes_json: str | os.PathLike | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Read a manifest written by `write_manifest`: ``(manifest, class_names)``.

    ``classes_json`` defaults to `classes_path` of ``csv_path``. The manifest
    columns get their dtypes back (int64 ``index``/``slot``/``label``, str
    ``path``/``split``, a missing split reads as ``all``).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"manifest {csv_path} does not exist")
    class_file = classes_path(csv_path) if classes_json is None else Path(classes_json)
    if not class_file.is_file():
        raise DatasetError(
            f"manifest {csv_path} has no class list {class_file}; write it with write_manifest"
        )
    manifest = pd.read_csv(csv_path, dtype={"path": str, "split": str}, keep_default_na=True)
    _check_manifest(manifest, f"manifest {csv_path}")
    for name in ("index", "slot", "label"):
        manifest[name] = manifest[name].astype(np.int64)
    manifest["path"] = manifest["path"].astype(object).astype(str)
    manifest["split"] = manifest["split"].fillna("all").astype(object).astype(str)
    return manifest, read_class_names(class_file)


def check_labels(
    kind: str,
    path: str | os.PathLike,
    *,
    label_column: str | None = "label",
    class_names: Sequence[str] | str | None = None,
    names_required: bool = False,
) -> None:
    """The label checks of `build_manifest`, cheaply: raise `DatasetError` or return.

    Reads only what the labels need: a table's label column, a folder's class subfolder
    names, an array file's 1-D arrays (not the images). Unknown names, names mixed with
    integer ids, and names without ``class_names`` when ``names_required`` are refused.
    """
    path = Path(os.path.expanduser(os.fspath(path)))
    names = load_class_names(class_names)
    if kind == "folder":
        if names is not None:
            _from_folder_names(path, names)
        return
    if kind == "array":
        build_manifest("array", path, class_names=names, names_required=names_required)
        return
    if label_column is None:
        return
    if names is None:
        class_file = _find_class_file(path)
        names = read_class_names(class_file) if class_file is not None else None
    try:
        if path.suffix.lower() == ".csv":
            column = pd.read_csv(path, usecols=[label_column])[label_column]
        else:
            column = pd.read_parquet(path, columns=[label_column])[label_column]
    except Exception as error:  # noqa: BLE001 - the caller checked the columns; any other failure
        raise DatasetError(f"cannot read column {label_column!r} of manifest {path}: "
                           f"{type(error).__name__}: {error}") from None
    encode_labels(column, names, f"manifest {path}, column {label_column!r}",
                  names_required=names_required)


def _from_folder_names(root: Path, given_names: list[str]) -> None:
    """Raise `DatasetError` when a class subfolder of ``root`` is not in ``given_names``."""
    folders = sorted(entry.name for entry in os.scandir(root)
                     if entry.is_dir() and not entry.name.startswith("."))
    unknown = [name for name in folders if name not in given_names]
    if unknown:
        raise DatasetError(f"folder dataset {root}: class folders {_shown(unknown)} are not "
                           f"among the class names of dataset.class_names "
                           f"({_shown(given_names, 10)})")
