"""Extraction throughput against the bare forward pass of the same model, same run.

Makes its own data (no network): ``--n-images`` synthetic photo-like JPEGs
(smooth noise, shapes and grain, Pillow quality 90) in a ``root/<class>/``
folder, a manifest from `convscope.data.manifest.build_manifest`, and a randomly
initialised model (a torchvision model by name saved as a state-dict file, or
the demo CNN). Then, on one device, it times:

- ``bare``: the model alone on a fixed batch already on the device,
  channels-last, same batch size and autocast precision, inference mode;
- ``hooks``: the same with `convscope.extract.summarize.summarize_activations` hooks on
  the configured layers (what the per-channel reductions cost);
- ``loader``: extraction's own DataLoader (decode, resize, thumbnail, pixel
  attributes in workers; pinned memory) iterated without the model;
- ``extract``: `convscope.extract.pipeline.extract_shard` end to end (one shard of
  all images). Its rate is read from the returned summary's ``seconds``
  (the loop only: no model loading, no shard writing); ``wall`` also counts
  those;
- per-image CPU costs of the worker's steps, in one process;
- with ``--decode cpu,gpu``, extraction once per ``extract.decode`` value
  (``gpu``: convscope's own nvJPEG path), and the two shards compared;
- on CUDA only, ``gpu_decode``: an experiment, not convscope code: JPEG bytes
  decoded in batches by nvJPEG (`torchvision.io.decode_jpeg` on the GPU),
  resized / cropped / normalised there and fed to the same model.

and prints one table with the ratio extract / bare.

    python benchmarks/bench_extract.py --model demo --n-images 256 --device cpu \\
        --batch-size 32 --num-workers 2 --precision fp32
    python benchmarks/bench_extract.py --device auto --model resnet50 --n-images 4000 \\
        --batch-size 256 --precision bf16 --num-workers 12 --image-size 375x500
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch

_RESNET_LAYERS = ["layer1", "layer2", "layer3", "layer4"]
_DEMO_LAYERS = ["relu1", "relu2", "relu3", "relu4"]
_IMAGENET_MEAN = [0.485, 0.456, 0.406]
_IMAGENET_STD = [0.229, 0.224, 0.225]
_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# --------------------------------------------------------------------------
# data and model


def _write_one_image(job) -> None:
    """One photo-like JPEG: smooth colour field + ellipses/rectangles + grain."""
    from PIL import Image, ImageDraw, ImageFilter

    path, height, width, seed, grey = job
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):
        x0, x1 = sorted(rng.integers(0, width, size=2))
        y0, y1 = sorted(rng.integers(0, height, size=2))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(1.5))
    pixels = np.asarray(image, dtype=np.int16)
    grain = rng.normal(0.0, 6.0, size=pixels.shape).astype(np.int16)
    pixels = np.clip(pixels + grain, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    if grey:
        image = image.convert("L")
    image.save(path, **({"quality": 90} if path.endswith(".jpg") else {}))


def make_dataset(root: Path, n_images: int, image_hw: tuple[int, int], n_classes: int = 10,
                 processes: int = 4, image_format: str = "jpeg", grey: bool = False) -> Path:
    """Write ``n_images`` JPEGs (or PNGs) under ``root/images/<class>/`` and the manifest;
    return its csv."""
    from convscope.data.manifest import build_manifest, write_manifest

    images = root / "images"
    jobs = []
    for i in range(n_images):
        folder = images / f"class{i % n_classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        suffix = ".png" if image_format == "png" else ".jpg"
        jobs.append((str(folder / f"img{i:06d}{suffix}"), image_hw[0], image_hw[1], i, grey))
    with Pool(max(1, processes)) as pool:
        pool.map(_write_one_image, jobs, chunksize=16)
    manifest, class_names = build_manifest("folder", images)
    csv = root / "manifest.csv"
    write_manifest(manifest, class_names, csv)
    return csv


def make_model_config(name: str, folder: Path, in_channels: int = 3
                      ) -> tuple[dict, list[str], Path]:
    """Model section, layer names and a weights file of a randomly initialised model."""
    from convscope.config import ModelConfig, validate_config
    from convscope.nn.models import build_model

    torch.manual_seed(0)
    if name == "demo":
        model_cfg = {"kind": "demo", "num_classes": 10}
        layers = _DEMO_LAYERS
    else:
        model_cfg = {"kind": "torchvision", "name": name}
        layers = _RESNET_LAYERS if name.startswith(("resnet", "resnext", "wide_resnet")) else None
    model = build_model(ModelConfig.from_dict(validate_config({"model": model_cfg})["model"]),
                        in_channels=in_channels)
    if layers is None:  # the last four top-level children that are not the head
        children = [n for n, m in model.named_children()
                    if not isinstance(m, (torch.nn.Linear, torch.nn.Dropout))]
        layers = children[-4:]
    weights = folder / f"{name}_random.pt"
    torch.save(model.state_dict(), weights)
    model_cfg["weights"] = str(weights)
    return model_cfg, layers, weights


def build_config(args, model_cfg: dict, layers: list[str]) -> dict:
    from convscope.config.validate import validate_config

    channels = 1 if args.grey else 3
    if args.model == "demo":
        side = args.input_size or 32
        preprocess = {"input_size": side, "resize": side, "crop": "center", "channels": channels}
    else:
        side = args.input_size or 224
        preprocess = {"input_size": side, "resize": side * 8 // 7, "crop": "center",
                      "channels": channels, "mean": _IMAGENET_MEAN, "std": _IMAGENET_STD}
    return validate_config({
        "model": model_cfg,
        "preprocess": preprocess,
        "layers": layers,
        "extract": {"shard_size": args.n_images, "batch_size": args.batch_size,
                    "precision": args.precision, "device": args.device,
                    "num_workers": args.num_workers, "jpeg_draft": not args.no_jpeg_draft},
    })


# --------------------------------------------------------------------------
# timings


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_forward(model, x, n_batches: int, warmup: int, dtype, device) -> float:
    """Seconds for ``n_batches`` forward passes of ``x`` after ``warmup`` untimed ones."""
    autocast = torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)
    with torch.inference_mode(), autocast:
        for _ in range(warmup):
            model(x)
        _sync(device)
        tic = time.perf_counter()
        for _ in range(n_batches):
            model(x)
        _sync(device)
    return time.perf_counter() - tic


def _sections(config: dict, device: torch.device | str | None = None) -> dict:
    """`extract_shard`'s keyword arguments from a validated config (device overridden)."""
    from convscope.config import ExtractConfig, ModelConfig, PreprocessConfig

    extract = dict(config["extract"], **({"device": str(device)} if device else {}))
    return {"model": ModelConfig.from_dict(config["model"]),
            "preprocess": PreprocessConfig.from_dict(config["preprocess"]),
            "extract": ExtractConfig.from_dict(extract),
            "layers": config["layers"], "codes_layer": config["codes_layer"]}


def _load(config: dict, weights, device) -> torch.nn.Module:
    from convscope.config import ModelConfig
    from convscope.nn.models import load_model

    return load_model(ModelConfig.from_dict(config["model"]), weights,
                      in_channels=int(config["preprocess"]["channels"]), device=device)


def bare_and_hooked_forward(config: dict, model_info: dict, weights, device: torch.device,
                            n_batches: int, warmup: int) -> dict:
    """Images/s of the model on a resident batch: bare, and with extraction's hooks."""
    from convscope.data.preprocess import input_hw
    from convscope.extract.summarize import summarize_activations
    from convscope.nn.models import codes_module_name

    extract_cfg = config["extract"]
    dtype = _PRECISIONS[extract_cfg["precision"]]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False  # as extract_shard sets it
    model = _load(config, weights, device).to(memory_format=torch.channels_last)
    batch = extract_cfg["batch_size"]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, model_info["in_channels"], *input_hw(config["preprocess"]),
                    generator=generator).to(device).contiguous(memory_format=torch.channels_last)
    bare_s = _time_forward(model, x, n_batches, warmup, dtype, device)
    codes_module, codes_where = codes_module_name(model, config.get("codes_layer"))
    with summarize_activations(model, config["layers"], codes_module, codes_where):
        hooks_s = _time_forward(model, x, n_batches, warmup, dtype, device)
    images = n_batches * batch
    del model, x
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"bare_ips": images / bare_s, "hooks_ips": images / hooks_s,
            "bare_batches": n_batches}


def loader_only(config: dict, manifest_csv: Path, pin_memory: bool) -> dict:
    """Images/s of extraction's own DataLoader (the same dataset, collate and settings)."""
    from convscope.data.manifest import read_manifest
    from convscope.extract.loader import make_loader

    manifest, _ = read_manifest(manifest_csv)
    sections = _sections(config)
    loader, _ = make_loader(manifest, sections["preprocess"], sections["extract"], pin_memory)
    tic = time.perf_counter()
    first = None
    n = 0
    for batch in loader:
        if first is None:
            first = time.perf_counter() - tic
        n += len(batch["index"])
    seconds = time.perf_counter() - tic
    return {"loader_ips": n / seconds, "loader_s": seconds, "loader_first_batch_s": first}


def _reference_costs(config: dict, paths: list[str]) -> float:
    """Milliseconds per image of the one-by-one, full-decode path (before bulk decoding)."""
    from convscope.data.images import load_image, make_thumbnail, pixel_attributes
    from convscope.data.preprocess import prepare_uint8

    tic = time.perf_counter()
    for path in paths:
        image = load_image(path, -1)
        prepare_uint8(image, config["preprocess"])
        make_thumbnail(image, config["extract"]["thumb_px"])
        pixel_attributes(image)
    return 1000.0 * (time.perf_counter() - tic) / len(paths)


def per_image_costs(config: dict, manifest_csv: Path, n_sample: int, chunk: int = 32) -> dict:
    """Milliseconds per image of each step a loader worker does (`convscope.data.bulk`, chunks
    of ``chunk`` images), in this one process; ``ms_reference`` (not in the total): the same
    work one image at a time from the fully decoded file, timed in the same run."""
    from convscope.data.bulk import describe_batch, draft_side, prepare_batch
    from convscope.data.images import load_image_scaled, make_thumbnail
    from convscope.data.manifest import read_manifest

    manifest, _ = read_manifest(manifest_csv)
    paths = manifest["path"].astype(str).tolist()[:n_sample]
    thumb_px = config["extract"]["thumb_px"]
    side = draft_side(config["preprocess"], thumb_px) if config["extract"]["jpeg_draft"] else None
    totals = {"decode": 0.0, "resize_crop": 0.0, "thumbnail": 0.0, "pixel_attrs": 0.0}
    for start in range(0, len(paths), chunk):
        tic = time.perf_counter()
        loaded = [load_image_scaled(path, -1, side) for path in paths[start:start + chunk]]
        images, sizes = np.stack([im for im, _ in loaded]), np.array([sz for _, sz in loaded])
        t1 = time.perf_counter()
        prepare_batch(images, tuple(sizes[0]), config["preprocess"])
        t2 = time.perf_counter()
        [make_thumbnail(image, thumb_px) for image in images]
        t3 = time.perf_counter()
        describe_batch(images, tuple(sizes[0]))
        t4 = time.perf_counter()
        totals["decode"] += t1 - tic
        totals["resize_crop"] += t2 - t1
        totals["thumbnail"] += t3 - t2
        totals["pixel_attrs"] += t4 - t3
    out = {f"ms_{k}": 1000.0 * v / len(paths) for k, v in totals.items()}
    out["ms_total"] = sum(out.values())
    out["ms_reference"] = _reference_costs(config, paths)
    return out


def worker_costs(config: dict, manifest_csv: Path, n_sample: int) -> dict:
    """`per_image_costs` with one torch thread, as in a loader worker."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return per_image_costs(config, manifest_csv, n_sample)
    finally:
        torch.set_num_threads(threads)


def run_extract(config: dict, manifest_csv: Path, model_info: dict, weights: Path,
                out_dir: Path, device: torch.device, name: str = "shard-00000.h5") -> dict:
    from convscope.extract.pipeline import extract_shard

    out_path = out_dir / name
    tic = time.perf_counter()
    summary = extract_shard(manifest_csv, model_info, 0, out_path, weights_file=weights,
                            **_sections(config, device))
    wall = time.perf_counter() - tic
    return {"extract_ips": summary["images"] / max(summary["seconds"], 1e-9),
            "extract_loop_s": summary["seconds"], "extract_wall_s": wall,
            "extract_wall_ips": summary["images"] / wall, "extract_images": summary["images"],
            "extract_failed": summary["failed"], "extract_batch_size_end": summary["batch_size"],
            "extract_decode": summary.get("decode", "cpu"), "extract_path": str(out_path)}


def decode_paths(config: dict, manifest_csv: Path, model_info: dict, weights: Path,
                 out_dir: Path, device: torch.device, decodes: list[str]) -> dict:
    """`extract_shard` once per ``extract.decode`` value; CPU vs GPU shards compared."""
    import copy

    from convscope.store.shards import iter_shards

    out, shards = {}, {}
    for decode in decodes:
        cfg = copy.deepcopy(config)
        cfg["extract"]["decode"] = decode
        res = run_extract(cfg, manifest_csv, model_info, weights, out_dir, device,
                          name=f"shard-{decode}.h5")
        out[f"decode_{decode}_ips"] = res["extract_ips"]
        out[f"decode_{decode}_used"] = res["extract_decode"]
        shards[decode] = res["extract_path"]
    if {"cpu", "gpu"} <= shards.keys():
        names = ["index", "codes", "thumbs"] + [f"image_attrs/{k}" for k in
                                                ("brightness", "contrast", "colourfulness",
                                                 "saturation", "width")]
        a, b = (next(iter_shards([shards[d]], names)) for d in ("cpu", "gpu"))
        out["gpu_vs_cpu"] = {
            "same_index": bool(np.array_equal(a["index"], b["index"])),
            "codes_max_abs_rel": float(np.abs(a["codes"] - b["codes"]).max()
                                       / max(np.abs(a["codes"]).max(), 1e-12)),
            "thumbs_mean_abs": float(np.abs(a["thumbs"].astype(int) - b["thumbs"].astype(int)).mean()),
            **{f"{k}_max_abs": float(np.abs(a[f"image_attrs/{k}"] - b[f"image_attrs/{k}"]).max())
               for k in ("brightness", "contrast", "colourfulness", "saturation", "width")}}
    return out


def _resize_crop_on_device(images: list[torch.Tensor], resize: int, size: int) -> torch.Tensor:
    """Decoded (3, H, W) uint8 images (sizes differ in real data) -> (N, size, size, 3) uint8
    on their device: shorter side to ``resize`` (bilinear, antialiased), centre crop."""
    import torch.nn.functional as F

    out = torch.empty(len(images), size, size, 3, dtype=torch.uint8, device=images[0].device)
    for j, img in enumerate(images):
        h, w = img.shape[1:]
        scale = resize / min(h, w)
        new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
        resized = F.interpolate(img[None].float(), size=(new_h, new_w), mode="bilinear",
                                antialias=True, align_corners=False)
        top, left = round((new_h - size) / 2), round((new_w - size) / 2)
        crop = resized[0, :, top:top + size, left:left + size]
        out[j] = crop.round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0)
    return out


def gpu_decode_probe(config: dict, manifest_csv: Path, weights, device: torch.device) -> dict:
    """Experiment: nvJPEG batch decode + GPU resize/crop/normalise + the model (no hooks).

    File bytes are read by a few threads; decode and everything after it run
    on the GPU, one batch at a time. Not what convscope does today.
    """
    from concurrent.futures import ThreadPoolExecutor

    import torchvision
    from torchvision.io import ImageReadMode, decode_jpeg

    from convscope.data.manifest import read_manifest
    from convscope.data.preprocess import normalize

    extract_cfg, pre = config["extract"], config["preprocess"]
    dtype = _PRECISIONS[extract_cfg["precision"]]
    model = _load(config, weights, device).to(memory_format=torch.channels_last)
    manifest, _ = read_manifest(manifest_csv)
    paths = manifest["path"].astype(str).tolist()
    batch = extract_cfg["batch_size"]
    resize, size = int(pre["resize"]), int(pre["input_size"])
    autocast = torch.autocast(device_type="cuda", dtype=dtype, enabled=dtype != torch.float32)

    def read(path: str) -> torch.Tensor:
        return torchvision.io.read_file(path)

    def run(limit: int) -> tuple[int, float, float]:
        decode_s = 0.0
        n = 0
        _sync(device)
        tic = time.perf_counter()
        with ThreadPoolExecutor(8) as pool, torch.inference_mode():
            chunks = [paths[i:i + batch] for i in range(0, min(limit, len(paths)), batch)]
            future = pool.map(read, chunks[0]) if chunks else None
            for k, _chunk in enumerate(chunks):
                data = list(future)
                if k + 1 < len(chunks):
                    future = pool.map(read, chunks[k + 1])
                t0 = time.perf_counter()
                images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
                uint8 = _resize_crop_on_device(images, resize, size)
                _sync(device)
                decode_s += time.perf_counter() - t0
                x = normalize(uint8, pre).contiguous(memory_format=torch.channels_last)
                with autocast:
                    model(x)
                n += len(data)
            _sync(device)
        return n, time.perf_counter() - tic, decode_s

    run(2 * batch)  # warm-up: nvJPEG handles, kernels
    n, seconds, decode_s = run(len(paths))
    del model
    torch.cuda.empty_cache()
    return {"gpu_decode_e2e_ips": n / seconds, "gpu_decode_only_ips": n / decode_s}


# --------------------------------------------------------------------------
# report


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def report(result: dict) -> str:
    r = result
    rows = [
        ("device", r["device_name"]),
        ("convscope", r["convscope"]),
        ("model", r["model"]),
        ("precision", r["precision"]),
        ("batch size", str(r["batch_size"])),
        ("workers", f"{r['num_workers']} (of {r['cpu_count']} CPUs)"),
        ("images", f"{r['n_images']} at {r['image_size']} (H x W) {r['image_format']}"),
        ("bare forward img/s", f"{r['bare_ips']:.0f}"),
        ("forward + hooks img/s", f"{r['hooks_ips']:.0f}"),
        ("loader only img/s", f"{r['loader_ips']:.0f}  (first batch {r['loader_first_batch_s']:.2f} s)"),
        ("extract img/s (loop)", f"{r['extract_ips']:.0f}  ({r['extract_loop_s']:.2f} s)"),
        ("extract img/s (wall)", f"{r['extract_wall_ips']:.0f}  ({r['extract_wall_s']:.2f} s, "
                                 "with model load + shard write)"),
        ("RATIO extract / bare", f"{r['extract_ips'] / r['bare_ips']:.3f}"),
        ("ratio loader / bare", f"{r['loader_ips'] / r['bare_ips']:.3f}"),
        ("worker ms/img (1 proc)", "  ".join(f"{k[3:]} {v:.2f}" for k, v in r.items()
                                            if k.startswith("ms_") and k != "ms_reference")),
        ("worker ms/img X", f"{r['ms_total']:.2f}  (full decode one by one, same run: "
                            f"{r['ms_reference']:.2f}; x{r['ms_reference'] / r['ms_total']:.1f})"),
        ("shard fixed cost s", f"{r['extract_wall_s'] - r['extract_loop_s']:.2f}  (model load, "
                               "shard write: wall - loop; first batch "
                               f"{r['loader_first_batch_s']:.2f} s)"),
        ("loader bound img/s", f"{1000.0 * r['num_workers_eff'] / r['ms_total']:.0f}  "
                               "(min(workers, CPUs) x 1000 / ms_total)"),
    ]
    for key in [k for k in r if k.startswith("decode_") and k.endswith("_ips")]:
        decode = key[len("decode_"):-len("_ips")]
        rows.append((f"extract decode={decode} img/s", f"{r[key]:.0f}  (ratio "
                     f"{r[key] / r['bare_ips']:.3f}, used {r[f'decode_{decode}_used']})"))
    if "gpu_vs_cpu" in r:
        rows.append(("gpu vs cpu shard", json.dumps(r["gpu_vs_cpu"])))
    if "gpu_decode_e2e_ips" in r:
        rows += [("nvJPEG decode+resize img/s", f"{r['gpu_decode_only_ips']:.0f}"),
                 ("nvJPEG e2e + model img/s", f"{r['gpu_decode_e2e_ips']:.0f}  (ratio "
                                              f"{r['gpu_decode_e2e_ips'] / r['bare_ips']:.3f})")]
    return _table(rows)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--model", default="resnet50", help="torchvision model name, or demo")
    parser.add_argument("--n-images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--precision", choices=sorted(_PRECISIONS), default="bf16")
    parser.add_argument("--num-workers", type=int, default=8)
    parser.add_argument("--image-size", default="375x500", help="HxW of the synthetic JPEGs")
    parser.add_argument("--image-format", choices=["jpeg", "png"], default="jpeg")
    parser.add_argument("--grey", action="store_true",
                        help="greyscale images and a one-channel model (preprocess.channels 1)")
    parser.add_argument("--input-size", type=int, default=None,
                        help="model input side (default: 32 for demo, 224 otherwise)")
    parser.add_argument("--no-jpeg-draft", action="store_true",
                        help="extract.jpeg_draft false: decode every JPEG in full")
    parser.add_argument("--data-dir", default=None,
                        help="keep/reuse the images and manifest here (default: a temp folder)")
    parser.add_argument("--bare-batches", type=int, default=None,
                        help="timed forward batches (default: as many as extraction runs, >= 10)")
    parser.add_argument("--cost-sample", type=int, default=100,
                        help="images for the per-step worker costs")
    parser.add_argument("--no-gpu-decode", action="store_true",
                        help="skip the nvJPEG experiment on CUDA")
    parser.add_argument("--decode", default=None,
                        help="comma list of extract.decode values to run extraction with "
                             "(e.g. cpu,gpu), each reported with its ratio")
    parser.add_argument("--json-out", default=None, help="also write the results here")
    return parser.parse_args(argv)


def prepare_data(work: Path, n_images: int, image_hw: tuple[int, int], image_format: str = "jpeg",
                 grey: bool = False) -> Path:
    """The synthetic images and their manifest in ``work``, reused when already made there."""
    csv = work / "manifest.csv"
    stamp = work / "dataset.json"
    wanted = {"n_images": n_images, "image_size": list(image_hw)}
    if image_format != "jpeg" or grey:
        wanted.update(format=image_format, grey=grey)
    tic = time.perf_counter()
    if not (csv.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted):
        make_dataset(work, n_images, image_hw, processes=os.cpu_count() or 1,
                     image_format=image_format, grey=grey)
        stamp.write_text(json.dumps(wanted))
    print(f"data ready in {time.perf_counter() - tic:.1f} s: {csv}", file=sys.stderr)
    return csv


def main(argv=None) -> dict:
    args = parse_args(argv)

    import convscope
    from convscope.nn.device import resolve_device
    from convscope.nn.model_info import describe_model

    device = resolve_device(args.device)
    image_hw = tuple(int(v) for v in args.image_size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.data_dir) if args.data_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        csv = prepare_data(work, args.n_images, image_hw, args.image_format, args.grey)
        model_cfg, layers, weights = make_model_config(args.model, Path(tmp), 1 if args.grey else 3)
        config = build_config(args, model_cfg, layers)
        model_info = describe_model(_load(config, weights, "cpu"), config["preprocess"],
                                    config["layers"], config["codes_layer"])

        result = {
            "device": str(device),
            "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                            else f"cpu ({platform.processor() or platform.machine()})"),
            "torch": torch.__version__, "convscope": str(Path(convscope.__file__).parent),
            "model": args.model, "precision": args.precision,
            "batch_size": args.batch_size, "num_workers": args.num_workers,
            "num_workers_eff": max(1, min(args.num_workers, os.cpu_count() or 1)), "cpu_count": os.cpu_count(),
            "n_images": args.n_images, "image_size": f"{image_hw[0]}x{image_hw[1]}",
            "image_format": ("grey " if args.grey else "") + (
                "PNG" if args.image_format == "png" else "JPEG q90"),
            "jpeg_draft": not args.no_jpeg_draft,
            "layers": layers,
        }
        n_batches = args.bare_batches or max(10, -(-args.n_images // args.batch_size))
        result.update(bare_and_hooked_forward(config, model_info, weights, device, n_batches,
                                              warmup=3))
        result.update(worker_costs(config, csv, args.cost_sample))
        result.update(loader_only(config, csv, pin_memory=device.type == "cuda"))
        result.update(run_extract(config, csv, model_info, weights, Path(tmp), device))
        if args.decode:
            result.update(decode_paths(config, csv, model_info, weights, Path(tmp), device,
                                       args.decode.split(",")))
        if device.type == "cuda" and not args.no_gpu_decode:
            try:
                result.update(gpu_decode_probe(config, csv, weights, device))
            except Exception as exc:  # noqa: BLE001 - an experiment; report and go on
                result["gpu_decode_error"] = f"{type(exc).__name__}: {exc}"
    result["ratio_extract_bare"] = result["extract_ips"] / result["bare_ips"]
    print(report(result))
    if "gpu_decode_error" in result:
        print(f"nvJPEG experiment failed: {result['gpu_decode_error']}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
