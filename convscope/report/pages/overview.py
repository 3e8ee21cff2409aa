"""The overview (``index.html``): dataset, model, accuracy, headline numbers, warnings and
provenance (configuration, package versions, date, time and memory per stage)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pandas as pd

from convscope.report.checks import chance_warning, dataset_notes, headline_numbers
from convscope.report.pages.units import gallery_pages
from convscope.report.readers import (benchmark_rows, failed_rows, nonfinite_counts,
                                      read_json, read_unit_stats)
from convscope.store.tables import read_table

__all__ = ["PACKAGES", "package_versions", "write_overview"]

#: Packages whose versions the provenance lists.
PACKAGES = ("convscope", "torch", "torchvision", "numpy", "pandas", "h5py", "scikit-learn",
            "openTSNE", "captum", "snakemake")


def package_versions() -> list[dict]:
    """Installed versions of `PACKAGES` in the environment building the report."""
    rows = []
    for name in PACKAGES:
        try:
            rows.append({"name": name, "version": metadata.version(name)})
        except metadata.PackageNotFoundError:
            rows.append({"name": name, "version": "not installed"})
    return rows


def _accuracy(inputs) -> dict:
    """Rows of the performance stage's overall and per-class tables, and the chance check."""
    overall = read_table(inputs.overall).to_dict("records")
    per_class = read_table(inputs.per_class, keep_default_na=False,
                            na_values=[""]).to_dict("records")
    return {"overall": overall, "per_class": per_class,
            "evaluated": any(int(row.get("n") or 0) > 0 for row in overall),
            "chance": chance_warning(overall, per_class)}


def _provenance(renderer, inputs) -> dict:
    """Configuration used (copied into the site), versions and benchmarks."""
    config = None
    if inputs.config_used:
        config = {"text": Path(inputs.config_used).read_text(),
                  "href": renderer.writer.copy(inputs.config_used, "assets/config.yaml")}
    return {"config": config, "versions": package_versions(),
            "benchmarks": benchmark_rows(inputs.benchmarks)}


def write_overview(renderer, inputs, dataset, manifest: pd.DataFrame,
                   class_names: list[str]) -> None:
    """``index.html``."""
    model_info = read_json(inputs.model_info)
    renderer.page(
        "overview.html.j2", "index.html", "Overview",
        dataset_kind=dataset.kind, n_images=len(manifest), class_names=class_names,
        n_shards=len(read_json(inputs.shard_index)["shards"]),
        failed=failed_rows(inputs.shards, manifest), model=model_info.get("model", {}),
        model_info=model_info, layers=model_info["layers"], codes=model_info["codes"],
        nonfinite=nonfinite_counts(inputs.shards), **_accuracy(inputs),
        galleries=gallery_pages(read_unit_stats(inputs.unit_stats)),
        notes=dataset_notes(manifest, inputs.embedding_summary, inputs.knn_accuracy),
        headline=headline_numbers(inputs.knn_accuracy, inputs.embedding_summary),
        train_metrics=read_json(inputs.train_metrics) if inputs.train_metrics else None,
        provenance=_provenance(renderer, inputs))
