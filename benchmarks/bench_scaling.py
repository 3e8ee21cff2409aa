"""Cost of the stages that scale with the dataset, at 1x, 4x, 16x the images.

Runs the workflow (tests/data/tiny_config.yaml: demo data and model, small
settings) in a scratch folder per size, asking only for the stages whose work
grows with the number of images: extraction (every shard), statistics, top-k,
the performance/attribute tables, t-SNE and neighbours. Then reads each
stage's ``benchmark:`` file and prints wall time and peak memory (max RSS) per
stage and size, with the growth from the smallest size. Not run by CI.

    python benchmarks/bench_scaling.py --base 250 --factors 1,4,16 --work /tmp/scaling
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: rule -> benchmark file(s) under the run folder (extract: one per shard, summed / max)
STAGES = {
    "extract": "results/benchmarks/extract/shard-*.tsv",
    "unit_stats": "results/benchmarks/unit_stats.tsv",
    "topk_units": "results/benchmarks/topk_units.tsv",
    "performance": "results/benchmarks/performance.tsv",
    "embedding": "results/benchmarks/embedding.tsv",
    "neighbours": "results/benchmarks/neighbours.tsv",
}


def write_config(folder: Path, n_images: int, shard_size: int) -> Path:
    config = yaml.safe_load((ROOT / "tests/data/tiny_config.yaml").read_text())
    config["dataset"]["demo"]["n_images"] = int(n_images)
    config["extract"]["shard_size"] = int(shard_size)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run(folder: Path, cores: int) -> None:
    command = [shutil.which("snakemake") or "snakemake", "-s", str(ROOT / "Snakefile"),
               "--directory", str(folder), "--configfile", str(folder / "config.yaml"),
               "--cores", str(cores), *[s for s in STAGES if s != "extract"]]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with (folder / "snakemake.log").open("w") as log:
        subprocess.run(command, check=True, env=env, cwd=folder, stdout=log, stderr=log)


def read_stage(folder: Path, pattern: str) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak max_rss MB) of a stage; shards: seconds summed, peak
    the max. On a shared machine CPU seconds are the steadier measure of work."""
    seconds, cpu, peak = 0.0, 0.0, 0.0
    files = sorted(folder.glob(pattern))
    if not files:
        return float("nan"), float("nan"), float("nan")
    for path in files:
        with path.open() as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        seconds += float(row["s"])
        cpu += float(row["cpu_time"]) if row.get("cpu_time") not in (None, "", "NA") else 0.0
        peak = max(peak, float(row["max_rss"]) if row["max_rss"] not in ("", "NA") else 0.0)
    return seconds, cpu, peak


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=250, help="images at 1x")
    parser.add_argument("--factors", default="1,4,16")
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--work", default="/tmp/convscope_scaling")
    parser.add_argument("--table-only", action="store_true",
                        help="only print the table of sizes already run in --work")
    args = parser.parse_args(argv)
    factors = [int(f) for f in args.factors.split(",")]
    table = {}
    for factor in factors:
        folder = Path(args.work) / f"x{factor}"
        if not args.table_only:
            folder.mkdir(parents=True, exist_ok=True)
            write_config(folder, args.base * factor, args.shard_size)
            run(folder, args.cores)
        table[factor] = {stage: read_stage(folder, pattern) for stage, pattern in STAGES.items()}
        print(f"x{factor} done", file=sys.stderr, flush=True)
    print_table(table, factors, args.base)


def print_table(table: dict, factors: list[int], base: int) -> None:
    """Markdown table: wall s / CPU s / peak MB per stage and size, and the growth."""
    first, last = factors[0], factors[-1]
    print("| stage | " + " | ".join(f"x{f} ({base * f} img): wall s / CPU s / MB"
                                   for f in factors)
          + f" | CPU x{last}/x{first} | memory x{last}/x{first} |")
    print("| --- |" + " --- |" * (len(factors) + 2))
    for stage in STAGES:
        cells = ["{:.1f} / {:.1f} / {:.0f}".format(*table[f][stage]) for f in factors]
        (_, c0, m0), (_, c1, m1) = table[first][stage], table[last][stage]
        print(f"| {stage} | " + " | ".join(cells) + f" | {c1 / c0:.1f} | {m1 / m0:.2f} |")


if __name__ == "__main__":
    main()
