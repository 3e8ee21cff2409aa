"""The workflow-catalog form: `snakefmt --check` and `snakemake --lint` are clean, and the
catalog's files are there."""

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_snakefmt_check_is_clean():
    result = subprocess.run([str(BIN / "snakefmt"), "--check", "--compact-diff", "."], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def test_snakemake_lint_is_clean():
    # the demo config, as `make lint` runs it (lint builds no job and writes no result)
    result = subprocess.run([str(BIN / "snakemake"), "--lint"], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "Lints for" not in result.stdout + result.stderr, result.stdout[-4000:]


def test_catalog_files():
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    assert catalog["usage"]["software-stack-deployment"]["conda"] is True
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    for name in ("Snakefile", "rules", "scripts", "config", "tests", "envs", "convscope",
                 "config/README.md"):
        assert (REPO / name).exists(), name
