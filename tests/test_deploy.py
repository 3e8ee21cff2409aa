"""The workflow deploys as catalog workflows do: ``snakedeploy deploy-workflow`` from a local
path gives a project (config/, profiles/, workflow/Snakefile with a ``module``) whose
dry run plans the demo's jobs. No network: the source is a copy of this checkout."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

# what a checkout may hold besides the sources (outputs of a run, environments)
_NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", ".snakemake", "results", "logs",
                                      "__pycache__", ".pytest_cache", "*.egg-info")


@pytest.mark.workflow
def test_snakedeploy_from_a_local_path_gives_a_working_project(tmp_path):
    source, dest = tmp_path / "convscope", tmp_path / "project"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCES)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PYTHONPATH", None)  # the module finds the convscope package next to its rules
    subprocess.run([str(bin_dir / "snakedeploy"), "deploy-workflow", str(source), str(dest),
                    "--branch", "main"], cwd=tmp_path, env=env, check=True,
                   capture_output=True, text=True)
    assert (dest / "config" / "config.yaml").read_text() == \
        (REPO / "config" / "config.yaml").read_text()
    assert (dest / "profiles" / "slurm").is_dir()
    snakefile = dest / "workflow" / "Snakefile"
    text = snakefile.read_text()
    assert "use rule * from convscope" in text
    # snakedeploy writes a local source's path relative (docs/usage.md, "Deploying"): the one
    # edit a local deployment needs is the absolute path
    snakefile.write_text(text.replace('"workflow/Snakefile"',
                                      f'"{source / "workflow" / "Snakefile"}"'))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "all"], cwd=dest, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "demo_dataset" in result.stdout and "manifest" in result.stdout
    assert not (source / "results").exists()  # the module writes into the project only
