"""Size and build time of the report for a ResNet-50-sized run, from fabricated results.

Fabricates (not timed) every file the report reads, at the size a ResNet-50 run on
ImageNet-like data with the default settings would write: layers layer1-layer4 with
256/512/1,024/2,048 channels (receptive fields 35/99/291/483 px on 224 px inputs), top-9
per unit, 1,000 classes, 50,000 images in the shards and the embedding, and every
explanation and synthesis stage with its default counts (32 attributed images, 4 x 4
reconstructions, 1,000 class-model images and fooling images, 4 x 32 unit images, ...).
Stage figures are photo-like pictures of the pixel size the stage would draw. Then it
builds the report with `convscope.report.build_report` (timed) and prints, last, one
JSON line ``{"bytes": ..., "files": ..., "seconds": ..., "cpu_seconds": ...}`` (the
report folder's total size and file count, the build's wall time and CPU time).

    python benchmarks/report_scale.py --out /tmp/report_scale
    python benchmarks/report_scale.py --out /tmp/rs --channels 64 128 256 512 --images 5000

Goal (issue 20): <= 250 MB, <= 5,000 files, <= 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

LAYERS = ("layer1", "layer2", "layer3", "layer4")
RF = {"layer1": 35, "layer2": 99, "layer3": 291, "layer4": 483}
STRIDE = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}
INPUT = 224


def _photo(rng, size: tuple[int, int]) -> np.ndarray:
    """A photo-like (H, W, 3) uint8 picture: smooth colour field, a few shapes, grain."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    base = rng.random((2, 3)) * 255
    field = base[0] * (1 - x[..., None]) + base[1] * y[..., None]
    image = Image.fromarray(field.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        r = int(rng.integers(max(2, w // 12), max(3, w // 4)))
        draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    noisy = np.asarray(image, np.int16) + rng.integers(-4, 5, (h, w, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _png(path: Path, rng, size: tuple[int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_photo(rng, size)).save(path, compress_level=1)
    return str(path)


def _text(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def _images(root: Path, rng, n_distinct: int) -> tuple[list[str], np.ndarray]:
    """``n_distinct`` 224 px JPEGs (the manifest cycles through them) and their thumbnails."""
    paths, thumbs = [], []
    for i in range(n_distinct):
        pixels = _photo(rng, (INPUT, INPUT))
        path = root / "img" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(str(path))
        thumbs.append(np.asarray(Image.fromarray(pixels).resize((32, 32))))
    return paths, np.stack(thumbs)


def _dataset(root: Path, rng, n: int, classes: list[str], channels: dict) -> dict:
    """Manifest, shards (labels, top-5 predictions, thumbnails) and model_info.json."""
    from convscope.data.manifest import write_manifest
    from convscope.store.shards import write_shard

    paths, thumbs = _images(root, rng, min(n, 1000))
    label = np.arange(n) % len(classes)
    manifest = pd.DataFrame({"index": np.arange(n), "path": [paths[i % len(paths)] for i in range(n)],
                             "slot": -1, "label": label,
                             "split": np.where(np.arange(n) % 5 == 0, "test", "train")})
    results = root / "results"
    write_manifest(manifest, classes, results / "manifest.csv")
    shards = []
    for i, start in enumerate(range(0, n, 5000)):
        rows = np.arange(start, min(n, start + 5000))
        top = np.stack([label[rows], (label[rows] + 1) % len(classes),
                        *[rng.integers(0, len(classes), len(rows)) for _ in range(3)]], 1)
        wrong = rng.random(len(rows)) < 0.3
        top[wrong, 0] = rng.integers(0, len(classes), int(wrong.sum()))
        path = results / "features" / f"shard-{i:05d}.h5"
        write_shard(path, {"index": rows, "label": label[rows].astype(np.int32),
                           "topk/class": top.astype(np.int32),
                           "failed/index": np.array([], np.int64),
                           "failed/reason": np.array([], str),
                           "thumbs": thumbs[rows % len(thumbs)],
                           "image_attrs/brightness": rng.random(len(rows)).astype(np.float32)},
                    {"class_names": classes, "nonfinite_maps": {}})
        shards.append(str(path))
    layers = {name: {"shape": [c, INPUT // STRIDE[name], INPUT // STRIDE[name]],
                     "receptive_field": {"size": [RF[name]] * 2, "stride": [STRIDE[name]] * 2}}
              for name, c in channels.items()}
    info = {"model": {"kind": "torchvision", "name": "resnet50", "weights_sha256": "ab" * 32},
            "codes": {"where": "input", "module": "fc", "dim": 2048}, "layers": layers,
            "input_size": [INPUT, INPUT]}
    return {"manifest": str(results / "manifest.csv"), "shards": shards,
            "model_info": _text(results / "model" / "model_info.json", json.dumps(info)),
            "shard_index": _text(results / "features" / "index.json",
                                 json.dumps({"shards": [{"path": p} for p in shards]}))}


def _units(results: Path, rng, n: int, channels: dict, top_k: int, classes: list[str]) -> dict:
    """topk.csv, stats.csv, summary.csv, histograms.h5, firing_rate.png, filters/."""
    units = results / "units"
    units.mkdir(parents=True, exist_ok=True)
    topk, stats = [], []
    with h5py.File(units / "histograms.h5", "w") as f:
        for layer, c in channels.items():
            half = RF[layer] / 2
            cx, cy = rng.uniform(0, INPUT, (2, c, top_k))
            value = np.sort(rng.gamma(2.0, 1.0, (c, top_k)), axis=1)[:, ::-1]
            ch, rank = np.meshgrid(np.arange(c), np.arange(top_k), indexing="ij")
            topk.append(pd.DataFrame({
                "layer": layer, "channel": ch.ravel(), "rank": rank.ravel(),
                "index": rng.integers(0, n, c * top_k), "value": value.ravel(),
                "fy": 0, "fx": 0, "x0": np.clip(cx - half, 0, INPUT).ravel(),
                "y0": np.clip(cy - half, 0, INPUT).ravel(),
                "x1": np.clip(cx + half, 0, INPUT).ravel(), "y1": np.clip(cy + half, 0, INPUT).ravel()}))
            rate = rng.random(c)
            stats.append(pd.DataFrame({
                "layer": layer, "channel": np.arange(c), "firing_rate": rate,
                "mean_activation": rng.random(c), "mean_max": rng.random(c) * 2,
                "max_activation": value[:, 0], "dead": False,
                "preferred_class": [classes[i] for i in rng.integers(0, len(classes), c)],
                "class_selectivity": rng.random(c)}))
            group = f.create_group(layer)
            group["counts"] = rng.integers(0, 3000, (c, 30))
            group["edges"] = np.tile(np.linspace(0, 5, 31), (c, 1))
    pd.concat(topk).to_csv(units / "topk.csv", index=False)
    pd.concat(stats).to_csv(units / "stats.csv", index=False)
    pd.DataFrame({"layer": list(channels), "channels": list(channels.values()), "dead": 0,
                  "dead_fraction": 0.0, "sparsity": 0.5, "images": n}).to_csv(
        units / "summary.csv", index=False)
    filters = units / "filters"
    _png(filters / "weights" / "conv1.png", rng, (8 * 26, 8 * 26))
    _text(filters / "index.csv", "kind,layer,analysed_layer,image_index,file\n"
                                 "weights,conv1,layer1,-1,weights/conv1.png\n")
    return {"topk_table": str(units / "topk.csv"),
            "topk_index": _text(units / "topk.json", json.dumps({})),
            "topk_pages": str(units / "topk"), "unit_stats": str(units / "stats.csv"),
            "unit_summary": str(units / "summary.csv"),
            "unit_histograms": str(units / "histograms.h5"),
            "firing_rate": _png(units / "firing_rate.png", rng, (1200, 300)), "filters": str(filters)}


def _analyses(results: Path, rng, n: int, classes: list[str]) -> dict:
    """Embedding (50,000 coordinates, mosaic, cloud, scatter) and neighbours files."""
    emb, nb = results / "embedding", results / "neighbours"
    emb.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"index": np.arange(n), "x": rng.normal(size=n), "y": rng.normal(size=n),
                  "label": np.arange(n) % len(classes), "fitted": True, "grid_row": 0,
                  "grid_col": 0}).to_csv(emb / "coords.csv", index=False)
    queries = pd.DataFrame({"query_index": np.repeat(np.arange(10), 16),
                            "query_label": np.repeat(np.arange(10), 16),
                            "space": np.tile(np.repeat(["code", "pixel"], 8), 10),
                            "features": "codes", "rank": np.tile(np.arange(1, 9), 20),
                            "neighbour_index": rng.integers(0, n, 160),
                            "neighbour_label": rng.integers(0, len(classes), 160),
                            "distance": rng.random(160), "same_label": False})
    nb.mkdir(parents=True, exist_ok=True)
    queries.to_csv(nb / "queries.csv", index=False)
    knn = {"results": [{"space": s, "k": k, "accuracy": 0.5} for s in ("code", "pixel")
                       for k in (1, 5, 10)], "majority_class_fraction": 0.001}
    return {"embedding_summary": _text(emb / "embedding.json", json.dumps({"trustworthiness": 0.95})),
            "coords": str(emb / "coords.csv"),
            "scatter": _png(emb / "scatter.png", rng, (1920, 1920)),
            "mosaic": _png(emb / "mosaic.png", rng, (1280, 1280)),
            "cloud": _png(emb / "cloud.png", rng, (2000, 2000)),
            "knn_accuracy": _text(nb / "knn_accuracy.json", json.dumps(knn)),
            "queries": str(nb / "queries.csv"),
            "panels": _png(nb / "panels.png", rng, (48 * 18, 48 * 20))}


def _performance(results: Path, inputs: dict) -> dict:
    from convscope.analysis.performance import run_performance
    from convscope.config import PerformanceConfig, validate_config

    folder = results / "performance"
    outputs = {"overall": folder / "overall.csv", "per_class": folder / "per_class.csv",
               "per_attribute": folder / "per_attribute.csv", "tables": folder / "tables.md",
               "confusion": folder / "confusion.csv", "confusion_plot": folder / "confusion.png",
               "plots": folder / "plots", "comparison": folder / "comparison.csv",
               "agreement": folder / "agreement.csv",
               "comparison_examples": folder / "comparison_examples.csv",
               "comparison_panel": folder / "comparison.png"}
    cfg = PerformanceConfig.from_dict(validate_config({})["performance"])
    run_performance(inputs["shards"], inputs["manifest"], cfg, **outputs)
    names = {"tables": "performance_tables", "plots": "attribute_plots"}
    keep = {k: v for k, v in outputs.items() if not k.startswith("compar") and k != "agreement"}
    return {names.get(k, k): str(v) for k, v in keep.items()}


#: stage -> (figures as (count, width, height), table rows, unit images per layer)
STAGES = {
    "explain_attribution": ([(1, 1100, 1400), (32, 1010, 230)], 0, 0),
    "explain_units": ([(4, 800, 500)], 0, 4),
    "explain_invariance": ([(1, 1200, 280), (1, 1200, 280)], 432, 0),
    "explain_correspondence": ([(1, 600, 800)], 40, 0),
    "explain_keypoints": ([(1, 650, 1200)], 80, 0),
    "synthesis_classes": ([(1, 7232, 7232), (1, 800, 600), (64, 224, 224)], 0, 0),
    "synthesis_units": ([(1, 800, 600)], 0, 32),
    "synthesis_inversion": ([(1, 1150, 700)], 0, 0),
    "synthesis_evolution": ([(1, 600, 200)], 0, 0),
    "synthesis_dream": ([(1, 900, 900), (4, 224, 224)], 0, 0),
    "synthesis_style": ([(1, 600, 300), (1, 600, 300), (1, 600, 300)], 50, 0),
    "synthesis_adversarial": ([(16, 810, 207)], 32, 0),
    "synthesis_fooling": ([(1, 7232, 7232)], 1000, 0),
}


def _stages(results: Path, rng, layers: list[str]) -> list[str]:
    """One summary.json per explanation/synthesis stage, with its figures, tables, units."""
    from convscope.store.summary import figure_entry, write_summary

    summaries = []
    for stage, (figures, rows, per_layer) in STAGES.items():
        folder = results / stage.replace("_", "/", 1)
        entries, units = [], {}
        for group, (count, w, h) in enumerate(figures):
            for i in range(count):
                path = Path(_png(folder / f"fig-{group}-{i:03d}.png", rng, (w, h)))
                entries.append(figure_entry(path, folder, f"figure {group}.{i}", "fabricated"))
        tables = []
        if rows:
            pd.DataFrame({"row": np.arange(rows), "value": rng.random(rows)}).to_csv(
                folder / "table.csv", index=False)
            tables.append(figure_entry(folder / "table.csv", folder, "table"))
        for layer in layers if per_layer else []:
            for c in range(per_layer):
                path = Path(_png(folder / "units" / layer / f"c{c:04d}.png", rng, (224, 224)))
                units.setdefault(layer, {})[str(c)] = [figure_entry(path, folder, "unit image")]
        write_summary(folder / "summary.json", stage, stage.replace("_", " "), "fabricated",
                      numbers=[("images", 32)], figures=entries, tables=tables,
                      units=units or None)
        summaries.append(str(folder / "summary.json"))
    return summaries


def fabricate(root: Path, channels: dict, n: int, n_classes: int, top_k: int) -> dict:
    """Every report input under ``root/results``; returns them as `ReportInputs` names."""
    rng = np.random.default_rng(0)
    classes = [f"class_{i:04d}" for i in range(n_classes)]
    results = root / "results"
    inputs = _dataset(root, rng, n, classes, channels)
    inputs.update(_units(results, rng, n, channels, top_k, classes))
    inputs.update(_analyses(results, rng, n, classes))
    inputs.update(_performance(results, inputs))
    inputs["stage_summaries"] = _stages(results, rng, list(channels))
    return inputs


def build(root: Path, inputs: dict) -> tuple[float, float]:
    """Build the report from ``inputs``; returns its wall time and CPU time in seconds."""
    from convscope.config import DatasetConfig, ReportConfig, validate_config
    from convscope.report import ReportInputs, build_report

    cfg = validate_config({})
    site = root / "results" / "report"
    start, cpu = time.perf_counter(), time.process_time()
    build_report(ReportConfig.from_dict(cfg["report"]), DatasetConfig.from_dict(cfg["dataset"]),
                 ReportInputs.from_mapping(inputs), index_html=site / "index.html",
                 pages_dir=site / "pages", assets_dir=site / "assets")
    return time.perf_counter() - start, time.process_time() - cpu


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="working folder (replaced)")
    parser.add_argument("--channels", type=int, nargs=4, default=[256, 512, 1024, 2048])
    parser.add_argument("--images", type=int, default=50000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--top-k", type=int, default=9)
    args = parser.parse_args(argv)
    if args.out.exists():
        shutil.rmtree(args.out)
    started = time.perf_counter()
    inputs = fabricate(args.out, dict(zip(LAYERS, args.channels)), args.images, args.classes,
                       args.top_k)
    print(f"fabricated in {time.perf_counter() - started:.0f} s", flush=True)
    seconds, cpu_seconds = build(args.out, inputs)
    files = [p for p in (args.out / "results" / "report").rglob("*") if p.is_file()]
    # "seconds": the build's wall time; "cpu_seconds": its CPU time (one process), the
    # number to compare on a shared machine
    result = {"bytes": sum(p.stat().st_size for p in files), "files": len(files),
              "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
