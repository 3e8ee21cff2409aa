"""Atomic file writes: a file appears complete under its name, or not at all.

Each writer writes to a hidden temporary name in the same folder
(``.<name>.tmp-<pid>``), flushes, and renames it over the target, so a job
killed mid-write never leaves a file that looks finished (and Snakemake's
resume sees it as missing).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "write_text", "write_json", "save_image", "remove_stale_temporaries"]


def remove_stale_temporaries(path: str | os.PathLike) -> None:
    """Delete temporaries of ``path`` left by a killed job."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False,
                keep_name: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to ``path``, else delete it.

    ``fsync=True`` flushes the file to disk before the rename (for large
    results that must survive a node crash, such as shards). ``keep_name=True``
    gives a path with the target's own file name, inside a hidden temporary
    folder beside it, for writers whose bytes depend on the file name
    (``torch.save`` names the archive inside the file after it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if keep_name:
            folder = stack.enter_context(tempfile.TemporaryDirectory(
                dir=path.parent, prefix=f".{path.name}.tmp-"))
            tmp = Path(folder) / path.name
        else:
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            yield tmp
            if fsync:
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, value, indent: int | None = 2) -> None:
    """Write ``value`` as JSON (with a final newline) to ``path`` atomically."""
    write_text(path, json.dumps(value, indent=indent) + "\n")


def save_image(path: str | os.PathLike, image, format: str = "PNG") -> None:
    """Save a PIL image (or anything with ``.save(path, format=...)``) atomically."""
    with atomic_path(path) as tmp:
        image.save(tmp, format=format)
