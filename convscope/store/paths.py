"""Paths inside a results folder, stored relative to it so that the folder can move.

A results file that names a file inside the results folder (the manifest
naming the demo images, ``explain/images.csv``) stores that path relative
to the results folder, with ``/`` separators; a path outside it (the user's
own data) is stored absolute, as the dataset reader gave it. Readers turn
the stored form back into absolute paths against the results folder they
read from, so two runs of one config in two folders write the same bytes
and a moved results folder still finds its files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

__all__ = ["stored_paths", "resolved_paths"]


def stored_paths(paths: Iterable[str | os.PathLike], root: str | os.PathLike) -> list[str]:
    """``paths`` as a results file stores them: relative to ``root`` when inside it.

    Args:
        paths: file paths, absolute or relative to the working directory.
        root: the results folder (absolute or relative to the working directory).
    Returns:
        one string per path: ``"demo/images/00001.png"`` for a file under ``root``,
        else the absolute path.
    """
    root = os.path.abspath(os.fspath(root))
    out = []
    for path in paths:
        path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        if os.path.commonpath([path, root]) == root and path != root:
            out.append(Path(os.path.relpath(path, root)).as_posix())
        else:
            out.append(path)
    return out


def resolved_paths(paths: Iterable[str | os.PathLike], root: str | os.PathLike) -> list[str]:
    """Stored paths (`stored_paths`) as absolute paths: relative ones are joined to ``root``."""
    root = os.path.abspath(os.fspath(root))
    out = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isabs(path):
            out.append(os.path.normpath(path))
        else:
            out.append(os.path.normpath(os.path.join(root, *PurePosixPath(path).parts)))
    return out
