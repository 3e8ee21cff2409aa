"""Cleaning up after a killed writer never deletes the temporary of a writer that still runs
(a shard job resubmitted by the scheduler while the first one is still writing)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import numpy as np

from convscope.store.atomic import atomic_path, remove_stale_temporaries
from convscope.store.shards import write_shard


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_temporaries_of_dead_writers_are_removed(tmp_path, request):
    host = socket.gethostname()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    request.addfinalizer(lambda: (live.kill(), live.wait()))
    target = tmp_path / "shard-00000.h5"
    live_tmp = tmp_path / f".shard-00000.h5.tmp-{live.pid}@{host}"
    dead_tmp = tmp_path / f".shard-00000.h5.tmp-{_dead_pid()}@{host}"
    old_style_dead = tmp_path / f".shard-00000.h5.tmp-{_dead_pid()}"
    foreign_new = tmp_path / ".shard-00000.h5.tmp-4242@another-node-17"
    foreign_old = tmp_path / ".shard-00000.h5.tmp-4343@another-node-18"
    other_shard = tmp_path / f".shard-00001.h5.tmp-{_dead_pid()}@{host}"
    for path in (live_tmp, dead_tmp, old_style_dead, foreign_new, foreign_old, other_shard):
        path.write_bytes(b"partial")
    day_ago = time.time() - 24 * 3600
    os.utime(foreign_old, (day_ago, day_ago))

    write_shard(target, {"index": np.arange(3)}, {})

    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([target.name, live_tmp.name, foreign_new.name, other_shard.name])
    assert live_tmp.read_bytes() == b"partial"


def test_the_writers_own_temporary_is_named_after_it(tmp_path):
    target = tmp_path / "table.csv"
    own = tmp_path / f".table.csv.tmp-{os.getpid()}@{socket.gethostname()}"
    # a leftover of this very process (an earlier failed write) counts as its own
    own.write_text("leftover")
    assert remove_stale_temporaries(target) == [own]
    with atomic_path(target) as tmp:
        assert tmp == own
        tmp.write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_a_stale_keep_name_folder_is_removed(tmp_path):
    target = tmp_path / "weights.pt"
    folder = tmp_path / f".weights.pt.tmp-{_dead_pid()}@{socket.gethostname()}~abc123"
    folder.mkdir()
    (folder / "weights.pt").write_bytes(b"half")
    assert remove_stale_temporaries(target) == [folder]
    assert not folder.exists()


def test_weights_hash_is_cached_and_follows_the_content_not_the_date(tmp_path):
    import hashlib
    import json

    from convscope.store.hashes import cached_sha256

    weights, cache = tmp_path / "model.pt", tmp_path / ".snakemake" / "cache.json"
    assert cached_sha256(weights, cache) is None  # not made yet (the demo model)
    weights.write_bytes(b"A" * 5000)
    assert cached_sha256(weights, cache) == hashlib.sha256(b"A" * 5000).hexdigest()
    # an unchanged file is not read again: the recorded value is what comes back
    record = json.loads(cache.read_text())
    record[str(weights.resolve())]["sha256"] = "recorded"
    cache.write_text(json.dumps(record))
    assert cached_sha256(weights, cache) == "recorded"
    # same size, modification time set back (as `cp -p` of an older file would):
    # the status-change time still tells, so the new content is hashed
    stat = weights.stat()
    time.sleep(0.05)  # past the file system's coarse clock tick, so the ctime moves
    with open(weights, "r+b") as fh:
        fh.write(b"B")
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert weights.stat().st_size == stat.st_size
    assert cached_sha256(weights, cache) == hashlib.sha256(b"B" + b"A" * 4999).hexdigest()
    # a damaged cache is ignored
    cache.write_text("{not json")
    assert cached_sha256(weights, cache) == hashlib.sha256(b"B" + b"A" * 4999).hexdigest()
