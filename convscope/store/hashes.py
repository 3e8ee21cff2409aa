"""Content hashes of large files, computed once and remembered between runs.

The workflow passes the weights file's SHA-256 as a rule parameter, so that
Snakemake reruns what depends on the weights when their *content* changes,
whatever their modification time says (a file copied with ``cp -p`` keeps an
older one). Hashing a large checkpoint at every start would be slow, so the
hash is kept in this process (`file_sha256`) and in a small JSON cache
(`cached_sha256`), keyed by the file's path, size, inode,
modification and status-change times (``st_ctime_ns`` changes on every write
and cannot be set back by the user). Standard library only: the workflow
imports this while parsing.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from convscope.store.atomic import write_json

__all__ = ["sha256_of_file", "file_sha256", "cached_sha256"]


def sha256_of_file(path: str | os.PathLike, block_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(block_size), b""):
            digest.update(block)
    return digest.hexdigest()


def _stat_key(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns]


@lru_cache(maxsize=16)
def _sha256_in_process(path: str, stat_key: tuple[int, ...]) -> str:
    return sha256_of_file(path)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, remembered in this process while the file's size,
    inode, modification and status-change times stay the same."""
    return _sha256_in_process(str(path), tuple(_stat_key(Path(path))))


def cached_sha256(path: str | os.PathLike, cache_file: str | os.PathLike) -> str | None:
    """SHA-256 of ``path``, or None if it does not exist.

    Reuses the hash recorded in ``cache_file`` while the file's size, inode,
    modification and status-change times are those recorded; otherwise hashes
    the file and records it. A cache that cannot be read or written is ignored.
    """
    path = Path(path)
    if not path.is_file():
        return None
    key, stat_key = str(path.resolve()), _stat_key(path)
    cache_file = Path(cache_file)
    try:
        cache = json.loads(cache_file.read_text())
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(key)
    if isinstance(entry, dict) and entry.get("stat") == stat_key and entry.get("sha256"):
        return entry["sha256"]
    sha256 = file_sha256(path)
    if _stat_key(path) != stat_key:  # changed while hashing: do not remember it
        return sha256
    cache[key] = {"stat": stat_key, "sha256": sha256}
    try:
        write_json(cache_file, cache)
    except OSError:
        pass
    return sha256
