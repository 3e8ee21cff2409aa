"""HDF5 shard files: write atomically, read back, check identity.

A shard holds the extraction results of one contiguous row range of the
manifest (see docs/design.md, "Shard file"). Datasets:

    index                 (n,) int64     manifest row of each image
    label                 (n,) int32     class id, -1 if unknown
    topk/class            (n, 5) int32   top-5 predicted classes
    topk/prob             (n, 5) float32 their softmax probabilities
    codes                 (n, D) float32 CNN codes
    layers/<name>/max     (n, C) float32 per-channel spatial maximum
    layers/<name>/argmax  (n, C) int32   flat spatial position (y * W + x)
    layers/<name>/mean    (n, C) float32 per-channel spatial mean
    thumbs                (n, t, t, 3) uint8
    image_attrs/<name>    (n,) float32
    failed/index          (m,) int64     manifest rows that could not be read
    failed/reason         (m,) str       why (fixed-length UTF-8)

Every dataset is chunked with HDF5's Fletcher-32 checksum filter, so reading a
chunk whose bytes changed on disk fails instead of returning wrong numbers.
Every read here turns such a failure (or a truncated file) into one
`ShardCorruptError` naming the file and saying what to do; `verify_shards`
reads every dataset of every shard and reports all damaged ones at once.

Layer names containing "/" cannot be HDF5 keys as they are; `layer_key`
escapes them.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence

import h5py
import numpy as np

from convscope.store.atomic import atomic_path, remove_stale_temporaries

__all__ = [
    "ShardIdentityError",
    "ShardCorruptError",
    "layer_key",
    "open_shard",
    "verify_shards",
    "write_shard",
    "read_attrs",
    "read_identity",
    "check_identity",
    "iter_shards",
    "read_concat",
    "shard_layers",
]

# Shards may live on NFS/Lustre where POSIX locks are unreliable; we never
# open a shard for writing from two processes, so HDF5's locking is not needed.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")


class ShardIdentityError(ValueError):
    """A shard was written for another model, layer set or preprocessing."""


class ShardCorruptError(OSError):
    """A shard file is damaged (a checksum failed, or the file is truncated or not HDF5)."""


def _corrupt_message(path, exc: BaseException) -> str:
    return (f"shard {path} is damaged and cannot be read ({exc}). Delete it and rerun "
            "the workflow, which extracts it again.")


@contextlib.contextmanager
def open_shard(path: str | os.PathLike) -> Iterator[h5py.File]:
    """Open a shard for reading; a damaged file raises `ShardCorruptError` naming it.

    Errors while reading datasets inside the ``with`` block (a failed Fletcher-32
    checksum) are turned into the same error.
    """
    try:
        f = h5py.File(path, "r", locking=False)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ShardCorruptError(_corrupt_message(path, exc)) from exc
    try:
        with f:
            yield f
    except ShardCorruptError:
        raise
    except OSError as exc:
        raise ShardCorruptError(_corrupt_message(path, exc)) from exc


def verify_shards(paths: Iterable[str | os.PathLike]) -> None:
    """Read every dataset of every shard (checking every checksum).

    Raises one `ShardCorruptError` that lists every damaged shard, with what to do.
    """
    damaged = []
    for path in paths:
        try:
            with open_shard(path) as f:
                f.visititems(_read_dataset)
        except ShardCorruptError as exc:
            damaged.append(f"{path} ({exc.__cause__})")
    if damaged:
        raise ShardCorruptError(
            f"{len(damaged)} shard file(s) are damaged and cannot be read: "
            + "; ".join(damaged)
            + ". Delete them and rerun the workflow, which extracts them again.")


def _read_dataset(name, obj) -> None:
    if isinstance(obj, h5py.Dataset):
        obj[()]


def layer_key(layer_name: str) -> str:
    """HDF5-safe key for a module name (``"features/0"`` is a nested path)."""
    return layer_name.replace("/", "\\")


def _store_attr(value):
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return "null"
    return value


def _load_attr(value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "[{" or value == "null":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_shard(path: str | os.PathLike, arrays: dict[str, np.ndarray], attrs: dict) -> None:
    """Write ``arrays`` (HDF5 path -> array) and file ``attrs`` to ``path`` atomically.

    The file is written under a temporary name next to ``path`` and renamed
    only once it is complete and flushed to disk (`convscope.store.atomic`), so a
    killed job never leaves a shard that looks finished. Temporaries left by a
    job killed mid-write are removed first.
    """
    remove_stale_temporaries(path)
    with atomic_path(path, fsync=True) as tmp:
        with h5py.File(tmp, "w", locking=False) as f:
            for name, array in arrays.items():
                _create_dataset(f, name, np.asarray(array))
            for key, value in attrs.items():
                f.attrs[key] = _store_attr(value)
            f.flush()


def _create_dataset(f: h5py.File, name: str, array: np.ndarray) -> None:
    """One chunked dataset with a Fletcher-32 checksum per chunk (thumbnails also lzf).

    Strings are stored as fixed-length UTF-8 (HDF5 cannot filter variable-length
    data, so they could not carry a checksum).
    """
    if array.dtype.kind in "UOS":
        items = np.asarray(array, dtype=object).ravel()
        encoded = np.array([x if isinstance(x, bytes) else str(x).encode() for x in items],
                           dtype=bytes).reshape(array.shape)
        length = max(1, encoded.dtype.itemsize)
        array = encoded.astype(h5py.string_dtype("utf-8", length=length))
    big = array.ndim >= 2 and array.size > 4096
    f.create_dataset(name, data=array, chunks=True, fletcher32=True,
                     compression="lzf" if big and name == "thumbs" else None)


def read_attrs(path: str | os.PathLike) -> dict:
    """All file attributes of a shard, JSON values decoded."""
    with open_shard(path) as f:
        return {key: _load_attr(value) for key, value in f.attrs.items()}


def read_identity(path: str | os.PathLike) -> dict:
    """The ``identity`` attribute: what must match for shards to be combined."""
    return read_attrs(path).get("identity", {})


def check_identity(paths: Iterable[str | os.PathLike], expected: dict) -> None:
    """Raise `ShardIdentityError` if any shard's identity differs from ``expected``.

    The message names the shard and each key that differs, with both values.
    """
    for path in paths:
        found = read_identity(path)
        diffs = [
            f"{key}: shard has {found.get(key)!r}, config gives {expected.get(key)!r}"
            for key in sorted(set(found) | set(expected))
            if found.get(key) != expected.get(key)
        ]
        if diffs:
            raise ShardIdentityError(
                f"shard {path} was extracted with a different setup and cannot be "
                "combined with the current config (" + "; ".join(diffs) + "). "
                "Delete results/features/ or re-run extraction."
            )


def shard_layers(path: str | os.PathLike) -> list[str]:
    """Names of the layers stored in a shard, in extraction order."""
    return list(read_attrs(path).get("layer_names", []))


def iter_shards(
    paths: Sequence[str | os.PathLike], names: Sequence[str]
) -> Iterator[dict[str, np.ndarray]]:
    """Yield, shard by shard, a dict of the requested datasets as numpy arrays.

    ``names`` are HDF5 paths such as ``"codes"`` or ``"layers/conv1/max"``
    (use `layer_key` for layer names); strings come as object arrays of `str`.
    Only one shard is in memory at a time. A damaged shard raises
    `ShardCorruptError` naming it.
    """
    for path in paths:
        with open_shard(path) as f:
            out = {}
            for name in names:
                if name not in f:
                    raise KeyError(f"shard {path} has no dataset {name!r}")
                dataset = f[name]
                if h5py.check_string_dtype(dataset.dtype) is not None:
                    data = np.array(dataset.asstr()[()], dtype=object)
                else:
                    data = dataset[()]
                out[name] = data
        yield out


def read_concat(paths: Sequence[str | os.PathLike], name: str) -> np.ndarray:
    """One dataset concatenated over all shards (for small per-image columns)."""
    parts = [chunk[name] for chunk in iter_shards(paths, [name])]
    if not parts:
        raise ValueError("no shards given")
    return np.concatenate(parts, axis=0)
