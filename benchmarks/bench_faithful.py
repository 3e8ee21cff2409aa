"""Cost of the faithfulness metrics, the new attribution methods, CKA and the probes.

On random data (nothing downloaded): the demo CNN (random weights) at 32 px, or
torchvision ResNet-18 at 224 px (``--model resnet18``), and synthetic pooled
features for CKA and probes (``--n-rows`` images, four layers of 64..512
channels, the ResNet-18 widths). Prints one JSON object per row.

    python benchmarks/bench_faithful.py --n-images 16
    python benchmarks/bench_faithful.py --model resnet18 --n-images 4 --n-rows 10000
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torchvision

from convscope.analysis.cka import MinibatchCKA, rebatch
from convscope.analysis.probes import probe_accuracy
from convscope.config.sections import ProbesConfig
from convscope.explain import attribution_paths as paths
from convscope.explain import faithfulness as faith
from convscope.explain.attribution import backprop_ready, saliency_map
from convscope.nn.models import DemoCNN


def _timed(label, fn, count, unit):
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    print(json.dumps({"row": label, "seconds": round(seconds, 3),
                      f"{unit}_per_s": round(count / seconds, 2)}), flush=True)


def _models(name):
    if name == "resnet18":
        return torchvision.models.resnet18(num_classes=10).eval().requires_grad_(False), 224
    return DemoCNN(10).eval().requires_grad_(False), 32


def bench_maps(args):
    model, size = _models(args.model)
    x = torch.randn(args.n_images, 3, size, size)
    t = torch.zeros(args.n_images, dtype=torch.int64)
    ready = backprop_ready(model)
    n = args.n_images
    _timed("integrated_gradients (32 steps)", lambda: paths.integrated_gradients_map(
        model, x, t, baseline=torch.zeros(3), steps=32, internal_batch_size=32), n, "images")
    _timed("smoothgrad (16 samples)", lambda: paths.smoothgrad_map(
        model, x, t, samples=16, noise=0.15, samples_per_pass=16), n, "images")
    _timed("lrp", lambda: paths.lrp_map(ready, x, t), n, "images")
    maps = saliency_map(model, x, t)
    _timed("deletion+insertion (16 steps, 34 copies/image)", lambda: faith.deletion_insertion(
        model, x, t, maps, steps=16, fill=torch.zeros(3), sigma=5.0, batch_size=256), n, "images")
    _timed("road (5 fractions x MoRF/LeRF)", lambda: faith.road_scores(
        model, x, t, maps, fractions=[0.1, 0.3, 0.5, 0.7, 0.9], noise=0.01, keys=range(n),
        seed=0, batch_size=256), n, "images")
    layers = faith.cascade_layers(model)
    _timed(f"mprt saliency ({len(layers)} layers)", lambda: faith.mprt(
        model, lambda m: saliency_map(m, x, t), layers=layers, seed=0), n, "images")


def bench_similarity(args):
    rng = np.random.default_rng(0)
    widths = {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}
    feats = {name: rng.normal(size=(args.n_rows, c)).astype(np.float32)
             for name, c in widths.items()}
    pairs = [(a, b) for a in widths for b in widths]

    def cka():
        acc = MinibatchCKA(pairs)
        for batch in rebatch([feats], 256):
            acc.add(batch)
        return acc.result()

    _timed("cka 4 layers, all pairs, batch 256", cka, args.n_rows, "images")
    labels = rng.integers(0, 10, args.n_rows).astype(str)
    test = np.arange(args.n_rows) % 10 < 3
    _timed("probe layer4 (512 ch), 10 classes", lambda: probe_accuracy(
        feats["layer4"], labels, ~test, test, ProbesConfig()), args.n_rows, "images")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["demo", "resnet18"], default="demo")
    parser.add_argument("--n-images", type=int, default=16)
    parser.add_argument("--n-rows", type=int, default=10000)
    arguments = parser.parse_args()
    torch.manual_seed(0)
    bench_maps(arguments)
    bench_similarity(arguments)
