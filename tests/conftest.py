"""Shared fixtures: one tiny end-to-end workflow run per test session."""

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
TINY_CONFIG = REPO / "tests" / "data" / "tiny_config.yaml"


def snakemake_command(*args) -> list[str]:
    """The snakemake of this interpreter's environment, on the repo's Snakefile."""
    exe = Path(sys.executable).parent / "snakemake"
    return [str(exe), "-s", str(REPO / "Snakefile"), *map(str, args)]


def run_snakemake(workdir, *args, check=True, timeout=900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    result = subprocess.run(snakemake_command(*args), cwd=workdir, env=env, capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stdout[-4000:]}\n"
                             f"{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="session", autouse=True)
def slurm_up_when_slurm_tests_run(request):
    """The local SLURM cluster, up for the whole session when slurm tests are selected.

    Snakemake loads its SLURM executor plugin on every command, and the plugin asks
    ``scontrol show config`` for the cluster's settings: with the SLURM client installed
    and no controller up, that alone takes 9 s per snakemake command. The cluster is
    started here (not only before the first slurm test) and stopped at the end if this
    session started it. Where it cannot start, the slurm tests say why themselves."""
    from slurm_cluster import ensure_slurm_cluster, stop_slurm_cluster

    started = False
    if any(item.get_closest_marker("slurm") for item in request.session.items):
        try:
            started = ensure_slurm_cluster()
        except (pytest.skip.Exception, pytest.fail.Exception):
            pass  # reported by the slurm tests' own fixture
    yield
    if started:
        stop_slurm_cluster()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """Working directory of a complete workflow run on tests/data/tiny_config.yaml."""
    workdir = tmp_path_factory.mktemp("tiny_run")
    run_snakemake(workdir, "--configfile", TINY_CONFIG, "--cores", "2")
    return workdir


def h5_datasets(path) -> dict[str, np.ndarray]:
    """Every dataset of an HDF5 file, by path, as numpy arrays."""
    datasets = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            datasets[name] = obj[()]

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return datasets


def describe_from_config(model, config: dict) -> dict:
    """`describe_model` for a validated whole config (tests build whole configs)."""
    from convscope.config import PreprocessConfig
    from convscope.nn.model_info import describe_model

    return describe_model(model, PreprocessConfig.from_dict(config["preprocess"]),
                          config["layers"], config["codes_layer"])


def planned_jobs(output: str) -> dict[str, int]:
    """The "Job stats" table of a (dry) run's output: rule -> number of jobs, `all` left
    out; {} when there is nothing to be done."""
    lines = output.splitlines()
    if "Job stats:" not in lines:
        assert "Nothing to be done" in output, output[-4000:]
        return {}
    counts = {}
    for line in lines[lines.index("Job stats:") + 3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    counts.pop("all", None)
    return counts


def write_two_image_folder(root: Path, weights: Path) -> None:
    """A new user's smallest dataset: two random 32 px images in an ImageFolder layout
    (classes ``a`` and ``b``) under ``root``, and a seeded 2-class demo CNN at ``weights``."""
    import torch
    from PIL import Image

    from convscope.nn.models import DemoCNN

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            root / cls / "0.png")
    torch.manual_seed(0)
    torch.save(DemoCNN(num_classes=2).state_dict(), weights)
