"""Hugging Face image datasets (``dataset.kind: huggingface``), read with ``pyarrow``.

``dataset.path`` is a folder written by ``datasets.Dataset.save_to_disk`` (its
``state.json`` lists the ``.arrow`` files), a ``.parquet`` file, or a folder of
``.parquet`` files (sorted by name). The image column is the first column holding image
bytes (a Hugging Face ``Image`` feature, a struct of ``bytes`` and ``path``, or plain
binary); without one, the ``dataset.path_column`` of image file paths (relative to the
file's folder). A row with bytes becomes a manifest row with ``path`` the data file and
``slot`` its row there; a row with only a path, a row of that image file. Labels come
from ``dataset.label_column``; class names from ``dataset.class_names``, else from the
dataset's ``ClassLabel`` feature. Other scalar columns are attributes.
`read_row_bytes` gives a row's image bytes to the image loader.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from convscope.data.errors import DatasetError
from convscope.data.labels import encode_labels
from convscope.data.readers import member_manifest

__all__ = ["ROW_SUFFIXES", "hf_data_files", "parquet_holds_images", "read_row_bytes",
           "check_huggingface", "from_huggingface"]

ROW_SUFFIXES: tuple[str, ...] = (".arrow", ".parquet")
_CACHE_SIZE = 4
_column_cache: OrderedDict[tuple[int, str], pa.ChunkedArray] = OrderedDict()


def hf_data_files(path: str | os.PathLike) -> list[Path]:
    """The data files of the dataset at ``path`` (see the module docstring)."""
    path = Path(os.path.expanduser(os.fspath(path)))
    if path.is_file():
        if path.suffix.lower() not in ROW_SUFFIXES:
            raise DatasetError(f"huggingface dataset {path} should be a .parquet file or a "
                               "folder written by save_to_disk")
        return [path]
    if not path.is_dir():
        raise DatasetError(f"huggingface dataset {path} does not exist")
    state = path / "state.json"
    if state.is_file():
        return [path / entry["filename"] for entry in json.loads(state.read_text())["_data_files"]]
    files = sorted(path.glob("*.parquet"))
    if not files:
        raise DatasetError(f"huggingface dataset {path} has neither a state.json (save_to_disk) "
                           "nor .parquet files")
    return files


def _read_table(file: Path) -> pa.Table:
    try:
        if file.suffix.lower() == ".parquet":
            return pq.read_table(file, memory_map=True)
        with pa.memory_map(str(file)) as source:
            return pa.ipc.open_stream(source).read_all()
    except Exception as error:  # noqa: BLE001 - any reader failure names the file
        raise DatasetError(f"cannot read huggingface data file {file}: "
                           f"{type(error).__name__}: {error}") from None


def _bytes_column(schema: pa.Schema) -> str | None:
    """The first column holding image bytes (an Image struct or binary), or None."""
    for field in schema:
        kind = field.type
        if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            return field.name
        if pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0:
            return field.name
    return None


def parquet_holds_images(path: str | os.PathLike) -> bool:
    """Whether the parquet file ``path`` has a column of image bytes (a Hugging Face
    dataset's export) rather than image paths (a manifest); reads the schema only."""
    return _bytes_column(pq.read_schema(path)) is not None


def read_row_bytes(path: str | os.PathLike, slot: int) -> bytes:
    """The image bytes of row ``slot`` of the data file at ``path`` (cached per process)."""
    path = os.path.abspath(os.fspath(path))
    key = (os.getpid(), path)
    column = _column_cache.get(key)
    if column is None:
        table = _read_table(Path(path))
        name = _bytes_column(table.schema)
        if name is None:
            raise DatasetError(f"{path} has no column of image bytes")
        column = _column_cache[key] = table.column(name)
        while len(_column_cache) > _CACHE_SIZE:
            _column_cache.popitem(last=False)
    if not 0 <= slot < len(column):
        raise IndexError(f"slot {slot} out of range (file has {len(column)} rows)")
    value = column[slot].as_py()
    value = value.get("bytes") if isinstance(value, dict) else value
    if not value:
        raise ValueError("row has no image bytes")
    return value


def _label_names(file: Path, table: pa.Table, label_column: str | None) -> list[str] | None:
    """Class names of the ``ClassLabel`` feature of ``label_column``, if the dataset has one."""
    info = file.parent / "dataset_info.json"
    features = json.loads(info.read_text()).get("features", {}) if info.is_file() else {}
    meta = (table.schema.metadata or {}).get(b"huggingface")
    if meta and not features:
        features = json.loads(meta).get("info", {}).get("features", {})
    feature = features.get(label_column) if label_column else None
    return list(feature["names"]) if isinstance(feature, dict) and "names" in feature else None


def _image_column(schema: pa.Schema, file: Path, label_column: str | None,
                  path_column: str) -> str:
    """The image column of ``file`` (bytes first, else ``path_column``); `DatasetError`
    naming the file and its columns when it has none, or lacks ``label_column``."""
    columns = schema.names
    image = _bytes_column(schema) or (path_column if path_column in columns else None)
    if image is None:
        raise DatasetError(f"huggingface data file {file} has no image column (a column of "
                           f"image bytes, or dataset.path_column {path_column!r} of paths); "
                           f"columns found: {', '.join(columns)}")
    if label_column is not None and label_column not in columns:
        raise DatasetError(f"dataset.label_column is {label_column!r}, but {file} has no such "
                           f"column; columns found: {', '.join(columns)} (or null for an "
                           "unlabelled dataset)")
    return image


def check_huggingface(path: str | os.PathLike, label_column: str | None, path_column: str) -> None:
    """The checks of `from_huggingface` on the files' schemas only (cheap, before any job)."""
    for file in hf_data_files(path):
        try:
            if file.suffix.lower() == ".parquet":
                schema = pq.read_schema(file)
            else:
                with pa.memory_map(str(file)) as source:
                    schema = pa.ipc.open_stream(source).schema
        except Exception as error:  # noqa: BLE001 - any reader failure names the file
            raise DatasetError(f"cannot read huggingface data file {file}: "
                               f"{type(error).__name__}: {error}") from None
        _image_column(schema, file, label_column, path_column)


def _image_refs(column: pa.ChunkedArray) -> tuple[list[bool], list]:
    """Per row: whether it holds image bytes, and its image path (used when it does not)."""
    kind = column.type
    if pa.types.is_struct(kind):
        has = pc.is_valid(pc.struct_field(column, "bytes")).to_pylist()
        where = (pc.struct_field(column, "path").to_pylist()
                 if kind.get_field_index("path") >= 0 else [None] * len(column))
        return has, where
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return pc.is_valid(column).to_pylist(), [None] * len(column)
    return [False] * len(column), column.to_pylist()


def _file_rows(file: Path, label_column: str | None, path_column: str) -> tuple[pd.DataFrame, list | None]:
    table = _read_table(file)
    image = _image_column(table.schema, file, label_column, path_column)
    has_bytes, found = _image_refs(table.column(image))
    paths = [str(file.resolve()) if b else os.path.normpath(file.parent.resolve() / str(f))
             for b, f in zip(has_bytes, found)]
    slots = [row if b else -1 for row, b in enumerate(has_bytes)]
    scalar = [f.name for f in table.schema if f.name not in (image,)
              and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
                   or pa.types.is_string(f.type) or pa.types.is_boolean(f.type))]
    rows = table.select(scalar).to_pandas()
    rows.insert(0, "_path", paths)
    rows.insert(1, "_slot", slots)
    return rows, _label_names(file, table, label_column)


def from_huggingface(path: str | os.PathLike, label_column: str | None, path_column: str,
                     class_names: list[str] | None, names_required: bool = False
                     ) -> tuple[pd.DataFrame, list[str]]:
    """Manifest of the Hugging Face dataset at ``path`` (see the module docstring)."""
    parts, feature_names = [], None
    for file in hf_data_files(path):
        rows, names = _file_rows(file, label_column, path_column)
        parts.append(rows)
        feature_names = feature_names or names
    table = pd.concat(parts, ignore_index=True)
    source = f"huggingface dataset {path}"
    if label_column is not None:
        labels, class_names = encode_labels(table.pop(label_column), class_names or feature_names,
                                            f"{source}, column {label_column!r}",
                                            names_required=names_required and not feature_names)
    else:
        labels, class_names = np.full(len(table), -1, np.int64), list(class_names or [])
    return member_manifest(table, labels, source), class_names
