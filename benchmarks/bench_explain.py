"""Images per second of each explanation method (convscope.explain) on random images.

Two set-ups:

- ``demo``: the demo CNN (random weights) at 32 px, the demo's scale;
- ``resnet50``: torchvision ResNet-50 (random weights, nothing downloaded) at 224 px,
  run only on a GPU unless ``--force-resnet50``.

Every method runs on batches of ``--batch-size`` images (random normal inputs,
random targets) after one warm-up batch, synchronised on CUDA. Occlusion is also
reported per occluder position (positions evaluated per second). Unit
reconstructions (deconvnet and guided backprop of one activation of the last
layer) are timed too.

    python benchmarks/bench_explain.py --device cpu --n-images 64
    python benchmarks/bench_explain.py --device cuda --models demo resnet50 --json-out r.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


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


def _methods(model, ready, layer, size, stride, per_pass, fill):
    from convscope.explain import attribution as attr
    from convscope.explain.reconstruct import reconstruct_units

    def recon(method):
        def run(x, t):
            n = len(x)
            zeros = torch.zeros(n, dtype=torch.long, device=x.device)
            return reconstruct_units(ready, layer, x, t % 8, zeros + 1, zeros + 1, method)
        return run

    occlusion = dict(size=size, stride=stride, fill=fill, positions_per_pass=per_pass)
    return {
        "saliency": lambda x, t: attr.saliency_map(model, x, t),
        "deconvnet": lambda x, t: attr.deconvnet_map(ready, x, t),
        "guided_backprop": lambda x, t: attr.guided_backprop_map(ready, x, t),
        "gradcam": lambda x, t: attr.gradcam_map(model, layer, x, t),
        "guided_gradcam": lambda x, t: attr.guided_gradcam_map(ready, layer, x, t),
        "occlusion": lambda x, t: attr.occlusion_map(model, x, t, **occlusion),
        "zf_occlusion": lambda x, t: attr.zf_occlusion_map(
            model, layer, x, attr.strongest_feature_maps(model, layer, x), **occlusion),
        "occlusion sweep (true + predicted + zf)": lambda x, t: attr.occlusion_maps(
            model, x, {"true": t, "predicted": (t + 1) % 10}, layer,
            attr.strongest_feature_maps(model, layer, x), **occlusion),
        "reconstruction (deconvnet)": recon("deconvnet"),
        "reconstruction (guided)": recon("guided_backprop"),
    }


def bench(name: str, device: torch.device, n_images: int, batch_size: int, per_pass: int) -> list:
    from convscope.explain.attribution import backprop_ready

    torch.manual_seed(0)
    model, layer, px, size, stride = _setup(name, device)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    ready = backprop_ready(model)
    batches = [(torch.randn(batch_size, 3, px, px, device=device),
                torch.randint(0, 10, (batch_size,), device=device))
               for _ in range(max(1, n_images // batch_size))]
    n = batch_size * len(batches)
    positions = ((px - size) // stride + 1) ** 2
    rows = []
    for method, fn in _methods(model, ready, layer, size, stride, per_pass,
                               torch.zeros(3, device=device)).items():
        seconds = _time(fn, batches, device)
        row = {"model": name, "px": px, "method": method, "images": n,
               "images_per_s": round(n / seconds, 2)}
        if "occlusion" in method:
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
        rows += bench(name, device, args.n_images, args.batch_size, args.positions_per_pass)
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"device": str(device), "torch": torch.__version__, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
