"""Images per second of each explanation method (convscope.explain) on random images.

Two set-ups:

- ``demo``: the demo CNN (random weights) at 32 px, the demo's scale;
- ``resnet50``: torchvision ResNet-50 (random weights, nothing downloaded) at 224 px,
  run only on a GPU unless ``--force-resnet50``.

Every method runs on batches of ``--batch-size`` images (random normal inputs,
random targets) after one warm-up batch, synchronised on CUDA. Occlusion is also
reported per occluder position (positions evaluated per second). Unit
reconstructions (deconvnet and guided backprop of one activation of the last
layer) are timed too. A new method is one entry of `METHODS`.

    python benchmarks/bench_explain.py --device cpu --n-images 64
    python benchmarks/bench_explain.py --device cpu --n-images 16 --methods saliency occlusion
    python benchmarks/bench_explain.py --device cuda --models demo resnet50 --json-out r.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from convscope.explain import attribution as attr
from convscope.explain.reconstruct import reconstruct_units


def _setup(name: str, device: torch.device):
    """(model, gradcam layer, input size, occluder size, occluder stride)."""
    if name == "demo":
        from convscope.nn.models import DemoCNN

        return DemoCNN(num_classes=10).eval().to(device), "relu4", 32, 8, 4
    import torchvision

    return torchvision.models.resnet50(weights=None).eval().to(device), "layer4", 224, 32, 16


def _time(fn, batches, device) -> float:
    """Seconds for fn over every batch (after one warm-up call), synchronised."""
    fn(*batches[0])
    if device.type == "cuda":
        torch.cuda.synchronize()
    began = time.perf_counter()
    for batch in batches:
        fn(*batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - began


@dataclass(frozen=True)
class Setup:
    """What a method needs: the model, its `backprop_ready` copy, the Grad-CAM / ZF layer,
    the occluder settings (``fill`` (C,) normalised) and the number of classes."""

    model: torch.nn.Module
    ready: torch.nn.Module
    layer: str
    occlusion: dict
    classes: int = 10


@dataclass(frozen=True)
class Method:
    """A timed method: ``make(setup)`` returns ``fn(x (n, C, H, W), target (n,))``;
    ``occluder`` reports occluder positions per second too."""

    make: Callable[[Setup], Callable[[torch.Tensor, torch.Tensor], object]]
    occluder: bool = False


def _recon(method: str) -> Method:
    def make(s: Setup):
        def run(x, t):
            ones = torch.ones(len(x), dtype=torch.long, device=x.device)
            return reconstruct_units(s.ready, s.layer, x, t % 8, ones, ones, method)
        return run
    return Method(make)


#: name -> Method; adding a method to the benchmark is one entry here.
METHODS: dict[str, Method] = {
    "saliency": Method(lambda s: lambda x, t: attr.saliency_map(s.model, x, t)),
    "deconvnet": Method(lambda s: lambda x, t: attr.deconvnet_map(s.ready, x, t)),
    "guided_backprop": Method(lambda s: lambda x, t: attr.guided_backprop_map(s.ready, x, t)),
    "gradcam": Method(lambda s: lambda x, t: attr.gradcam_map(s.model, s.layer, x, t)),
    "guided_gradcam": Method(
        lambda s: lambda x, t: attr.guided_gradcam_map(s.ready, s.layer, x, t)),
    "occlusion": Method(lambda s: lambda x, t: attr.occlusion_map(s.model, x, t, **s.occlusion),
                        occluder=True),
    "zf_occlusion": Method(lambda s: lambda x, t: attr.zf_occlusion_map(
        s.model, s.layer, x, attr.strongest_feature_maps(s.model, s.layer, x), **s.occlusion),
        occluder=True),
    # as the stage runs it: true + predicted + ZF in one sweep
    "occlusion_sweep": Method(lambda s: lambda x, t: attr.occlusion_maps(
        s.model, x, {"true": t, "predicted": (t + 1) % s.classes}, s.layer,
        attr.strongest_feature_maps(s.model, s.layer, x), **s.occlusion), occluder=True),
    "reconstruction_deconvnet": _recon("deconvnet"),
    "reconstruction_guided": _recon("guided_backprop"),
}


def bench(name: str, device: torch.device, n_images: int, batch_size: int, per_pass: int,
          methods: list[str]) -> list:
    """Time each of ``methods`` (keys of `METHODS`) on set-up ``name``; one JSON row each."""
    torch.manual_seed(0)
    model, layer, px, size, stride = _setup(name, device)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    occlusion = dict(size=size, stride=stride, fill=torch.zeros(3, device=device),
                     positions_per_pass=per_pass)
    setup = Setup(model, attr.backprop_ready(model), layer, occlusion)
    batches = [(torch.randn(batch_size, 3, px, px, device=device),
                torch.randint(0, 10, (batch_size,), device=device))
               for _ in range(max(1, n_images // batch_size))]
    n = batch_size * len(batches)
    positions = ((px - size) // stride + 1) ** 2
    rows = []
    for method in methods:
        seconds = _time(METHODS[method].make(setup), batches, device)
        row = {"model": name, "px": px, "method": method, "images": n,
               "images_per_s": round(n / seconds, 2)}
        if METHODS[method].occluder:
            row["occluder_positions"] = positions
            row["positions_per_s"] = round(n * positions / seconds, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", nargs="+", default=["demo", "resnet50"])
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--positions-per-pass", type=int, default=16)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS),
                        help="methods timed (default: all)")
    parser.add_argument("--force-resnet50", action="store_true", help="run ResNet-50 on a CPU too")
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    from convscope.nn.device import resolve_device

    device = resolve_device(args.device, "--device")
    rows = []
    for name in args.models:
        if name == "resnet50" and device.type != "cuda" and not args.force_resnet50:
            print("resnet50: skipped on CPU (--force-resnet50 runs it)", file=sys.stderr)
            continue
        rows += bench(name, device, args.n_images, args.batch_size, args.positions_per_pass,
                      args.methods)
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"device": str(device), "torch": torch.__version__, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
