"""Time `snakemake -n` (building the DAG) for a dataset of 100 to 10,000 shards.

Per case, a fresh working directory gets a fake, finished manifest checkpoint
(`results/manifest.csv` with N rows, its classes file and the demo files it is
built from, with mtimes in order), so Snakemake resolves the checkpoint at once
and plans one extraction job per shard. Two states are timed:

- ``fresh``: no shard yet; the plan holds every extraction job;
- ``done``: the model and every shard exist (empty files, mtimes in order);
  the plan holds only the analyses. This is what a resumed run pays before
  it starts anything.

The time is the wall time of the whole ``snakemake -n`` command (start-up,
config validation and preflight, DAG, printing the plan to a file).

    python benchmarks/bench_dag.py                                # 100, 1000, 10000 shards
    python benchmarks/bench_dag.py --shards 100 1000 --shard-size 500 --state fresh
    python benchmarks/bench_dag.py --demo --shards                # the demo config only

``--demo`` also times ``snakemake -n`` on the demo config (`config/config.yaml`) in an
empty working directory, where the plan holds the whole workflow (its manifest
checkpoint not run yet), and reports whether torch or captum was imported while it
parsed (``python -X importtime``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SNAKEFILE = REPO_ROOT / "Snakefile"
_CLASS_NAMES = ["arrow", "circle", "cross", "diamond", "heart", "hexagon", "ring", "square",
                "star", "triangle"]


def _snakemake_command() -> list[str]:
    venv = REPO_ROOT / ".venv" / "bin" / "snakemake"
    if venv.exists():
        return [str(venv)]
    return [shutil.which("snakemake") or "snakemake"]


def _write_file(path: Path, text: str, mtime: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (mtime, mtime))


def _prepare(workdir: Path, n_images: int, shard_size: int, state: str) -> Path:
    """Write the config and a finished manifest checkpoint; with ``done``, every shard."""
    config = {
        "dataset": {"kind": "demo", "demo": {"n_images": n_images, "image_size": 32}},
        "model": {"kind": "demo"},
        "layers": ["relu1", "relu2", "relu3", "relu4"],
        "extract": {"shard_size": shard_size, "num_workers": 0},
    }
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    # Fake files get mtimes in pipeline order, all newer than the workflow's scripts
    # (an output older than its rule's script counts as "code changed").
    now = time.time() - 5
    _write_file(workdir / "results/demo/manifest.csv", "path,label,split\n", now)
    (workdir / "results/demo/images").mkdir(parents=True)
    os.utime(workdir / "results/demo/images", (now, now))
    rows = [f"{i},{workdir}/results/demo/images/{i:05d}.png,-1,{i % 10},train\n"
            for i in range(n_images)]
    _write_file(workdir / "results/manifest.csv", "index,path,slot,label,split\n" + "".join(rows),
                now + 1)
    _write_file(workdir / "results/manifest.classes.json", json.dumps(_CLASS_NAMES), now + 1)
    if state == "done":
        for name in ("demo_model.pt", "train_metrics.json"):
            _write_file(workdir / "results/model" / name, "", now + 2)
        _write_file(workdir / "results/model/model_info.json", "{}", now + 3)
        n_shards = -(-n_images // shard_size)
        for i in range(n_shards):
            _write_file(workdir / f"results/features/shard-{i:05d}.h5", "", now + 4)
    return config_path


def _planned_jobs(output: str) -> dict[str, int]:
    lines = output.splitlines()
    if "Job stats:" not in lines:
        return {}
    counts = {}
    for line in lines[lines.index("Job stats:") + 3:]:
        parts = line.split()
        if len(parts) != 2:
            break
        counts[parts[0]] = int(parts[1])
    return counts


def time_dry_run(n_shards: int, shard_size: int, state: str, quiet: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_dag_") as tmp:
        workdir = Path(tmp)
        config_path = _prepare(workdir, n_shards * shard_size, shard_size, state)
        command = [*_snakemake_command(), "-s", str(SNAKEFILE), "--configfile", str(config_path),
                   "--cores", "1", "-n", *(["--quiet", "rules"] if quiet else [])]
        out_path = workdir / "snakemake.out"
        started = time.perf_counter()
        with open(out_path, "w") as out:
            proc = subprocess.run(command, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - started
        output = out_path.read_text()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}:\n{output[-3000:]}")
        jobs = _planned_jobs(output)
    return {"shards": n_shards, "shard_size": shard_size, "state": state,
            "seconds": round(seconds, 2), "extract_jobs": jobs.get("extract", 0),
            "jobs": jobs.get("total", 0)}


def time_demo_dry_run(quiet: bool) -> dict:
    """Time ``snakemake -n`` of the demo config in an empty directory; note heavy imports."""
    with tempfile.TemporaryDirectory(prefix="bench_dag_demo_") as tmp:
        workdir = Path(tmp)
        command = [sys.executable, "-X", "importtime", "-m", "snakemake", "-s", str(SNAKEFILE),
                   "--configfile", str(REPO_ROOT / "config" / "config.yaml"), "--cores", "1",
                   "-n", *(["--quiet", "rules"] if quiet else [])]
        started = time.perf_counter()
        proc = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}:\n"
                               f"{(proc.stdout + proc.stderr)[-3000:]}")
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    jobs = _planned_jobs(proc.stdout)
    return {"config": "demo", "seconds": round(seconds, 2), "jobs": jobs.get("total", 0),
            "torch_imported": "torch" in imported, "captum_imported": "captum" in imported}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, nargs="*", default=[100, 1000, 10000])
    parser.add_argument("--demo", action="store_true",
                        help="also time the demo config's dry run (imports under -X importtime)")
    parser.add_argument("--shard-size", type=int, default=10,
                        help="images per shard (only the manifest grows with it)")
    parser.add_argument("--state", nargs="+", choices=["fresh", "done"],
                        default=["fresh", "done"])
    parser.add_argument("--quiet", action="store_true",
                        help="print only the job table (`--quiet rules`), not every job")
    args = parser.parse_args(argv)
    if args.demo:
        result = time_demo_dry_run(args.quiet)
        print(f"demo: {result['jobs']} jobs, {result['seconds']:.2f} s, torch imported: "
              f"{result['torch_imported']}, captum imported: {result['captum_imported']}",
              file=sys.stderr)
        print(json.dumps(result), flush=True)
    print(f"{'shards':>7} {'state':>6} {'jobs':>6} {'seconds':>8}", file=sys.stderr)
    for n_shards in args.shards:
        for state in args.state:
            result = time_dry_run(n_shards, args.shard_size, state, args.quiet)
            print(f"{result['shards']:>7} {state:>6} {result['jobs']:>6} "
                  f"{result['seconds']:>8.2f}", file=sys.stderr)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
