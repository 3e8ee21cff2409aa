"""The manifest: one table, one row per image.

Columns, in order:

===========  ========  ==========================================================
``index``    int64     row number 0..N-1 in the final order
``path``     str       path of the image file or of the array file: absolute
                       in memory; in the CSV relative to its folder when inside it
``slot``     int64     row in the array file, -1 for image files
``label``    int64     class id, -1 if unknown
``split``    str       ``train`` / ``test`` / ... as given, else ``all``
...          any       attribute columns (user metadata), dtypes kept
===========  ========  ==========================================================

`build_manifest` reads these kinds of dataset:

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
``webdataset``
    WebDataset ``.tar`` shards (a list or a brace pattern ``{000..009}``): one row per
    sample, ``path`` the tar and ``slot`` the image's position in it, attribute ``key``
    the sample key; see `convscope.data.tars`.
``huggingface``
    A ``save_to_disk`` folder or parquet file(s) with an image column (bytes or
    paths) and ``label_column``; see `convscope.data.hfdata`.

The workflow's ``manifest`` rule calls `write_dataset_manifest` with the
`DatasetConfig` and the two paths it declares; the stages downstream read the
pair back with `read_manifest`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from convscope.config.sections import DatasetConfig
from convscope.data.errors import DatasetError
from convscope.data.labels import (classes_path, encode_labels, find_class_file, load_class_names,
                                   read_class_names)
from convscope.data.readers import (DATASET_KINDS, IMAGE_EXTENSIONS, KNOWN_SPLITS,
                                    MANIFEST_COLUMNS, from_array, from_folder, from_folder_names,
                                    from_table, normalise_extensions)
from convscope.data.tars import from_webdataset
from convscope.store.atomic import atomic_path, write_json
from convscope.store.paths import resolved_paths, stored_paths

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


def build_manifest(
    kind: str,
    path: str | os.PathLike | Sequence[str],
    *,
    label_column: str | None = "label",
    path_column: str = "path",
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    class_names: Sequence[str] | str | None = None,
    names_required: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """Read a dataset of ``kind`` (`DATASET_KINDS`) into a manifest.

    Returns ``(manifest, class_names)``; see the module docstring for the
    columns and for what each kind expects. ``label_column`` and
    ``path_column`` apply to ``manifest`` tables (and ``huggingface`` data,
    ``label_column`` to ``webdataset`` ``.json`` fields), ``extensions`` to folders;
    ``path`` may be a list or brace pattern of tars for ``webdataset``.
    ``class_names`` (a list or a file, `load_class_names`) is the model's output order:
    labels are mapped through it (it wins over a ``classes.json`` beside the data);
    ``names_required`` refuses label names without it (see `encode_labels`). Notes on
    renamed columns are in ``manifest.attrs["notes"]``.
    Raises `DatasetError` with a message naming the file or key at fault.
    """
    if kind not in DATASET_KINDS:
        raise DatasetError(f"unknown dataset kind {kind!r}; valid kinds: {', '.join(DATASET_KINDS)}")
    if kind == "webdataset":
        return from_webdataset(path, label_column, load_class_names(class_names), names_required)
    path = Path(os.path.expanduser(os.fspath(path)))
    if not path.exists():
        raise DatasetError(f"{kind} dataset {path} does not exist")
    names = load_class_names(class_names)
    if kind == "folder":
        return from_folder(path, normalise_extensions(extensions), names)
    if kind == "manifest":
        return from_table(path, label_column, path_column, names, names_required)
    if kind == "huggingface":
        from convscope.data.hfdata import from_huggingface  # pyarrow, only when asked

        return from_huggingface(path, label_column, path_column, names, names_required)
    return from_array(path, names, names_required)


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
    columns in their order. A path inside the CSV's folder (the results
    folder: the demo images) is written relative to it, any other absolute
    (`convscope.store.paths`), so the same dataset gives the same bytes in any
    folder. ``classes_json`` defaults to `classes_path`
    (``<stem>.classes.json`` next to the CSV), which is where `read_manifest`
    looks for it; the workflow passes the path its rule declares. Each file
    appears complete under its name or not at all (`convscope.store.atomic`).
    """
    _check_manifest(manifest, "manifest to write")
    ordered = list(MANIFEST_COLUMNS) + [c for c in manifest.columns if c not in MANIFEST_COLUMNS]
    table = manifest[ordered].copy()
    table["path"] = stored_paths(table["path"].astype(str), Path(csv_path).parent)
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
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
    ``path``/``split``, a missing split reads as ``all``); relative paths are
    resolved against the CSV's folder, so every ``path`` read is absolute.
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
    manifest["path"] = pd.Series(resolved_paths(manifest["path"].astype(str), csv_path.parent),
                                 index=manifest.index, dtype=object)
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
            from_folder_names(path, names)
        return
    if kind == "array":
        build_manifest("array", path, class_names=names, names_required=names_required)
        return
    if label_column is None:
        return
    if names is None:
        class_file = find_class_file(path)
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

