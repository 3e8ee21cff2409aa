"""The HTML report: one static, offline page showing and linking every output.

`build_report` reads only the files it is given in a `ReportInputs` (named as
the ``report`` rule names its inputs) and writes one HTML file; every link is
relative to that file's folder, so the ``results/`` tree can be moved or
copied as a whole. Accuracy comes from the performance stage's tables, the
top-k pages from the units stage's ``topk.json``, the filter images from the
filters folder's ``index.csv``: nothing is recomputed, globbed or guessed,
except the per-attribute plots, listed from the folder the performance stage
declares for them.

The report also checks what it shows, and says so at the top when something
looks wrong: top-1 accuracy near chance (`chance_warning`), images listed more
than once in the manifest, analyses skipped because the dataset is too small.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2
import pandas as pd

from convscope import __version__
from convscope.analysis.common import duplicate_paths
from convscope.analysis.performance import wilson_interval
from convscope.config.sections import DatasetConfig, ReportConfig
from convscope.data.manifest import read_manifest
from convscope.store.atomic import write_text
from convscope.store.shards import iter_shards, read_attrs

__all__ = ["ReportInputs", "build_report", "chance_warning"]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg")


@dataclass(frozen=True)
class ReportInputs:
    """Every file the report reads or links; the field names are the report rule's input names.

    Paths are files unless noted; ``train_metrics`` is None when the model was
    not trained by the workflow; ``config_used`` and the comparison files are
    optional (None: not shown).
    """

    manifest: str                 # results/manifest.csv
    model_info: str               # model_info.json
    shards: Sequence[str]         # the feature shards (failed images, non-finite counts)
    shard_index: str              # features/index.json (the shards' checked listing)
    overall: str                  # performance: overall.csv
    per_class: str                # performance: per_class.csv
    per_attribute: str            # performance: per_attribute.csv
    performance_tables: str       # performance: tables.md
    confusion: str                # performance: confusion.csv
    confusion_plot: str           # performance: confusion.png
    attribute_plots: str          # performance: folder of <attribute>.png
    embedding_summary: str        # embedding.json
    coords: str                   # embedding: coords.csv
    scatter: str                  # embedding: scatter.png
    mosaic: str                   # embedding: mosaic.png
    cloud: str                    # embedding: cloud.png
    knn_accuracy: str             # neighbours: knn_accuracy.json
    queries: str                  # neighbours: queries.csv
    panels: str                   # neighbours: panels.png
    topk_table: str               # units: topk.csv
    topk_index: str               # units: topk.json (layer -> pages, relative to its folder)
    topk_pages: str               # units: folder of the patch/context pages listed in topk.json
    unit_stats: str               # units: stats.csv
    unit_summary: str             # units: summary.csv
    firing_rate: str              # units: firing_rate.png
    filters: str                  # folder written by the filters rule, with index.csv
    train_metrics: str | None = None
    config_used: str | None = None          # the merged configuration of the run (YAML)
    comparison: str | None = None           # performance: comparison.csv (other predictions)
    agreement: str | None = None            # performance: agreement.csv
    comparison_examples: str | None = None  # performance: comparison_examples.csv
    comparison_panel: str | None = None     # performance: comparison.png (example images)
    stage_summaries: Sequence[str] = ()     # summary.json of each explanation/synthesis stage

    @classmethod
    def from_mapping(cls, inputs: Mapping | Iterable[tuple[str, object]]) -> "ReportInputs":
        """Build from ``{name: path}`` (e.g. ``snakemake.input.items()``); unknown names raise."""
        values = dict(inputs.items() if isinstance(inputs, Mapping) else inputs)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise TypeError(f"ReportInputs: unknown inputs {unknown}; known: {sorted(names)}")
        lists = ("shards", "stage_summaries")
        values = {k: [str(p) for p in v] if k in lists else (None if v is None else str(v))
                  for k, v in values.items()}
        return cls(**values)


def _read_json(path) -> dict:
    """The JSON value stored at ``path``."""
    return json.loads(Path(path).read_text())


def _failed_rows(shard_paths, manifest: pd.DataFrame) -> list[dict]:
    """Images the extraction could not read: manifest row, path and reason."""
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


def _accuracy(overall_csv, per_class_csv) -> tuple[list[dict], list[dict]]:
    """Rows of the performance stage's overall and per-class tables (fractions, Wilson 95%)."""
    return (pd.read_csv(overall_csv).to_dict("records"),
            pd.read_csv(per_class_csv, keep_default_na=False, na_values=[""]).to_dict("records"))


#: How the usual causes of accuracy near chance are named in the report.
CHANCE_CAUSES = (
    "preprocessing that differs from the model's training (preprocess.resize, crop, mean, "
    "std, input_size, channels)",
    "labels in another order than the model's outputs (the class names / class order of "
    "the dataset)",
    "wrong, untrained or undertrained weights (model.weights, model.name)",
)


def chance_warning(overall: Sequence[Mapping], per_class: Sequence[Mapping]) -> dict | None:
    """A warning when top-1 accuracy is near or below chance, else None.

    Chance is 1 / the number of classes among the evaluated labels (the rows
    of the per-class table). Top-1 is "near chance" when chance is not below
    the lower bound of its Wilson 95% interval (i.e. chance lies inside the
    interval or above it); recomputed from the counts, so the rounding of the
    table does not matter. Needs at least two classes and one image.
    """
    n_classes = len(per_class)
    rows = [row for row in overall if int(row.get("n") or 0) > 0]
    if n_classes < 2 or not rows:
        return None
    row = rows[0]
    n = int(row["n"])
    hits = round(float(row["top1"]) * n)
    lo, hi = (float(v) for v in wilson_interval(hits, n))
    chance = 1.0 / n_classes
    if chance < lo:
        return None
    return {"top1": hits / n, "lo": lo, "hi": hi, "n": n, "chance": chance,
            "n_classes": n_classes, "causes": list(CHANCE_CAUSES)}


def _notes(manifest: pd.DataFrame, embedding_json, knn_accuracy_json) -> list[str]:
    """Warnings for the top of the report: duplicate images, analyses skipped or cut short."""
    notes = []
    duplicates = duplicate_paths(manifest)
    if duplicates["rows"]:
        notes.append(f"{duplicates['paths']} image(s) appear more than once in the manifest "
                     f"({duplicates['rows']} repeated row(s), e.g. "
                     f"{', '.join(duplicates['examples'][:3])}); every row is counted in every "
                     "table and figure.")
    skipped = _read_json(embedding_json).get("skipped")
    if skipped:
        notes.append(f"t-SNE map skipped: {skipped}.")
    notes += [f"Nearest neighbours: {note}." for note in
              _read_json(knn_accuracy_json).get("notes", [])]
    return notes


def _comparison(inputs: "ReportInputs", report_dir: Path) -> dict | None:
    """Overall rows of the comparison with other predictions, the agreement counts and the
    link to the panel of example images (None when not given)."""
    if not inputs.comparison or not inputs.agreement:
        return None
    table = pd.read_csv(inputs.comparison, keep_default_na=False, na_values=[""])
    agreement = pd.read_csv(inputs.agreement)
    if agreement.empty:
        return None
    panel = inputs.comparison_panel
    return {"overall": table[table["scope"] == "overall"].to_dict("records"),
            "agreement": agreement.to_dict("records"),
            "panel_href": os.path.relpath(panel, report_dir) if panel else None}


def _headline_numbers(knn_accuracy_json, embedding_json) -> list[dict]:
    """Key numbers from the analyses' JSON summaries, for the top of the report."""
    rows = []
    summary = _read_json(embedding_json)
    if summary.get("trustworthiness") is not None:
        rows.append({"what": "t-SNE map trustworthiness",
                     "value": f"{summary['trustworthiness']:.3f}"})
    for entry in _read_json(knn_accuracy_json).get("results", []):
        space = f"{entry['space']} space"
        if entry.get("features") == "input":
            space += " (model input pixels)"
        rows.append({"what": f"leave-one-out {entry['k']}-NN accuracy, {space}",
                     "value": f"{entry['accuracy']:.3f}"})
    return rows


def _section(title: str, paths: Iterable, report_dir: Path, base: Path | None = None) -> dict:
    """A report section: links to ``paths`` (images shown inline), named relative to ``base``."""
    files, images = [], []
    for path in map(Path, paths):
        name = str(path.relative_to(base)) if base is not None else path.name
        item = {"name": name, "href": os.path.relpath(path, report_dir)}
        (images if path.suffix.lower() in _IMAGE_SUFFIXES else files).append(item)
    return {"title": title, "files": files, "images": images}


def _topk_pages(topk_json) -> list[Path]:
    """The top-k pages listed in ``topk.json`` (paths relative to its folder), layer by layer."""
    folder = Path(topk_json).parent
    return [folder / page for pages in _read_json(topk_json).values() for page in pages]


def _filter_files(filters_dir) -> list[Path]:
    """The filters folder's ``index.csv`` and the files it lists, in its order."""
    folder = Path(filters_dir)
    index = pd.read_csv(folder / "index.csv")
    return [folder / "index.csv"] + [folder / name for name in index["file"]]


def _attribute_plots(folder) -> list[Path]:
    """The per-attribute plots of the performance stage, by name."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)


def _sections(inputs: ReportInputs, report_dir: Path) -> list[dict]:
    """The output sections: model, units, filters, embedding, neighbours, performance."""
    units = [inputs.topk_table, inputs.topk_index, inputs.unit_stats, inputs.unit_summary,
             inputs.firing_rate, *_topk_pages(inputs.topk_index)]
    performance = [inputs.overall, inputs.per_class, inputs.per_attribute,
                   inputs.performance_tables, inputs.confusion, inputs.confusion_plot,
                   *[p for p in (inputs.comparison, inputs.agreement,
                                 inputs.comparison_examples, inputs.comparison_panel) if p],
                   *_attribute_plots(inputs.attribute_plots)]
    model = [inputs.model_info] + ([inputs.train_metrics] if inputs.train_metrics else [])
    return [
        _section("Model", model, report_dir),
        _section("Top-k units and unit statistics", units, report_dir,
                 base=Path(inputs.topk_index).parent),
        _section("Filters and activation maps", _filter_files(inputs.filters), report_dir,
                 base=Path(inputs.filters)),
        _section("t-SNE of CNN codes", [inputs.coords, inputs.embedding_summary, inputs.scatter,
                                        inputs.mosaic, inputs.cloud], report_dir),
        _section("Nearest neighbours", [inputs.queries, inputs.knn_accuracy, inputs.panels],
                 report_dir),
        _section("Performance by attribute", performance, report_dir,
                 base=Path(inputs.overall).parent),
    ]


def _context(cfg: ReportConfig, dataset: DatasetConfig, inputs: ReportInputs,
             report_dir: Path) -> dict:
    """Everything the template shows."""
    manifest, class_names = read_manifest(inputs.manifest)
    model_info = _read_json(inputs.model_info)
    overall, per_class = _accuracy(inputs.overall, inputs.per_class)
    config_text = Path(inputs.config_used).read_text() if inputs.config_used else None
    return {
        "title": cfg.title,
        "generated": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "version": __version__,
        "model_name": model_info["model"]["name"],
        "dataset_kind": dataset.kind,
        "n_images": len(manifest),
        "n_shards": len(_read_json(inputs.shard_index)["shards"]),
        "n_classes": len(class_names),
        "overall": overall,
        "evaluated": any(int(row.get("n") or 0) > 0 for row in overall),
        "per_class": per_class,
        "chance": chance_warning(overall, per_class),
        "notes": _notes(manifest, inputs.embedding_summary, inputs.knn_accuracy),
        "comparison": _comparison(inputs, report_dir),
        "config_used": config_text,
        "config_href": (os.path.relpath(inputs.config_used, report_dir)
                        if inputs.config_used else None),
        "train_metrics": _read_json(inputs.train_metrics) if inputs.train_metrics else None,
        "layers": model_info["layers"],
        "nonfinite": _nonfinite_counts(inputs.shards),
        "headline": _headline_numbers(inputs.knn_accuracy, inputs.embedding_summary),
        "codes": model_info["codes"],
        "failed": _failed_rows(inputs.shards, manifest),
        "sections": _sections(inputs, report_dir),
        "tables_href": os.path.relpath(inputs.performance_tables, report_dir),
    }


def build_report(cfg: ReportConfig, dataset: DatasetConfig, inputs: ReportInputs,
                 out_html: str | os.PathLike) -> None:
    """Write the report page ``out_html`` (atomically) from the files named in ``inputs``.

    ``cfg`` is the ``report`` section (the title), ``dataset`` the
    ``dataset`` section (its kind is shown). Links are relative to the folder
    of ``out_html``.
    """
    out_html = Path(out_html)
    env = jinja2.Environment(loader=jinja2.PackageLoader("convscope.report", "templates"),
                             autoescape=True)
    html = env.get_template("report.html.j2").render(
        **_context(cfg, dataset, inputs, out_html.parent))
    write_text(out_html, html)
    print(f"report written to {out_html}")
