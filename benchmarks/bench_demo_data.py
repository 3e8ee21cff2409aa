"""Demo dataset generation speed: images per second.

The workflow's first job renders the demo dataset (3000 images of 64 px by
default); the goal is that this takes well under half a minute on a laptop
core. Timing was once a unit test; it lives here so that a busy CI machine
cannot fail the tests. Not run by CI.

    python benchmarks/bench_demo_data.py --n-images 3000 --image-size 64
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convscope.config import validate_config  # noqa: E402
from convscope.config.sections import DemoDatasetConfig  # noqa: E402
from convscope.data.demo import generate_demo_dataset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=3000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    demo = DemoDatasetConfig.from_dict(validate_config({"dataset": {"demo": {
        "n_images": args.n_images, "image_size": args.image_size, "seed": args.seed}}})["dataset"]["demo"])
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        generate_demo_dataset(demo, Path(out) / "manifest.csv", Path(out) / "images")
        seconds = time.perf_counter() - started
    print(f"{args.n_images} demo images of {args.image_size} px in {seconds:.1f} s: "
          f"{args.n_images / seconds:.0f} images/s")


if __name__ == "__main__":
    main()
