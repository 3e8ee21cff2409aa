"""WebDataset tar shards (``dataset.kind: webdataset``): the manifest, and member reads.

A tar holds samples as members ``<key>.<ext>`` (the key is the member name up to the
first dot of its file name): one image (any of `IMAGE_EXTENSIONS`), and optionally a
``.cls`` (the class id as text) and a ``.json`` (a dict). Each sample becomes a manifest
row with ``path`` the tar file and ``slot`` the sample's position among the tar's images;
the attribute ``key`` is the sample key (the image id), and the ``.json``'s scalar
fields are attribute columns. Labels come from the ``.cls`` when the samples have one,
else from the ``.json`` field named by ``dataset.label_column``. Rows are in tar order,
then member order, so extraction reads each tar sequentially.

`expand_tar_pattern` turns ``shards-{000..009}.tar`` (or a list of such) into paths;
`tar_index` lists a tar's image members and refuses an empty or truncated tar with a
`DatasetError` naming the file; `read_tar_member` gives a member's bytes (the image
loader decodes them; a broken member then fails like any unreadable image).
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from collections import OrderedDict
from collections.abc import Sequence

import pandas as pd

from convscope.data.errors import DatasetError
from convscope.data.labels import encode_labels
from convscope.data.readers import IMAGE_EXTENSIONS, member_manifest

__all__ = ["TAR_SUFFIXES", "expand_tar_pattern", "tar_index", "read_tar_member",
           "from_webdataset"]

TAR_SUFFIXES: tuple[str, ...] = (".tar",)
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(\d+)\.\.(\d+)$")
_CACHE_SIZE = 16
_index_cache: OrderedDict[tuple[int, str], list[tuple[int, int]]] = OrderedDict()


def _expand_one(pattern: str) -> list[str]:
    found = _BRACE.search(pattern)
    if found is None:
        return [pattern]
    body, head, tail = found[1], pattern[:found.start()], pattern[found.end():]
    numeric = _RANGE.match(body)
    if numeric:
        first, last = numeric[1], numeric[2]
        width = len(first) if first.startswith("0") else 0
        items = [str(i).zfill(width) for i in range(int(first), int(last) + 1)]
    else:
        items = body.split(",")
    return [out for item in items for out in _expand_one(head + item + tail)]


def expand_tar_pattern(paths: str | os.PathLike | Sequence[str]) -> list[str]:
    """The tar files named by ``paths``: one path, a brace pattern (``{000..009}``,
    ``{a,b}``) or a list of either; ``~`` expanded, in the order given."""
    items = [os.fspath(paths)] if isinstance(paths, (str, os.PathLike)) else list(paths)
    return [os.path.expanduser(out) for item in items for out in _expand_one(str(item))]


def _split_name(name: str) -> tuple[str, str]:
    folder, base = os.path.split(name)
    stem, dot, ext = base.partition(".")
    return os.path.join(folder, stem) if folder else stem, ext.lower() if dot else ""


def _is_image(ext: str) -> bool:
    return "." + ext.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS


_last_samples: dict[tuple, list] = {}


def _samples(path: str) -> list[tuple[str, dict[str, tarfile.TarInfo]]]:
    """``[(key, {ext: member})]`` in tar order (the last tar's kept: the manifest reads
    each tar twice); `DatasetError` for an unreadable tar."""
    if not os.path.isfile(path):
        raise DatasetError(f"webdataset tar {path} does not exist")
    stat = os.stat(path)
    key = (os.getpid(), os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _last_samples:
        _last_samples.clear()
        _last_samples[key] = _read_samples(path)
    return _last_samples[key]


def _read_samples(path: str) -> list[tuple[str, dict[str, tarfile.TarInfo]]]:
    if not os.path.isfile(path):
        raise DatasetError(f"webdataset tar {path} does not exist")
    size = os.path.getsize(path)
    if size == 0:
        raise DatasetError(f"webdataset tar {path} is empty (0 bytes)")
    try:
        with tarfile.open(path, "r:") as archive:
            members = archive.getmembers()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DatasetError(f"webdataset tar {path} cannot be read (truncated or not a tar?): "
                           f"{type(error).__name__}: {error}") from None
    samples: OrderedDict[str, dict[str, tarfile.TarInfo]] = OrderedDict()
    for member in members:
        if not member.isfile():
            continue
        if member.offset_data + member.size > size:
            raise DatasetError(f"webdataset tar {path} is truncated: member {member.name!r} "
                               f"ends at byte {member.offset_data + member.size} of {size}")
        key, ext = _split_name(member.name)
        samples.setdefault(key, {})[ext] = member
    return list(samples.items())


def _image_member(parts: dict[str, tarfile.TarInfo]) -> tarfile.TarInfo | None:
    return next((member for ext, member in parts.items() if _is_image(ext)), None)


def tar_index(path: str | os.PathLike) -> list[tuple[int, int]]:
    """``(offset, size)`` of each image member of the tar at ``path``, in tar order (the
    slots of its manifest rows); cached per process. `DatasetError` when the tar is
    missing, empty, truncated or holds no image."""
    path = os.path.abspath(os.fspath(path))
    cache_key = (os.getpid(), path)
    if cache_key in _index_cache:
        _index_cache.move_to_end(cache_key)
        return _index_cache[cache_key]
    images = [_image_member(parts) for _, parts in _samples(path)]
    index = [(m.offset_data, m.size) for m in images if m is not None]
    if not index:
        raise DatasetError(f"webdataset tar {path} holds no image member (expected "
                           f"<key>.<ext> with ext one of {', '.join(IMAGE_EXTENSIONS)})")
    _index_cache[cache_key] = index
    while len(_index_cache) > _CACHE_SIZE:
        _index_cache.popitem(last=False)
    return index


def read_tar_member(path: str | os.PathLike, slot: int) -> bytes:
    """The bytes of image number ``slot`` of the tar at ``path`` (see `tar_index`)."""
    index = tar_index(path)
    if not 0 <= slot < len(index):
        raise IndexError(f"slot {slot} out of range (tar has {len(index)} images)")
    offset, size = index[slot]
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(size)


def _read_small(handle, member: tarfile.TarInfo | None) -> str | None:
    if member is None:
        return None
    handle.seek(member.offset_data)
    return handle.read(member.size).decode("utf-8", errors="replace").strip()


def _tar_rows(path: str, label_column: str | None) -> list[dict]:
    rows = []
    with open(path, "rb") as handle:
        samples = [(key, parts, _read_small(handle, parts.get("json")),
                    _read_small(handle, parts.get("cls"))) for key, parts in _samples(path)]
    for key, parts, text, cls in samples:
        if _image_member(parts) is None:
            continue
        fields = json.loads(text or "{}")
        if not isinstance(fields, dict):
            raise DatasetError(f"webdataset tar {path}: {key}.json is not a JSON object")
        row = {k: v for k, v in fields.items() if v is None or isinstance(v, (str, int, float, bool))}
        label = cls if cls is not None else row.pop(label_column, None) if label_column else None
        rows.append({"_path": os.path.abspath(path), "_slot": len(rows), "_label": label,
                     "key": key, **row})
    return rows


def from_webdataset(paths: str | Sequence[str], label_column: str | None,
                    class_names: list[str] | None, names_required: bool = False
                    ) -> tuple[pd.DataFrame, list[str]]:
    """Manifest of the WebDataset tars ``paths`` (see the module docstring)."""
    files = expand_tar_pattern(paths)
    if not files:
        raise DatasetError("dataset.path names no webdataset tar file")
    rows = []
    for file in files:
        tar_index(file)  # refuses empty / truncated / imageless tars, naming the file
        rows += _tar_rows(file, label_column)
    table = pd.DataFrame(rows)
    source = f"webdataset {files[0]}" + (f" (+{len(files) - 1} tars)" if len(files) > 1 else "")
    labels, class_names = encode_labels(table["_label"], class_names, f"{source}, labels",
                                        names_required=names_required)
    return member_manifest(table.drop(columns=["_label"]), labels, source), class_names
