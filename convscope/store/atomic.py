"""Atomic file writes: a file appears complete under its name, or not at all.

Each writer writes to a hidden temporary name in the same folder
(``.<name>.tmp-<pid>@<host>``), flushes, and renames it over the target, so a
job killed mid-write never leaves a file that looks finished (and Snakemake's
resume sees it as missing). The name says who writes it, so that cleaning up
after a killed job (`remove_stale_temporaries`) never deletes the temporary of
a writer that still runs (a job resubmitted while the first one runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "write_text", "write_json", "save_image", "remove_stale_temporaries"]


# Temporaries from another host are removed only when this old: a writer there may
# still run and its pid says nothing here.
FOREIGN_TEMPORARY_MAX_AGE_S = 6 * 3600

_HOST = socket.gethostname()
_TEMPORARY_NAME = re.compile(r"\.tmp-(?P<pid>\d+)(?:@(?P<host>[^~]+))?(?:~.*)?$")


def _writer_tag() -> str:
    """``<pid>@<host>`` of this process, the owner part of its temporary names."""
    return f"{os.getpid()}@{_HOST}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _is_stale(temporary: Path, max_age_s: float) -> bool:
    """Whether ``temporary`` is provably abandoned: ours, or its writer is dead.

    A temporary of this host is stale when its pid is this process or no longer
    runs; one of another host only when older than ``max_age_s``. Names written
    before the host was recorded (``.tmp-<pid>``) count as this host's.
    """
    match = _TEMPORARY_NAME.search(temporary.name)
    if match is None:
        return False
    pid, host = int(match["pid"]), match["host"] or _HOST
    if host == _HOST:
        return pid == os.getpid() or not _pid_alive(pid)
    try:
        age = time.time() - temporary.lstat().st_mtime
    except FileNotFoundError:
        return False
    return age > max_age_s


def remove_stale_temporaries(path: str | os.PathLike,
                             max_age_s: float = FOREIGN_TEMPORARY_MAX_AGE_S) -> list[Path]:
    """Delete temporaries of ``path`` left by killed writers; returns what was deleted.

    Only provably abandoned ones go (see `_is_stale`): a temporary whose writer
    still runs on this host, or one from another host younger than
    ``max_age_s``, is left alone.
    """
    path = Path(path)
    removed = []
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        if not _is_stale(stale, max_age_s):
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


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
                dir=path.parent, prefix=f".{path.name}.tmp-{_writer_tag()}~"))
            tmp = Path(folder) / path.name
        else:
            tmp = path.with_name(f".{path.name}.tmp-{_writer_tag()}")
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
