"""Stages split into chunks (cluster-sized jobs) and their merge.

A chunked stage runs one job per chunk of its items (images, units), each writing its own
HDF5 file and picture folder under ``<stage>/chunks/NNNNN/``; a merge job concatenates
the HDF5 files in chunk order and copies the pictures. The number of chunks is known
when the workflow is parsed (`n_chunks` of an upper bound of the items), so a chunk past
the last item is empty: it writes a file of zero rows. No heavy import at module level:
the workflow parses with `n_chunks`.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["n_chunks", "chunk_items", "chunk_names", "batches_per_chunk", "n_batch_chunks",
           "chunk_paths", "concat_h5", "merge_folders"]


def n_chunks(n_items: int, chunk_size: int) -> int:
    """Number of chunks of ``chunk_size`` items for (at most) ``n_items`` items; at least one."""
    if chunk_size < 1:
        raise ValueError(f"chunk size must be >= 1, not {chunk_size}")
    return max(1, math.ceil(n_items / chunk_size))


def chunk_items(items: Sequence, chunk: int, chunk_size: int) -> Sequence:
    """The items of chunk ``chunk``: ``items[chunk * chunk_size:(chunk + 1) * chunk_size]``
    (empty past the end)."""
    return items[chunk * chunk_size:(chunk + 1) * chunk_size]


def chunk_names(count: int) -> list[str]:
    """The chunks' names in the workflow's paths: 00000, 00001, ..."""
    return [f"{i:05d}" for i in range(count)]


def batches_per_chunk(chunk_size: int, batch_size: int) -> int:
    """Whole batches of ``batch_size`` items in a chunk of (about) ``chunk_size`` items: the
    chunk size rounded down to whole batches, at least one (a chunk never splits a batch,
    so every batch, and what it computes, is the unsplit run's)."""
    return max(1, chunk_size // batch_size)


def n_batch_chunks(counts: Iterable[int], batch_size: int, chunk_size: int) -> int:
    """Number of chunks of a stage whose items come in groups (``counts``: items per layer)
    cut into batches of ``batch_size``, `batches_per_chunk` batches per chunk."""
    n_batches = sum(math.ceil(count / batch_size) for count in counts)
    return n_chunks(n_batches, batches_per_chunk(chunk_size, batch_size))


def _create_like(out, name: str, source, n_rows: int):
    """A dataset ``name`` in ``out`` shaped like ``source`` with ``n_rows`` rows and its
    dtype, chunking and compression."""
    kwargs = {}
    if source.chunks is not None and n_rows:  # HDF5 chunks no larger than the data
        kwargs = {"chunks": source.chunks, "compression": source.compression,
                  "compression_opts": source.compression_opts}
    return out.create_dataset(name, (n_rows, *source.shape[1:]), dtype=source.dtype, **kwargs)


def chunk_paths(inputs: Sequence[str | os.PathLike], name: str) -> list[str]:
    """The chunk outputs called ``name`` (``.../chunks/NNNNN/<name>``) among a merge job's
    inputs, in chunk order. Read from all the inputs, not a named one: Snakemake hands a named
    input resolved after a checkpoint over as one string, or mixed with its neighbour."""
    found = [os.fspath(p) for p in inputs
             if Path(p).name == name and Path(p).parent.parent.name == "chunks"]
    return sorted(found, key=lambda p: Path(p).parent.name)


def concat_h5(parts: Sequence[str | os.PathLike], path: str | os.PathLike) -> None:
    """Concatenate the datasets of the HDF5 files ``parts`` along their first axis, in order,
    into ``path`` (atomically). Every part has the same datasets; the file attributes and
    those of the datasets are the first part's. Rows are copied part by part (memory holds
    one part's dataset at a time)."""
    import h5py

    from convscope.store.atomic import atomic_path

    handles = [h5py.File(p, "r") for p in parts]
    try:
        names = []
        handles[0].visititems(lambda name, obj: names.append(name)
                              if isinstance(obj, h5py.Dataset) else None)
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as out:
            out.attrs.update(dict(handles[0].attrs))
            for name in names:
                first = handles[0][name]
                sizes = [len(h[name]) for h in handles]
                merged = _create_like(out, name, first, sum(sizes))
                merged.attrs.update(dict(first.attrs))
                start = 0
                for handle, size in zip(handles, sizes):
                    if size:
                        merged[start:start + size] = handle[name][()]
                    start += size
    finally:
        for handle in handles:
            handle.close()


def merge_folders(parts: Sequence[str | os.PathLike], folder: str | os.PathLike) -> list[Path]:
    """Copy every file of the folders ``parts`` into ``folder`` (same relative paths; the
    chunks name their files apart), hidden ones (Snakemake's ``.snakemake_timestamp``)
    aside. Returns the copied files, relative, in order."""
    folder = Path(folder)
    copied = []
    for part in parts:
        files = [p for p in Path(part).rglob("*")
                 if p.is_file() and not p.name.startswith(".")]
        for source in sorted(files):
            relative = source.relative_to(part)
            if (folder / relative).exists() and relative in copied:
                raise ValueError(f"two chunks wrote {relative}; a chunk's files must be its own")
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, folder / relative)
            copied.append(relative)
    return copied
