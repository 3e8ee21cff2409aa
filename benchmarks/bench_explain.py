"""Images per second of each explanation method (convscope.explain) on random images.

Two set-ups:

- ``demo``: the demo CNN (random weights) at 32 px, the demo's scale;
- ``resnet50``: torchvision ResNet-50 (random weights, nothing downloaded) at 224 px,
  run only on a GPU unless ``--force-resnet50``.

Every method runs on batches of ``--batch-size`` images (random normal inputs,
random targets) after one warm-up batch, synchronised on CUDA. Occlusion is also
reported per occluder position (positions evaluated per second). Unit
reconstructions (deconvnet and guided backprop of one activation of the last
layer) are timed too, and the three geometry stages' batched cores on uint8
originals made from the same batches (the analysed layers: relu1..relu4 of the
demo CNN, layer1..layer4 of ResNet-50; the schema's default settings):

- ``invariance``: `invariance_curves`, every transformed copy of each image
  through the model; images/s and copies/s (28 copies per image by default);
- ``correspondence``: `correspondence_table` on the batch as one class (a
  centred box of half the side as the part, ``n_random`` random boxes);
  images/s and occluded copies/s (original + part + 5 random = 7 per image);
- ``keypoints``: `transfer_keypoints` of pairs (image i, image i + 1) with
  random keypoints, every layer and the raw-pixel baseline; pairs/s (2 model
  inputs per pair).

A new method is one entry of `METHODS`.

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

import numpy as np
import torch

from convscope.config.sections import ExplainConfig, PreprocessConfig
from convscope.config.validate import validate_config
from convscope.explain import attribution as attr
from convscope.explain.correspondence import (correspondence_table, grey_fill, random_boxes,
                                              scale_boxes)
from convscope.explain.invariance import invariance_curves, transform_amounts
from convscope.explain.keypoints import transfer_keypoints
from convscope.explain.reconstruct import reconstruct_units

#: set-up -> (layers of the geometry methods, preprocess settings of px-sized originals)
_GEOMETRY = {"demo": (("relu1", "relu2", "relu3", "relu4"),
                      {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}),
             "resnet50": (("layer1", "layer2", "layer3", "layer4"), {})}


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
    the occluder settings (``fill`` (C,) normalised) and the number of classes; for the
    geometry methods also their layers, the preprocessing, the ``explain`` section
    (schema defaults), the forward batch size and the device."""

    model: torch.nn.Module
    ready: torch.nn.Module
    layer: str
    occlusion: dict
    classes: int = 10
    layers: tuple[str, ...] = ()
    preprocess: PreprocessConfig | None = None
    explain: ExplainConfig | None = None
    batch_size: int = 16
    device: torch.device | None = None


@dataclass(frozen=True)
class Method:
    """A timed method: ``make(setup)`` returns ``fn(x (n, C, H, W), target (n,))``;
    ``occluder`` reports occluder positions per second too. With ``originals`` fn gets
    n (H, W, 3) uint8 images instead of x (made before the clock starts); ``unit`` names
    what one of the n items is (rate ``<unit>_per_s``), ``copies(setup)`` the model
    inputs per item (rate ``copies_per_s``)."""

    make: Callable[[Setup], Callable[[torch.Tensor, torch.Tensor], object]]
    occluder: bool = False
    originals: bool = False
    unit: str = "images"
    copies: Callable[[Setup], int] | None = None


def _recon(method: str) -> Method:
    def make(s: Setup):
        def run(x, t):
            ones = torch.ones(len(x), dtype=torch.long, device=x.device)
            return reconstruct_units(s.ready, s.layer, x, t % 8, ones, ones, method)
        return run
    return Method(make)


def _sizes(images) -> np.ndarray:
    """(n, 2) (width, height) of n (H, W, 3) images."""
    return np.array([(image.shape[1], image.shape[0]) for image in images], dtype=np.float64)


def _invariance(s: Setup):
    amounts = transform_amounts(s.explain.invariance)
    return lambda images, t: invariance_curves(
        s.model, images, range(len(images)), t.tolist(), s.layers, amounts, s.preprocess,
        s.batch_size, s.device)


def _correspondence(s: Setup):
    section = s.explain.correspondence

    def run(images, t):
        wh = _sizes(images)
        part = scale_boxes(np.concatenate([wh * 0.25, wh * 0.75], axis=1), section.occluder_scale)
        rng = np.random.default_rng(section.seed)
        randoms = [random_boxes(part, wh, rng) for _ in range(section.n_random)]
        return correspondence_table(s.model, images, part, randoms, grey_fill(s.preprocess),
                                    s.layers, s.preprocess, s.batch_size, s.device)
    return run


def _keypoints(s: Setup):
    def run(images, t):
        points = np.random.default_rng(0).uniform(0.0, 1.0, (len(images), 2)) * _sizes(images)
        return transfer_keypoints(s.model, images, images[1:] + images[:1], points,
                                  np.roll(points, -1, axis=0), s.layers, s.preprocess,
                                  s.explain.keypoints.pixel_patch_px, s.batch_size, s.device)
    return run


def _invariance_copies(s: Setup) -> int:
    return 1 + sum(len(v) for v in transform_amounts(s.explain.invariance).values())


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
    "invariance": Method(_invariance, originals=True, copies=_invariance_copies),
    "correspondence": Method(_correspondence, originals=True,
                             copies=lambda s: 2 + s.explain.correspondence.n_random),
    "keypoints": Method(_keypoints, originals=True, unit="pairs", copies=lambda s: 2),
}


def _originals(x: torch.Tensor, preprocess: PreprocessConfig) -> list[np.ndarray]:
    """(n, 3, H, W) normalised inputs -> n (H, W, 3) uint8 images (clipped to 0..255)."""
    mean = torch.tensor(preprocess.mean, device=x.device)[:, None, None]
    std = torch.tensor(preprocess.std, device=x.device)[:, None, None]
    pixels = ((x * std + mean).clamp(0, 1) * 255).round().byte()
    return list(pixels.permute(0, 2, 3, 1).cpu().numpy())


def bench(name: str, device: torch.device, n_images: int, batch_size: int, per_pass: int,
          methods: list[str]) -> list:
    """Time each of ``methods`` (keys of `METHODS`) on set-up ``name``; one JSON row each."""
    torch.manual_seed(0)
    model, layer, px, size, stride = _setup(name, device)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    occlusion = dict(size=size, stride=stride, fill=torch.zeros(3, device=device),
                     positions_per_pass=per_pass)
    layers, normalise = _GEOMETRY[name]
    config = validate_config({"preprocess": {"input_size": px, "resize": px, **normalise}})
    setup = Setup(model, attr.backprop_ready(model), layer, occlusion, layers=layers,
                  preprocess=PreprocessConfig.from_dict(config["preprocess"]),
                  explain=ExplainConfig.from_dict(config["explain"]), batch_size=batch_size,
                  device=device)
    batches = [(torch.randn(batch_size, 3, px, px, device=device),
                torch.randint(0, 10, (batch_size,), device=device))
               for _ in range(max(1, n_images // batch_size))]
    originals = ([(_originals(x, setup.preprocess), t) for x, t in batches]
                 if any(METHODS[method].originals for method in methods) else [])
    n = batch_size * len(batches)
    positions = ((px - size) // stride + 1) ** 2
    rows = []
    for method in methods:
        spec = METHODS[method]
        seconds = _time(spec.make(setup), originals if spec.originals else batches, device)
        row = {"model": name, "px": px, "method": method, spec.unit: n,
               f"{spec.unit}_per_s": round(n / seconds, 2)}
        if spec.occluder:
            row["occluder_positions"] = positions
            row["positions_per_s"] = round(n * positions / seconds, 1)
        if spec.copies:
            row["copies"] = spec.copies(setup)
            row["copies_per_s"] = round(n * row["copies"] / seconds, 1)
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
