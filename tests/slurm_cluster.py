"""A one-node SLURM cluster on this machine, for tests that submit real jobs.

`ensure_slurm_cluster` installs SLURM and MUNGE if needed (``.ci/slurm/install.sh``)
and starts munged, slurmctld and slurmd (``.ci/slurm/start.sh``). The cluster has
one partition, ``debug``, no accounting and no GPUs; submit to it with the
Snakemake profile in `TEST_PROFILE`.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

__all__ = [
    "REPO_ROOT",
    "SLURM_DIR",
    "TEST_PROFILE",
    "ensure_slurm_cluster",
    "slurm_free_env",
    "stop_slurm_cluster",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
SLURM_DIR = REPO_ROOT / ".ci" / "slurm"
TEST_PROFILE = SLURM_DIR / "test-profile"

_INSTALL_TIMEOUT_S = 900  # apt-get update + install on a slow mirror
_START_TIMEOUT_S = 240  # start.sh waits at most 120 s for the node itself
_LOCK_PATH = Path("/tmp/convscope-slurm-cluster.lock")
_cluster_ready = False
_started_here = False  # this process started the daemons (so it stops them)


def _run_script(name: str, timeout_s: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SLURM_DIR / name)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=slurm_free_env(),
        check=False,
    )


def _tail(text: str, n_lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-n_lines:])


def _debug_partition_up() -> bool:
    try:
        sinfo = subprocess.run(
            ["sinfo", "--noheader", "--partition=debug", "--format=%t"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    states = sinfo.stdout.split()
    return sinfo.returncode == 0 and any(s in ("idle", "mix", "alloc") for s in states)


def slurm_free_env() -> dict[str, str]:
    """Return a copy of ``os.environ`` without ``SLURM_*`` variables.

    Keeps a test run that itself sits inside a SLURM job from leaking that
    job's settings into the jobs it submits.
    """
    return {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}


def _cannot_run(reason: str) -> None:
    """Fail under CI (``CI=true``: the cluster is part of the test suite there); elsewhere
    skip, so that a developer without root can still run the rest."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true but the local SLURM cluster cannot run: {reason}")
    pytest.skip(reason)


def ensure_slurm_cluster() -> bool:
    """Install and start the local one-node SLURM cluster; return once it is idle.

    Returns True when this call started the daemons (the cluster was not up
    before), so that the caller stops them with `stop_slurm_cluster` when done.

    When SLURM cannot be installed here (not Linux, no apt-get, apt-get
    failed, or not root and no cluster already running) the test fails under
    CI and is skipped elsewhere. Calls `pytest.fail` when it is installed but
    does not start, since that is a bug in ``.ci/slurm/start.sh`` or the host.
    Safe to call from several processes at once; cheap when the cluster is up.
    """
    global _cluster_ready, _started_here
    if _cluster_ready:
        return False
    if not sys.platform.startswith("linux"):
        _cannot_run(f"local SLURM cluster needs Linux, this is {sys.platform}")
    if shutil.which("bash") is None:
        _cannot_run("local SLURM cluster needs bash")

    if os.geteuid() != 0:
        if _debug_partition_up():
            _cluster_ready = True
            return False
        _cannot_run("starting the local SLURM cluster needs root, and none is running")

    with open(_LOCK_PATH, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _debug_partition_up():  # started by someone else: theirs to stop
            _cluster_ready = True
            return False
        try:
            install = _run_script("install.sh", _INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _cannot_run(f"installing SLURM took over {_INSTALL_TIMEOUT_S} s")
        if install.returncode != 0:
            _cannot_run(
                "cannot install SLURM here (.ci/slurm/install.sh exited "
                f"{install.returncode}):\n{_tail(install.stdout + install.stderr)}"
            )
        try:
            start = _run_script("start.sh", _START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f".ci/slurm/start.sh did not finish within {_START_TIMEOUT_S} s")
        if start.returncode != 0:
            pytest.fail(
                f".ci/slurm/start.sh exited {start.returncode}:\n"
                f"{_tail(start.stdout + start.stderr, 60)}"
            )
    _cluster_ready = _started_here = True
    return True


def stop_slurm_cluster() -> None:
    """Stop the daemons this process started (``.ci/slurm/stop.sh``); else do nothing."""
    global _cluster_ready, _started_here
    if not _started_here:
        return
    stop = _run_script("stop.sh", _START_TIMEOUT_S)
    _cluster_ready = _started_here = False
    if stop.returncode != 0:
        raise RuntimeError(f".ci/slurm/stop.sh exited {stop.returncode}:\n"
                           f"{_tail(stop.stdout + stop.stderr)}")
