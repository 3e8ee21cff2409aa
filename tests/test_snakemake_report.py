"""Snakemake's own report (`snakemake --report`) and the rules' benchmark files, on a copy
of the session's tiny run (the report writes into .snakemake; other tests use the run)."""

from __future__ import annotations

import csv
import shutil
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, TINY_CONFIG, planned_jobs, run_snakemake

pytestmark = pytest.mark.workflow

# Every rule `all` runs in the tiny run (demo data and model) but the report, whose own
# benchmark cannot be among the report's inputs; extract runs once per shard.
N_SHARDS = 3
BENCHMARKED = ["demo_dataset", "train_demo_model", "manifest", "model_info", "shard_index",
               "topk_units", "unit_stats", "filters", "performance", "embedding",
               "neighbours", "config_used", "export",
               "explain_images", "explain_attribution", "explain_units", "explain_invariance",
               "explain_correspondence", "explain_keypoints", "explain_faithfulness", "cka",
               "probes",
               "synthesis_classes", "synthesis_units", "synthesis_inversion", "synthesis_evolution",
               "synthesis_dream", "synthesis_style", "synthesis_adversarial", "synthesis_fooling",
               "demo_concepts", "dissect", "ablation"]

# The wrapped outputs: a path inside the tiny run -> the category the report files it under.
REPORTED = {
    "results/units/stats.csv": "Units",
    "results/units/firing_rate.png": "Units",
    "results/units/topk/relu1/patches-000.png": "Units",
    "results/units/filters/weights/conv1.png": "Units",
    "results/embedding/scatter.png": "Embedding",
    "results/embedding/mosaic.png": "Embedding",
    "results/embedding/cloud.png": "Embedding",
    "results/neighbours/panels.png": "Neighbours",
    "results/performance/overall.csv": "Performance",
    "results/performance/per_class.csv": "Performance",
    "results/performance/confusion.png": "Performance",
    "results/performance/comparison.png": "Performance",
    "results/dissect/detectors.png": "Dissection",
    "results/ablation/curves.png": "Dissection",
}


@pytest.fixture(scope="module")
def run_copy(tiny_run, tmp_path_factory) -> Path:
    """A copy of the finished tiny run (mtimes and .snakemake metadata kept)."""
    workdir = tmp_path_factory.mktemp("snakemake_report") / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    return workdir


def _mtimes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_snakemake_report_zip(run_copy):
    results = run_copy / "results"
    before = _mtimes(results)
    run_snakemake(run_copy, "--configfile", TINY_CONFIG, "--report", "report.zip", timeout=300)
    assert _mtimes(results) == before  # the report recomputes nothing
    with zipfile.ZipFile(run_copy / "report.zip") as archive:
        entries = archive.namelist()
        assert "report/report.html" in entries
        html = archive.read("report/report.html").decode()
    for path, category in REPORTED.items():
        assert (run_copy / path).is_file(), path
        name = Path(path).name
        assert any(entry.startswith("report/data/") and entry.endswith(name)
                   for entry in entries), (path, entries[:40])
        assert category in html
    # captions from report/*.rst and the workflow description reach the page
    assert "Top-k images of each unit" in html
    assert "t-SNE map of the CNN codes" in html
    assert "what the CNN has learned" in html


def _listed_benchmark_files(workdir: Path, tmp_path: Path) -> list[str]:
    """`get_benchmark_files()` of the tiny config, through a Snakefile that includes ours
    and writes the list (the only job it may run)."""
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(
        f"import sys\nsys.path.insert(0, {str(REPO)!r})\n\n\n"
        f"include: {str(REPO / 'Snakefile')!r}\n\n\n"
        "rule list_benchmark_files:\n"
        "    input:\n        get_benchmark_files,\n"
        "    output:\n        'benchmark_files.txt',\n"
        "    run:\n        Path(output[0]).write_text('\\n'.join(input) + '\\n')\n")
    # a second -s overrides the repository's Snakefile (argparse keeps the last one)
    result = run_snakemake(workdir, "-s", snakefile, "--configfile", TINY_CONFIG, "--cores", "1",
                           "benchmark_files.txt", timeout=300)
    assert planned_jobs(result.stdout + result.stderr) == {"list_benchmark_files": 1}
    return (workdir / "benchmark_files.txt").read_text().split()


def test_benchmark_files(run_copy, tmp_path):
    expected = [f"results/benchmarks/{rule}.tsv" for rule in BENCHMARKED]
    expected += [f"results/benchmarks/extract/shard-{i:05d}.tsv" for i in range(N_SHARDS)]
    # tiny_config: attribution and unit images in two chunks each; the report lists the
    # attribution chunks' files, not the unit images' (their number may wait for the
    # model_info checkpoint, and the report must not)
    expected += [f"results/benchmarks/explain_attribution_chunk/chunk-{i:05d}.tsv"
                 for i in range(2)]
    unit_chunks = {f"results/benchmarks/synthesis_units_chunk/chunk-{i:05d}.tsv"
                   for i in range(2)}
    listed = _listed_benchmark_files(run_copy, tmp_path)
    assert sorted(listed) == sorted(expected)
    written = {str(p.relative_to(run_copy)) for p in (run_copy / "results/benchmarks").rglob("*")
               if p.is_file()}
    assert written - {"results/benchmarks/report.tsv"} == set(expected) | unit_chunks
    for path in listed:
        with open(run_copy / path) as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        assert len(rows) == 1, path
        assert float(rows[0]["s"]) >= 0 and "max_rss" in rows[0]
