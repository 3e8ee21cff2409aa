"""Time exact leave-one-out k-NN over synthetic shards at growing N.

Each size runs in a fresh subprocess so that its peak RSS is its own. Per
size, synthetic codes (N, D) and thumbnails (N, t, t, 3) are written as
shards (not timed), then `convscope.analysis.knn.knn_over_shards` finds the k
nearest neighbours of every image in code space (cosine) and in pixel space
(Euclidean), and `vote` scores the leave-one-out accuracy. The work is
N^2 (D or 3 t^2) multiply-adds, done in blocks; memory stays bounded by
``--block-mb``.

    python benchmarks/bench_neighbours.py                      # modest default sizes
    python benchmarks/bench_neighbours.py --sizes 10000 50000 200000 --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _write_shards(folder: Path, n: int, dim: int, thumb: int, shard_size: int,
                  seed: int = 0) -> list[Path]:
    """Clustered codes and class-tinted noisy thumbnails (20 classes), shard by shard."""
    from convscope.store.shards import write_shard

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim)).astype(np.float32) * 2
    tints = rng.integers(0, 256, size=(20, 3))
    paths = []
    for i, start in enumerate(range(0, n, shard_size)):
        size = min(shard_size, n - start)
        labels = rng.integers(0, 20, size=size).astype(np.int32)
        codes = np.maximum(centres[labels] + rng.normal(size=(size, dim)).astype(np.float32), 0)
        noise = rng.integers(-60, 61, size=(size, thumb, thumb, 3), dtype=np.int16)
        thumbs = np.clip(tints[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
        path = folder / f"shard-{i:05d}.h5"
        write_shard(path, {"index": np.arange(start, start + size, dtype=np.int64),
                           "label": labels, "codes": codes, "thumbs": thumbs}, {})
        paths.append(path)
    return paths


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def run_one(n: int, args) -> dict:
    import torch

    from convscope.analysis.knn import knn_accuracy, knn_over_shards
    from convscope.nn.device import resolve_device
    from convscope.store.shards import read_concat

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device, key="--device")
    out = {"n": n, "dim": args.dim, "thumb": args.thumb, "k": args.k, "device": str(device)}
    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        paths = _write_shards(Path(folder), n, args.dim, args.thumb, args.shard_size)
        labels = read_concat(paths, "label")
        out["peak_rss_after_data_mb"] = _peak_rss_mb()
        for space in ("code", "pixel"):
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            tic = time.perf_counter()
            dist, pos = knn_over_shards(paths, space, args.k, device=device,
                                        block_mb=args.block_mb)
            accuracy = knn_accuracy(labels, pos, dist, [args.k])[args.k]
            out[f"{space}_s"] = time.perf_counter() - tic
            out[f"{space}_accuracy"] = accuracy
            if device.type == "cuda":
                out[f"{space}_gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--thumb", type=int, default=16,
                        help="thumbnail side t (pixel space is 3 t^2)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--shard-size", type=int, default=10000)
    parser.add_argument("--block-mb", type=float, default=256)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--workdir", default=None, help="where the temporary shards go")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args)))
        return
    print(f"leave-one-out k-NN benchmark: D={args.dim}, thumbs {args.thumb}px, k={args.k}, "
          f"block {args.block_mb} MB, device {args.device}")
    header = f"{'N':>8} {'device':>7} {'code s':>8} {'pixel s':>8} {'code acc':>9} " \
             f"{'pixel acc':>9} {'base RSS MB':>12} {'peak RSS MB':>12} {'GPU peak MB':>12}"
    print(header)
    print("-" * len(header))
    child_args = ["--dim", str(args.dim), "--thumb", str(args.thumb), "--k", str(args.k),
                  "--shard-size", str(args.shard_size), "--block-mb", str(args.block_mb),
                  "--device", args.device, "--threads", str(args.threads)]
    if args.workdir:
        child_args += ["--workdir", args.workdir]
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), *child_args],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{n:>8} failed:\n{out.stderr[-2000:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        gpu = max(r.get("code_gpu_peak_mb", 0), r.get("pixel_gpu_peak_mb", 0))
        print(f"{n:>8} {r['device']:>7} {r['code_s']:>8.2f} {r['pixel_s']:>8.2f} "
              f"{r['code_accuracy']:>9.3f} {r['pixel_accuracy']:>9.3f} "
              f"{r['peak_rss_after_data_mb']:>12.0f} {r['peak_rss_mb']:>12.0f} "
              f"{gpu:>12.0f}", flush=True)


if __name__ == "__main__":
    main()
