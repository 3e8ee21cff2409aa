"""Time the t-SNE embedding of synthetic CNN codes at growing N.

Each size runs in a fresh subprocess so that its peak RSS is its own. Per
size, synthetic clustered codes (N, D) are written as shards (not timed),
then the stages of `convscope.analysis.embedding` are timed: streamed PCA, openTSNE
(fit on at most ``--fit-max`` points, transform the rest; the other
settings are the schema's defaults), trustworthiness
on a sample and the grid assignment of the mosaic.

    python benchmarks/bench_embedding.py                      # modest default sizes
    python benchmarks/bench_embedding.py --sizes 10000 50000 200000 --threads 8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _write_codes(folder: Path, n: int, dim: int, shard_size: int, seed: int = 0) -> list[Path]:
    """Clustered Gaussian codes (20 classes) written shard by shard."""
    from convscope.store.shards import write_shard

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim)).astype(np.float32) * 2
    paths = []
    for i, start in enumerate(range(0, n, shard_size)):
        size = min(shard_size, n - start)
        labels = rng.integers(0, 20, size=size).astype(np.int32)
        codes = np.maximum(centres[labels] + rng.normal(size=(size, dim)).astype(np.float32), 0)
        path = folder / f"shard-{i:05d}.h5"
        write_shard(path, {"index": np.arange(start, start + size, dtype=np.int64),
                           "label": labels, "codes": codes}, {})
        paths.append(path)
    return paths


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def run_one(n: int, args) -> dict:
    from convscope.analysis.embedding import fit_tsne, map_trustworthiness, reduce_codes
    from convscope.config import EmbeddingConfig, validate_config
    from convscope.render.mosaic import grid_assign

    cfg = EmbeddingConfig.from_dict(
        validate_config({"embedding": {"fit_max": args.fit_max}})["embedding"])

    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        paths = _write_codes(Path(folder), n, args.dim, args.shard_size)
        rss_data = _peak_rss_mb()
        seconds = {}
        tic = time.perf_counter()
        reduced, _ = reduce_codes(paths, pca_dims=cfg.pca_dims, normalize=cfg.l2_normalize)
        seconds["pca"] = time.perf_counter() - tic
        tic = time.perf_counter()
        xy, fitted, info = fit_tsne(reduced, cfg, n_jobs=args.threads)
        seconds["tsne"] = time.perf_counter() - tic
        tic = time.perf_counter()
        trust, _, _ = map_trustworthiness(reduced, xy, cfg.trust_k, cfg.trust_sample, cfg.seed)
        seconds["trust"] = time.perf_counter() - tic
        tic = time.perf_counter()
        grid_assign(xy, min(cfg.grid_max, int(np.sqrt(n))), exact_max_cells=cfg.exact_max_cells)
        seconds["grid"] = time.perf_counter() - tic
    return {"n": n, "dim": args.dim, "n_fitted": int(fitted.sum()), "method": info["method"],
            "seconds": seconds, "total_s": sum(seconds.values()), "trustworthiness": trust,
            "peak_rss_mb": _peak_rss_mb(), "peak_rss_after_data_mb": rss_data}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--shard-size", type=int, default=10000)
    parser.add_argument("--fit-max", type=int, default=50000)
    parser.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--workdir", default=None, help="where the temporary shards go")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args)))
        return
    print(f"t-SNE embedding benchmark: D={args.dim}, fit_max={args.fit_max}, "
          f"threads={args.threads}")
    header = f"{'N':>8} {'fitted':>8} {'grad':>5} {'pca s':>7} {'tsne s':>8} {'trust s':>7} " \
             f"{'grid s':>7} {'total s':>8} {'base RSS MB':>12} {'peak RSS MB':>12}"
    print(header)
    print("-" * len(header))
    child_args = ["--dim", str(args.dim), "--shard-size", str(args.shard_size),
                  "--fit-max", str(args.fit_max), "--threads", str(args.threads)]
    if args.workdir:
        child_args += ["--workdir", args.workdir]
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), *child_args],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{n:>8} failed:\n{out.stderr[-2000:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        s = r["seconds"]
        print(f"{n:>8} {r['n_fitted']:>8} {r['method']:>5} {s['pca']:>7.2f} {s['tsne']:>8.2f} "
              f"{s['trust']:>7.2f} {s['grid']:>7.2f} {r['total_s']:>8.2f} "
              f"{r['peak_rss_after_data_mb']:>12.0f} {r['peak_rss_mb']:>12.0f}",
              flush=True)


if __name__ == "__main__":
    main()
