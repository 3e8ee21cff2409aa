"""The HTML report: one static, offline page linking every output."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import jinja2

from convscope import __version__
from convscope.data.manifest import read_manifest
from convscope.store.shards import iter_shards, read_attrs

__all__ = ["accuracy_rows", "build_report"]

_SECTION_TITLES = {
    "model": "Model", "units": "Top-k units and unit statistics", "embedding": "t-SNE of CNN codes",
    "neighbours": "Nearest neighbours", "performance": "Performance by attribute",
    "filters": "Filters and activation maps",
}


def accuracy_rows(shard_paths, manifest) -> list[dict]:
    """Top-1 / top-5 accuracy of labelled images, overall and per split (streams shards)."""
    split_of = manifest.set_index("index")["split"]
    counts: dict[str, list[int]] = {}
    for chunk in iter_shards(shard_paths, ["index", "label", "topk/class"]):
        labelled = chunk["label"] >= 0
        top1 = chunk["topk/class"][:, 0] == chunk["label"]
        top5 = (chunk["topk/class"] == chunk["label"][:, None]).any(axis=1)
        splits = split_of.loc[chunk["index"]].to_numpy()
        for split in ["all", *sorted(set(splits))]:
            mask = labelled & ((splits == split) if split != "all" else True)
            entry = counts.setdefault(split, [0, 0, 0])
            entry[0] += int(mask.sum())
            entry[1] += int((top1 & mask).sum())
            entry[2] += int((top5 & mask).sum())
    return [{"split": split, "n": n, "top1": c1 / n, "top5": c5 / n}
            for split, (n, c1, c5) in counts.items() if n > 0]


def _failed_rows(shard_paths, manifest) -> list[dict]:
    paths = manifest.set_index("index")["path"]
    rows = []
    for chunk in iter_shards(shard_paths, ["failed/index", "failed/reason"]):
        for index, reason in zip(chunk["failed/index"], chunk["failed/reason"]):
            rows.append({"index": int(index), "path": paths.get(int(index), "?"),
                         "reason": reason})
    return rows


def _nonfinite_counts(shard_paths) -> dict[str, int]:
    """Per layer, the (image, channel) maps with NaN or infinite values, over all shards."""
    totals: dict[str, int] = {}
    for path in shard_paths:
        for layer, count in (read_attrs(path).get("nonfinite_maps") or {}).items():
            totals[layer] = totals.get(layer, 0) + int(count)
    return totals


def _headline_numbers(output_paths) -> list[dict]:
    """Key numbers from the analyses' JSON summaries, for the top of the report."""
    rows = []
    for path in map(Path, output_paths):
        if path.name == "knn_accuracy.json":
            for entry in json.loads(path.read_text()).get("results", []):
                rows.append({"what": f"leave-one-out {entry['k']}-NN accuracy, {entry['space']} space",
                             "value": f"{entry['accuracy']:.3f}"})
        elif path.name == "embedding.json":
            summary = json.loads(path.read_text())
            value = summary.get("trustworthiness")
            if value is not None:
                rows.append({"what": "t-SNE map trustworthiness", "value": f"{value:.3f}"})
    return rows


def _sections(output_paths, report_dir: Path) -> list[dict]:
    folders = sorted({Path(p).parent for p in output_paths})
    sections = []
    for folder in folders:
        files, images = [], []
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            item = {"name": str(path.relative_to(folder)),
                    "href": os.path.relpath(path, report_dir)}
            (images if path.suffix.lower() in (".png", ".jpg", ".svg") else files).append(item)
        sections.append({"title": _SECTION_TITLES.get(folder.name, folder.name),
                         "files": files, "images": images})
    return sections


def build_report(out_html, config: dict, manifest_csv, shard_paths, model_info_json,
                 output_paths) -> None:
    """Write ``out_html``: accuracy, layers, failed images and every output file."""
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    manifest, class_names = read_manifest(manifest_csv)
    model_info = json.loads(Path(model_info_json).read_text())
    train_metrics = None
    for path in output_paths:
        if Path(path).name == "train_metrics.json":
            train_metrics = json.loads(Path(path).read_text())
    env = jinja2.Environment(loader=jinja2.PackageLoader("convscope.report", "templates"),
                             autoescape=True)
    html = env.get_template("report.html.j2").render(
        title=config["report"]["title"],
        generated=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        version=__version__,
        model_name=model_info["model"]["name"],
        dataset_kind=config["dataset"]["kind"],
        n_images=len(manifest),
        n_shards=len(shard_paths),
        n_classes=len(class_names),
        accuracy=accuracy_rows(shard_paths, manifest),
        train_metrics=train_metrics,
        layers=model_info["layers"],
        nonfinite=_nonfinite_counts(shard_paths),
        headline=_headline_numbers(output_paths),
        codes=model_info["codes"],
        failed=_failed_rows(shard_paths, manifest),
        sections=_sections(output_paths, out_html.parent),
    )
    out_html.write_text(html)
    print(f"report written to {out_html}")
