"""Time the dissect and ablation stages' computations on a ResNet-18 (random weights).

Synthetic data made here: N photo-like 224x224 PNGs with a disc and a bar, and their
masks as a folder per concept. Dissect: both passes (`dissect_layers`) over
layer1..layer4; the time per image is extrapolated linearly to 10,000 images (the passes
stream, so time grows linearly and memory does not). Ablation: `LayerAblator` and
`unit_effects` at layer3 (the layers above run per ablation) and layer4 (closed form, and
the forward passes it is checked against), seconds per ablation.

    python benchmarks/bench_dissect.py --n-images 64 --threads 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision
from PIL import Image, ImageDraw

from convscope.config.sections import PreprocessConfig
from convscope.dissect.ablation import LayerAblator, unit_effects
from convscope.dissect.concepts import read_concepts
from convscope.dissect.dissection import dissect_layers

PRE = PreprocessConfig(input_size=224, channels=3, resize=224, crop="center",
                       mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
LAYERS = ["layer1", "layer2", "layer3", "layer4"]


def make_data(root: Path, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    for concept in ("disc", "bar"):
        (root / "concepts" / concept).mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        image = Image.fromarray(rng.integers(60, 200, (224, 224, 3), dtype=np.uint8))
        draw = ImageDraw.Draw(image)
        masks = {c: Image.new("L", (224, 224), 0) for c in ("disc", "bar")}
        x, y, r = rng.integers(40, 180, 2).tolist() + [int(rng.integers(15, 40))]
        for target, fill in ((draw, (250, 30, 30)), (ImageDraw.Draw(masks["disc"]), 255)):
            target.ellipse((x - r, y - r, x + r, y + r), fill=fill)
        x0, y0 = rng.integers(0, 150, 2).tolist()
        for target, fill in ((draw, (20, 20, 240)), (ImageDraw.Draw(masks["bar"]), 255)):
            target.rectangle((x0, y0, x0 + 70, y0 + 12), fill=fill)
        path = root / f"img{i:05d}.png"
        image.save(path)
        for concept, mask in masks.items():
            mask.save(root / "concepts" / concept / f"img{i:05d}.png")
        paths.append(str(path))
    return pd.DataFrame({"index": np.arange(n), "path": paths, "slot": -1})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--units", type=int, default=32, help="ablations timed per layer")
    parser.add_argument("--data-dir", default="/tmp/bench_dissect")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.data_dir)
    rows = make_data(root, args.n_images)
    model = torchvision.models.resnet18(weights=None).eval().requires_grad_(False)
    concepts = read_concepts(root / "concepts", [Path(p).stem for p in rows["path"]])
    start, cpu = time.perf_counter(), time.process_time()
    dissect_layers(model, rows, concepts, PRE, LAYERS, 0.005, 32, torch.device("cpu"))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"dissect {args.n_images} images, {LAYERS}: wall {seconds:.1f} s, CPU {cpu:.1f} s "
          f"({cpu / args.n_images * 1000:.0f} CPU ms/image) -> 10,000 images: "
          f"{cpu / args.n_images * 10000 / 3600:.2f} CPU h, about "
          f"{cpu / args.n_images * 10000 / 3600 / args.threads:.2f} h on {args.threads} idle "
          "cores (linear extrapolation)")
    inputs = torch.randn(args.n_images, 3, 224, 224)
    labels = torch.randint(0, 1000, (args.n_images,))
    for layer in ("layer3", "layer4"):
        start = time.process_time()
        ablator = LayerAblator(model, layer, inputs, 256, torch.device("cpu"))
        setup = time.process_time() - start
        units = list(range(args.units))
        start = time.process_time()
        unit_effects(ablator, units, labels, 1000)
        each = (time.process_time() - start) / len(units)
        line = (f"ablation {layer} ({ablator.method}), CPU times: setup {setup:.1f} s, "
                f"{each * 1000:.1f} ms per ablation over {args.n_images} images, all "
                f"{ablator.channels} units: {each * ablator.channels:.1f} s")
        if ablator.closed_form:
            keep = torch.ones(len(units), ablator.channels)
            keep[torch.arange(len(units)), torch.arange(len(units))] = 0
            start = time.process_time()
            ablator.logits(keep, forward=True)
            forward = (time.process_time() - start) / len(units)
            line += f"; by forward passes instead {forward * 1000:.1f} ms per ablation"
        print(line)


if __name__ == "__main__":
    main()
