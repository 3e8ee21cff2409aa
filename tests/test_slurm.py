"""Run Snakemake workflows on a real one-node SLURM cluster (``.ci/slurm/``).

The cluster is installed and started on first use (needs root and apt-get;
under CI a cluster that cannot be installed or started fails the tests). Jobs go through ``snakemake --executor slurm`` with the
test profile ``.ci/slurm/test-profile``: partition ``debug``, no account,
status from ``squeue`` (the test cluster has no accounting database).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import h5_datasets

try:
    from slurm_cluster import (REPO_ROOT, TEST_PROFILE, ensure_slurm_cluster, slurm_free_env,
                               stop_slurm_cluster)
except ImportError:  # tests/ imported as a package
    from tests.slurm_cluster import (REPO_ROOT, TEST_PROFILE, ensure_slurm_cluster,
                                     slurm_free_env, stop_slurm_cluster)

SNAKEMAKE = REPO_ROOT / ".venv" / "bin" / "snakemake"
WORKFLOW_SNAKEFILE = REPO_ROOT / "Snakefile"
TINY_CONFIG = REPO_ROOT / "tests" / "data" / "tiny_config.yaml"

_SMOKE_TIMEOUT_S = 300
_WORKFLOW_TIMEOUT_S = 1800

_TWO_RULE_SNAKEFILE = """\
rule all:
    input: "second.txt"

rule first:
    output: "first.txt"
    shell: "echo $SLURM_JOB_ID > {output}"

rule second:
    input: "first.txt"
    output: "second.txt"
    shell: "cat {input} > {output} && echo $SLURM_JOB_ID >> {output}"
"""


@pytest.fixture(scope="session")
def slurm_cluster():
    """The local cluster, up for the session; stopped at the end if this session started it."""
    started = ensure_slurm_cluster()
    yield
    if started:
        stop_slurm_cluster()


def _snakemake_command() -> list[str]:
    if SNAKEMAKE.exists():
        return [str(SNAKEMAKE)]
    return ["snakemake"]


def _slurm_args() -> list[str]:
    """Flags that send jobs to the local test cluster."""
    n_cpus = len(os.sched_getaffinity(0))
    return [
        "--profile", str(TEST_PROFILE),
        # Ignore profiles/default next to a Snakefile: only the test profile counts.
        "--workflow-profile", "none",
        # sbatch refuses a job asking for more CPUs than the one node has.
        "--max-threads", str(n_cpus),
    ]  # fmt: skip


def _run_snakemake(args: list[str], workdir: Path, timeout_s: int) -> None:
    """Run snakemake in `workdir`; on failure show its output and SLURM logs."""
    try:
        proc = subprocess.run(
            _snakemake_command() + args,
            cwd=workdir,
            env=slurm_free_env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"snakemake {' '.join(args)} ran over {timeout_s} s\n{_slurm_logs(workdir)}")
    if proc.returncode != 0:
        output = "\n".join((proc.stdout + proc.stderr).splitlines()[-80:])
        pytest.fail(
            f"snakemake {' '.join(args)} exited {proc.returncode}:\n{output}\n"
            f"{_slurm_logs(workdir)}"
        )


def _slurm_logs(workdir: Path) -> str:
    logs = sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    return "\n".join(f"---- {log}\n{log.read_text(errors='replace')[-3000:]}" for log in logs)


def _slurm_job_state(job_id: int) -> str:
    """State of a (recently) finished or running job, as squeue reports it."""
    proc = subprocess.run(
        ["squeue", "--noheader", "--states=all", f"--jobs={job_id}", "--format=%T"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return proc.stdout.strip()


@pytest.mark.slurm
def test_two_rules_run_as_slurm_jobs(slurm_cluster, tmp_path):
    (tmp_path / "Snakefile").write_text(_TWO_RULE_SNAKEFILE)

    _run_snakemake(
        ["--snakefile", str(tmp_path / "Snakefile"), "--directory", str(tmp_path), *_slurm_args()],
        tmp_path,
        _SMOKE_TIMEOUT_S,
    )

    first_lines = (tmp_path / "first.txt").read_text().split()
    second_lines = (tmp_path / "second.txt").read_text().split()
    assert len(first_lines) == 1, first_lines
    assert len(second_lines) == 2, second_lines
    first_job, second_job = int(second_lines[0]), int(second_lines[1])
    assert int(first_lines[0]) == first_job  # `second` copied `first`'s output
    assert first_job > 0 and second_job > 0
    assert first_job != second_job
    # Both ids are jobs this cluster ran (MinJobAge keeps them listed for 5 min).
    assert _slurm_job_state(first_job) == "COMPLETED"
    assert _slurm_job_state(second_job) == "COMPLETED"


def _dry_run_resources(output: str) -> dict[str, dict[str, str]]:
    """Map rule name -> resources, parsed from the job listing of a dry run."""
    resources, rule = {}, None
    for line in output.splitlines():
        if match := re.match(r"^(?:local)?rule (\w+):$", line.strip()):
            rule = match.group(1)
        elif rule and line.strip().startswith("resources:"):
            pairs = line.strip().removeprefix("resources:").split(",")
            resources[rule] = dict(pair.strip().split("=", 1) for pair in pairs)
    return resources


def _profile_dry_run(workdir: Path, *targets: str) -> str:
    """Dry-run the real workflow on the tiny config with profiles/slurm; return its output."""
    env = slurm_free_env() | {
        "CONVSCOPE_SLURM_PARTITION": "cpu-part",
        "CONVSCOPE_SLURM_GPU_PARTITION": "gpu-part",
    }
    env.pop("CONVSCOPE_SLURM_ACCOUNT", None)
    proc = subprocess.run(
        _snakemake_command()
        + ["--snakefile", str(WORKFLOW_SNAKEFILE), "--configfile", str(TINY_CONFIG),
           "--workflow-profile", str(REPO_ROOT / "profiles" / "slurm"), "--dry-run", *targets],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def _profile_rules() -> set[str]:
    profile = (REPO_ROOT / "profiles" / "slurm" / "config.yaml").read_text()
    block = profile[profile.index("set-resources:"):]
    return set(re.findall(r"^  (\w+):$", block, flags=re.M))


def _workflow_rules() -> set[str]:
    proc = subprocess.run(
        _snakemake_command() + ["--snakefile", str(WORKFLOW_SNAKEFILE), "--list-rules"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return {line.strip() for line in proc.stdout.splitlines() if re.fullmatch(r"\w+", line.strip())}


def test_slurm_profile_names_only_rules_of_the_workflow():
    rules = _workflow_rules()
    assert {"extract", "topk_units", "report"} <= rules, rules
    assert _profile_rules() and _profile_rules() <= rules, (_profile_rules(), rules)


@pytest.mark.workflow
def test_slurm_profile_gives_the_real_rules_their_resources(tmp_path):
    """profiles/slurm on the real workflow: GPU partition and one GPU for extraction,
    the CPU partition and the rules' own runtime/memory elsewhere."""
    # Shards are known once the manifest checkpoint has run: build it locally first.
    subprocess.run(
        _snakemake_command()
        + ["--snakefile", str(WORKFLOW_SNAKEFILE), "--configfile", str(TINY_CONFIG),
           "--cores", "1", "results/manifest.csv"],
        cwd=tmp_path, env=slurm_free_env(), capture_output=True, text=True, timeout=300,
        check=True,
    )  # fmt: skip
    resources = _dry_run_resources(_profile_dry_run(tmp_path))
    assert {"extract", "topk_units", "embedding"} <= set(resources), sorted(resources)
    assert resources["extract"]["slurm_partition"] == "gpu-part"
    assert resources["extract"]["gpu"] == "1"
    assert resources["extract"]["cpus_per_gpu"] == "8"
    assert resources["extract"]["runtime"] == "120"  # "120 * attempt", first attempt
    assert resources["extract"]["mem_mb"] == "32000"
    assert "slurm_account" not in resources["extract"]
    for rule in ("topk_units", "embedding", "report"):
        assert resources[rule]["slurm_partition"] == "cpu-part", rule
        assert "gpu" not in resources[rule], rule
    assert resources["topk_units"]["runtime"] == "60"  # rules/topk_units.smk: 60 * attempt
    assert resources["embedding"]["mem_mb"] == "8000"  # rules/embedding.smk


def _result_files(workdir: Path) -> set[str]:
    """Paths of the workflow's results, relative to `workdir`; logs left out."""
    root = workdir / "results"
    return {
        str(path.relative_to(workdir))
        for path in root.rglob("*")
        if path.is_file() and "logs" not in path.relative_to(root).parts
    }


def _read_csv_without_workdir(path: Path, workdir: Path) -> pd.DataFrame:
    """Read a CSV table, with `workdir` cut from text cells (e.g. absolute image paths)."""
    table = pd.read_csv(path)
    for column in table.columns:
        if not pd.api.types.is_numeric_dtype(table[column]):
            table[column] = table[column].astype("string").str.replace(
                str(workdir), "<workdir>", regex=False
            )
    return table


def _assert_csv_equal(local_dir: Path, slurm_dir: Path, rel_path: str) -> None:
    pd.testing.assert_frame_equal(
        _read_csv_without_workdir(local_dir / rel_path, local_dir),
        _read_csv_without_workdir(slurm_dir / rel_path, slurm_dir),
        check_exact=False,
        rtol=1e-5,
        obj=rel_path,
    )


def _assert_h5_equal(local_path: Path, slurm_path: Path) -> None:
    local, slurm = h5_datasets(local_path), h5_datasets(slurm_path)
    assert sorted(local) == sorted(slurm), f"{slurm_path}: datasets differ"
    for name, local_values in local.items():
        slurm_values = slurm[name]
        if np.asarray(local_values).dtype.kind == "f":
            np.testing.assert_allclose(
                slurm_values, local_values, rtol=1e-5, atol=1e-6, err_msg=f"{slurm_path}:{name}"
            )
        else:
            np.testing.assert_array_equal(
                slurm_values, local_values, err_msg=f"{slurm_path}:{name}"
            )


# JSON keys whose values depend on the run, not its results: none since results hold no
# wall-clock time and store paths inside results/ relative to it (the manifest hash is the
# same in every folder; tests/test_reproducible.py compares two folders byte for byte).
_RUN_DEPENDENT_JSON_KEYS: set[str] = set()


def _assert_json_close(local_value, slurm_value, where: str) -> None:
    """Compare parsed JSON recursively; floats to 1e-5, run-dependent keys skipped."""
    if isinstance(local_value, dict):
        assert isinstance(slurm_value, dict) and local_value.keys() == slurm_value.keys(), where
        for key in local_value.keys() - _RUN_DEPENDENT_JSON_KEYS:
            _assert_json_close(local_value[key], slurm_value[key], f"{where}.{key}")
    elif isinstance(local_value, list):
        assert isinstance(slurm_value, list) and len(local_value) == len(slurm_value), where
        for i, (local_item, slurm_item) in enumerate(zip(local_value, slurm_value)):
            _assert_json_close(local_item, slurm_item, f"{where}[{i}]")
    elif isinstance(local_value, float):
        assert slurm_value == pytest.approx(local_value, rel=1e-5, abs=1e-6), where
    else:
        assert slurm_value == local_value, where


# What the SLURM run is asked for: the extraction shards and the shard-reading analyses
# (CPU rules), one explanation and one synthesis stage (the rules the profile gives a GPU),
# and what they need (demo data, manifest, training, model_info). The attribution stage is
# chunked (tests/data/tiny_config.yaml: two chunks), so its chunks run as separate jobs. The rest of the
# workflow runs the same way; here it would only add SLURM's polling time per job.
_SLURM_TARGETS = [
    "results/features/index.json",
    "results/units/topk.csv",
    "results/units/stats.csv",
    "results/performance/overall.csv",
    "results/explain/attribution/summary.json",
    "results/synthesis/classes/summary.json",
]


@pytest.mark.slurm
@pytest.mark.workflow
def test_workflow_on_slurm_matches_local(slurm_cluster, tiny_run, tmp_path):
    # The local side is the session's tiny run (tests/conftest.py): the same Snakefile and
    # config, run with --cores 2 and no profile. Targets go before --configfile.
    common = ["--snakefile", str(WORKFLOW_SNAKEFILE), *_SLURM_TARGETS,
              "--configfile", str(TINY_CONFIG)]
    local_dir, slurm_dir = tiny_run, tmp_path / "slurm"
    slurm_dir.mkdir()

    _run_snakemake(
        [*common, "--directory", str(slurm_dir), *_slurm_args()], slurm_dir, _WORKFLOW_TIMEOUT_S
    )

    local_files, slurm_files = _result_files(local_dir), _result_files(slurm_dir)
    assert set(_SLURM_TARGETS) <= slurm_files, sorted(set(_SLURM_TARGETS) - slurm_files)
    assert any(p.startswith("results/features/shard-") for p in slurm_files)
    chunks = {p for p in slurm_files if p.startswith("results/explain/attribution/chunks/")}
    assert {"results/explain/attribution/chunks/00000/maps.h5",
            "results/explain/attribution/chunks/00001/maps.h5"} <= chunks, sorted(chunks)
    assert slurm_files <= local_files, sorted(slurm_files - local_files)
    for rel_path in sorted(slurm_files):
        if rel_path.endswith(".csv"):
            _assert_csv_equal(local_dir, slurm_dir, rel_path)
        elif rel_path.endswith(".h5"):
            _assert_h5_equal(local_dir / rel_path, slurm_dir / rel_path)
        elif rel_path.endswith(".json"):
            _assert_json_close(
                json.loads((local_dir / rel_path).read_text()),
                json.loads((slurm_dir / rel_path).read_text()),
                rel_path,
            )
