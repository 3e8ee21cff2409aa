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


def read_stage(folder: Path, pattern: str) -> tuple[float, float]:
    """(wall seconds, peak max_rss MB) of a stage; shards: seconds summed, peak the max."""
    seconds, peak = 0.0, 0.0
    files = sorted(folder.glob(pattern))
    if not files:
        return float("nan"), float("nan")
    for path in files:
        with path.open() as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        seconds += float(row["s"])
        peak = max(peak, float(row["max_rss"]) if row["max_rss"] not in ("", "NA") else 0.0)
    return seconds, peak


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=250, help="images at 1x")
    parser.add_argument("--factors", default="1,4,16")
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--work", default="/tmp/convscope_scaling")
    args = parser.parse_args(argv)
    factors = [int(f) for f in args.factors.split(",")]
    table = {}
    for factor in factors:
        folder = Path(args.work) / f"x{factor}"
        folder.mkdir(parents=True, exist_ok=True)
        write_config(folder, args.base * factor, args.shard_size)
        run(folder, args.cores)
        table[factor] = {stage: read_stage(folder, pattern) for stage, pattern in STAGES.items()}
        print(f"x{factor} done", file=sys.stderr, flush=True)
    first = factors[0]
    print("| stage | " + " | ".join(f"x{f} ({args.base * f} img) s / MB" for f in factors)
          + f" | time x{factors[-1]}/x{first} | memory x{factors[-1]}/x{first} |")
    print("| --- |" + " --- |" * (len(factors) + 2))
    for stage in STAGES:
        cells = [f"{table[f][stage][0]:.1f} / {table[f][stage][1]:.0f}" for f in factors]
        (t0, m0), (t1, m1) = table[first][stage], table[factors[-1]][stage]
        print(f"| {stage} | " + " | ".join(cells) + f" | {t1 / t0:.1f} | {m1 / m0:.2f} |")


if __name__ == "__main__":
    main()
