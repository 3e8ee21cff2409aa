"""`ReportInputs`: every file the report reads, named as the ``report`` rule names its inputs."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["ReportInputs"]


@dataclass(frozen=True)
class ReportInputs:
    """Every file the report reads or copies; the field names are the report rule's input names.

    Paths are files unless noted; ``train_metrics`` is None when the model was
    not trained by the workflow; the fields with a default are optional
    (None or empty: that part of the site is not shown).
    """

    manifest: str                 # results/manifest.csv
    model_info: str               # model_info.json
    shards: Sequence[str]         # the feature shards (failed images, predictions, thumbnails)
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
    unit_stats: str               # units: stats.csv (+ preferred_class, class_selectivity)
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
    benchmarks: Sequence[str] = ()          # Snakemake benchmark TSVs results/benchmarks/...
    unit_histograms: str | None = None      # units: histograms.h5 (per layer counts, edges)

    @classmethod
    def from_mapping(cls, inputs: Mapping | Iterable[tuple[str, object]]) -> "ReportInputs":
        """Build from ``{name: path}`` (e.g. ``snakemake.input.items()``); unknown names raise."""
        values = dict(inputs.items() if isinstance(inputs, Mapping) else inputs)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise TypeError(f"ReportInputs: unknown inputs {unknown}; known: {sorted(names)}")
        lists = ("shards", "stage_summaries", "benchmarks")
        values = {k: [str(p) for p in v] if k in lists else (None if v is None else str(v))
                  for k, v in values.items()}
        return cls(**values)
