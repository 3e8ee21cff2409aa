"""Kill the workflow in the middle of extraction, resume it, compare with a clean run.

The workflow is killed the hard way (SIGKILL to its whole process group, as
the OOM killer, a lost node or ``scancel`` past its grace period would), then
resumed with the commands docs/resume.md documents::

    snakemake --unlock ...
    snakemake --cores N --rerun-incomplete ...

Finished shards must be kept as they are (same inode and mtime), only the
missing ones are computed, no temporary file is left behind, and every result
equals that of a clean, uninterrupted run in another directory (CPU
extraction and demo training are deterministic).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import TINY_CONFIG, h5_datasets, snakemake_command

pytestmark = pytest.mark.workflow

N_IMAGES, SHARD_SIZE = 160, 20
N_SHARDS = N_IMAGES // SHARD_SIZE
_RUN_TIMEOUT_S = 240
# The killed and the clean run go side by side: one torch thread per job.
_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

# Tables compared with the clean run (none of them holds a path).
_TABLES = [
    "results/units/topk.csv",
    "results/units/stats.csv",
    "results/units/summary.csv",
    "results/performance/overall.csv",
    "results/performance/per_class.csv",
    "results/performance/per_attribute.csv",
    "results/performance/confusion.csv",
    "results/neighbours/queries.csv",
    "results/embedding/coords.csv",
]


def _write_config(workdir: Path) -> Path:
    """The tiny config with 8 shards of 20 images, extracted in the job's own process."""
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["dataset"]["demo"]["n_images"] = N_IMAGES
    config["extract"].update(shard_size=SHARD_SIZE, num_workers=0)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _args(workdir: Path, *extra: str) -> list[str]:
    # Only the stages that read the shards are asked for: what is tested is that extraction
    # resumes and that what is computed from the shards equals a clean run's (the
    # explanation and synthesis stages, which read no shard-made table but the image set,
    # are covered by the session's tiny run and test_stale_workflow). Targets go before
    # --configfile, which takes several files.
    return snakemake_command(*_TABLES, "--configfile", workdir / "config.yaml", *extra)


def _start(workdir: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    """Start snakemake in its own session (so the whole group can be killed)."""
    log_path = workdir / f"snakemake-{time.monotonic_ns()}.out"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(_args(workdir, *extra), cwd=workdir, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, env=_ENV)
    return proc, log_path


def _wait(proc: subprocess.Popen, log_path: Path, what: str) -> str:
    try:
        proc.wait(timeout=_RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"{what} ran over {_RUN_TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}")
    output = log_path.read_text()
    assert proc.returncode == 0, f"{what} exited {proc.returncode}:\n{output[-4000:]}"
    return output


def _job_counts(output: str) -> dict[str, int]:
    """The "Job stats" table of a snakemake run: rule -> number of jobs."""
    counts: dict[str, int] = {}
    lines = output.splitlines()
    if "Job stats:" not in lines:
        return counts
    for line in lines[lines.index("Job stats:") + 3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def _kill_during_extraction(workdir: Path) -> list[Path]:
    """Run with one core; SIGKILL the group while a shard is being extracted.

    Waits until at least 2 shards are finished and the job of another shard has
    started (its log exists, its shard does not). Returns the finished shards.
    """
    proc, log_path = _start(workdir, "--cores", "1")
    features, extract_logs = workdir / "results/features", workdir / "logs/extract"
    deadline = time.monotonic() + _RUN_TIMEOUT_S
    while True:
        finished = sorted(features.glob("shard-*.h5"))
        started = {p.stem for p in extract_logs.glob("shard-*.log")}
        running = started - {p.stem for p in finished}
        if len(finished) >= 2 and running:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail("the workflow was never caught in the middle of extraction "
                        f"({len(finished)} shards finished):\n{log_path.read_text()[-4000:]}")
        time.sleep(0.02)
    assert len(finished) < N_SHARDS
    return finished


def _stop_if_running(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_killed_run_resumes_and_matches_a_clean_run(tmp_path, request):
    resumed_dir, clean_dir = tmp_path / "resumed", tmp_path / "clean"
    for workdir in (resumed_dir, clean_dir):
        workdir.mkdir()
        _write_config(workdir)
    # The clean run goes alongside, on the other core.
    clean_proc, clean_log = _start(clean_dir, "--cores", "1")
    request.addfinalizer(lambda: _stop_if_running(clean_proc))

    kept = _kill_during_extraction(resumed_dir)
    kept_stat = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in kept}

    # A hard kill leaves Snakemake's lock behind: the same command alone refuses to run.
    locked = subprocess.run(_args(resumed_dir, "--cores", "1"), cwd=resumed_dir, env=_ENV,
                            capture_output=True, text=True, timeout=_RUN_TIMEOUT_S)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    # The documented resume: unlock, then the same command with --rerun-incomplete.
    subprocess.run(_args(resumed_dir, "--unlock"), cwd=resumed_dir, check=True,
                   capture_output=True, timeout=_RUN_TIMEOUT_S)
    proc, log_path = _start(resumed_dir, "--cores", "1", "--rerun-incomplete")
    output = _wait(proc, log_path, "the resumed run")
    _wait(clean_proc, clean_log, "the clean run")

    # Only the missing shards were extracted; the finished ones were not touched.
    assert _job_counts(output)["extract"] == N_SHARDS - len(kept)
    for name, (inode, mtime_ns) in kept_stat.items():
        stat = (resumed_dir / "results/features" / name).stat()
        assert (stat.st_ino, stat.st_mtime_ns) == (inode, mtime_ns), f"{name} was rewritten"
    shard_names = [f"shard-{i:05d}.h5" for i in range(N_SHARDS)]
    assert sorted(p.name for p in (resumed_dir / "results/features").iterdir()) == \
        sorted(shard_names + ["index.json"])
    leftovers = [p for p in (resumed_dir / "results").rglob("*") if ".tmp" in p.name]
    assert not leftovers, f"temporary files left behind: {leftovers}"

    # Same demo model (seeded CPU training), so everything downstream can match exactly.
    resumed_model = torch.load(resumed_dir / "results/model/demo_model.pt", map_location="cpu")
    clean_model = torch.load(clean_dir / "results/model/demo_model.pt", map_location="cpu")
    assert resumed_model.keys() == clean_model.keys()
    for key, value in clean_model.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(resumed_model[key], value), f"demo model differs at {key}"

    for name in shard_names:
        resumed = h5_datasets(resumed_dir / "results/features" / name)
        clean = h5_datasets(clean_dir / "results/features" / name)
        assert resumed.keys() == clean.keys(), name
        for key, values in clean.items():
            np.testing.assert_array_equal(resumed[key], values, err_msg=f"{name}:{key}")
    for table in _TABLES:
        pd.testing.assert_frame_equal(pd.read_csv(resumed_dir / table),
                                      pd.read_csv(clean_dir / table), obj=table)
