"""Readers of the three dataset kinds (folder, table, array file) into a manifest frame.

See `convscope.data.manifest` for the columns and what each kind expects.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from convscope.data.errors import DatasetError, shown
from convscope.data.labels import decode_strings, encode_labels, find_class_file, read_class_names

__all__ = [
    "MANIFEST_COLUMNS",
    "member_manifest",
    "DATASET_KINDS",
    "IMAGE_EXTENSIONS",
    "KNOWN_SPLITS",
    "normalise_extensions",
    "from_folder",
    "from_folder_names",
    "from_table",
    "from_array",
]

os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

MANIFEST_COLUMNS: tuple[str, ...] = ("index", "path", "slot", "label", "split")
DATASET_KINDS: tuple[str, ...] = ("folder", "manifest", "array", "webdataset", "huggingface")
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


def normalise_extensions(extensions: Iterable[str]) -> tuple[str, ...]:
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



def from_folder(root: Path, extensions: tuple[str, ...],
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
        from_folder_names(root, given_names)
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


def from_table(
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
        class_file = find_class_file(path)
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
            return decode_strings(data[key])

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
            return decode_strings(f[key][()])

    return shapes, load


def _array_class_names(path: Path, shapes: dict, load, class_names: list[str] | None):
    """The config's class names, else the array file's ``class_names``, else a classes.json."""
    if class_names is None and "class_names" in shapes:
        return [str(x) for x in load("class_names")]
    if class_names is None:
        class_file = find_class_file(path)
        return read_class_names(class_file) if class_file is not None else None
    return class_names


def from_array(path: Path, class_names: list[str] | None = None,
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

    given_names = _array_class_names(path, shapes, load, class_names)
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



def from_folder_names(root: Path, given_names: list[str]) -> None:
    """Raise `DatasetError` when a class subfolder of ``root`` is not in ``given_names``."""
    folders = sorted(entry.name for entry in os.scandir(root)
                     if entry.is_dir() and not entry.name.startswith("."))
    unknown = [name for name in folders if name not in given_names]
    if unknown:
        raise DatasetError(f"folder dataset {root}: class folders {shown(unknown)} are not "
                           f"among the class names of dataset.class_names "
                           f"({shown(given_names, 10)})")


def member_manifest(table: pd.DataFrame, labels: np.ndarray, source: str) -> pd.DataFrame:
    """The manifest of images stored inside container files (tar members, parquet rows):
    ``table`` holds ``_path`` (the container) and ``_slot`` (the place in it), its other
    columns are attributes (a ``split`` column of `KNOWN_SPLITS` becomes the split); columns
    named like manifest columns are renamed, noted in ``attrs["notes"]``."""
    attributes = table.drop(columns=["_path", "_slot"])
    splits = ["all"] * len(table)
    if "split" in attributes and _known_split(attributes["split"]):
        splits = attributes.pop("split").fillna("all").astype(str).tolist()
    notes: list[str] = []
    attributes.columns = _rename_reserved(attributes.columns, MANIFEST_COLUMNS, source, notes, {})
    manifest = _finish(table["_path"].tolist(), table["_slot"].to_numpy(np.int64), labels,
                       splits, attributes, source)
    manifest.attrs["notes"] = notes
    return manifest
