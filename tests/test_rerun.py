"""After a complete tiny run, a config change reruns exactly the jobs that depend on it.

Each case writes a small ``--configfile`` overlay on top of the tiny config and
reads the plan of ``snakemake -n`` (its "Job stats" table). Snakemake's default
rerun triggers (mtime, params, input, code, software-env) decide; the rules
pass the config sections they depend on as ``params`` so that a change there
counts. A change upstream of the shards must plan exactly what forcing its
first rule plans (``--forcerun model_info`` ...), which includes every
analysis that reads shards.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from conftest import TINY_CONFIG, planned_jobs, run_snakemake

pytestmark = pytest.mark.workflow

N_SHARDS = 3  # tiny config: 120 images, shards of 50

# The analyses every shard feeds (new analysis rules join them through the plan of
# `--forcerun extract`, which the expectations below are checked against).
_SHARD_READERS = {"topk_units": 1, "unit_stats": 1, "filters": 1, "performance": 1, "report": 1}

# overlay -> (the rule whose forced rerun plans the same jobs, or None for exactly
# `jobs`; jobs that must be in the plan: rule -> count, `all` left out). Every change of
# a setting also rewrites results/config.yaml (rule config_used), which the report shows.
_CONFIG = {"config_used": 1, "report": 1}
CASES = {
    "nothing": ({}, None, {}),
    "report_title": ({"report": {"title": "Another caption"}}, None, _CONFIG),
    # the unit reconstructions and the ablation's units table (each unit's top images) read
    # the top-k table; the explain image set only for kind topk
    "units_top_k": ({"units": {"top_k": 3}}, None,
                    {"topk_units": 1, "explain_units": 1, "ablation": 1, **_CONFIG}),
    "performance_bins": ({"performance": {"n_bins": 3}}, None, {"performance": 1, **_CONFIG}),
    "layers": ({"layers": ["relu2", "relu3"]}, "model_info",
               {"model_info": 1, "extract": N_SHARDS, **_SHARD_READERS}),
    # The demo model is trained on preprocessed images: it is retrained too.
    "preprocess": ({"preprocess": {"mean": [0.4, 0.5, 0.5]}}, "train_demo_model",
                   {"train_demo_model": 1, "model_info": 1, "extract": N_SHARDS,
                    **_SHARD_READERS}),
    "extract_thumb_px": ({"extract": {"thumb_px": 8}}, "extract",
                           {"extract": N_SHARDS, **_SHARD_READERS}),
}


def _snakemake(workdir: Path, *args: str, configfiles=()) -> str:
    """Run snakemake on the tiny config plus `configfiles`; its stdout and stderr."""
    result = run_snakemake(workdir, "--configfile", TINY_CONFIG, *configfiles, *args,
                           timeout=300)
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def finished_run(tiny_run) -> Path:
    """The session's complete tiny run (only dry runs happen there)."""
    assert planned_jobs(_snakemake(tiny_run, "-n")) == {}
    return tiny_run


def _overlay(folder: Path, name: str, overlay: dict) -> list[Path]:
    """`overlay` as a config file in `folder` (a list of none or one path)."""
    if not overlay:
        return []
    path = folder / f"overlay-{name}.yaml"
    path.write_text(yaml.safe_dump(overlay))
    return [path]


@pytest.mark.parametrize("name", list(CASES))
def test_config_change_reruns_what_depends_on_it(finished_run, tmp_path, name):
    overlay, forced_rule, jobs = CASES[name]
    output = _snakemake(finished_run, "-n", configfiles=_overlay(tmp_path, name, overlay))
    planned = planned_jobs(output)
    if forced_rule is None:
        assert planned == jobs
        return
    forced = planned_jobs(_snakemake(finished_run, "-n", "--forcerun", forced_rule))
    assert planned == {**forced, "config_used": 1}
    assert jobs.items() <= planned.items()


def test_extract_speed_settings_rerun_nothing(finished_run, tmp_path):
    overlay = {"extract": {"batch_size": 8, "num_workers": 1}}
    output = _snakemake(finished_run, "-n", configfiles=_overlay(tmp_path, "speed", overlay))
    assert planned_jobs(output) == {}


def test_report_target_rebuilds_alone(finished_run):
    output = _snakemake(finished_run, "-n", "--forcerun", "report", "results/report/index.html")
    assert planned_jobs(output) == {"report": 1}


def test_caption_change_rewrites_only_the_report(finished_run, tmp_path):
    """A real run with a new title, in a copy: the report (and the record of the
    configuration it shows) changes, no other result does."""
    workdir = tmp_path / "run"
    shutil.copytree(finished_run, workdir, symlinks=True)  # keeps mtimes and metadata
    assert planned_jobs(_snakemake(workdir, "-n")) == {}
    results = workdir / "results"
    # benchmark files (results/benchmarks/) record every job that ran, by design
    before = {p: p.stat().st_mtime_ns for p in results.rglob("*")
              if p.is_file() and "benchmarks" not in p.relative_to(results).parts}
    report = results / "report/index.html"
    overlay = _overlay(tmp_path, "caption", {"report": {"title": "Shapes, second look"}})
    output = _snakemake(workdir, "--cores", "2", configfiles=overlay)
    assert planned_jobs(output) == _CONFIG
    assert "Shapes, second look" in report.read_text()
    changed = {p for p, mtime in before.items()
               if not p.exists() or p.stat().st_mtime_ns != mtime}
    site = results / "report"
    assert report in changed and results / "config.yaml" in changed
    assert {p for p in changed if site not in p.parents} == {results / "config.yaml"}
    assert "title: Shapes, second look" in (results / "config.yaml").read_text()
