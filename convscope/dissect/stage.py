"""The dissect stage: concept labels per unit (Network Dissection, Bau et al. 2017).

Writes, per layer, ``concepts.csv`` (`CONCEPT_COLUMNS`, one row per unit and concept with
IoU > 0, by unit then IoU descending) and ``summary.csv`` (each unit's best concept; no
concept when every IoU is 0), ``image_concepts.csv`` (AUC of the per-image maximum for
each value of the ``dissect.image_concepts`` columns), a bar chart of detectors by
category, a figure per layer of the best units' top images with their concept's mask,
and ``summary.json``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from convscope.config.sections import DissectConfig, ModelConfig, PreprocessConfig
from convscope.data.manifest import read_manifest
from convscope.dissect.concepts import read_concepts, image_stem
from convscope.dissect.dissection import LayerDissection, dissect_layers
from convscope.dissect.figures import plot_detectors, plot_units
from convscope.dissect.iou import auc_scores
from convscope.explain.forward import chosen_layers
from convscope.nn.models import load_stage_model
from convscope.store.atomic import write_text
from convscope.store.summary import figure_entry, write_summary

__all__ = ["CONCEPT_COLUMNS", "concept_table", "best_table", "image_concept_table",
           "run_dissect"]

logger = logging.getLogger(__name__)

CONCEPT_COLUMNS = ["unit", "concept", "category", "iou", "threshold", "detector"]


def concept_table(result: LayerDissection, names: Sequence[str], categories: Sequence[str],
                  iou_threshold: float) -> pd.DataFrame:
    """`CONCEPT_COLUMNS` rows with IoU > 0; ``detector`` is True on a unit's best concept
    (the first concept id among equal IoUs) when its IoU exceeds ``iou_threshold``."""
    iou = result.iou
    best = iou.argmax(axis=1)
    units, concepts = np.nonzero(iou > 0)
    table = pd.DataFrame({
        "unit": units, "concept": [names[c] for c in concepts],
        "category": [categories[c] for c in concepts], "iou": iou[units, concepts],
        "threshold": result.thresholds[units].astype(np.float64),
        "detector": (concepts == best[units]) & (iou[units, concepts] > iou_threshold)},
        columns=CONCEPT_COLUMNS)
    return table.sort_values(["unit", "iou", "concept"], ascending=[True, False, True],
                             kind="mergesort").reset_index(drop=True)


def best_table(result: LayerDissection, names: Sequence[str], categories: Sequence[str],
               iou_threshold: float) -> pd.DataFrame:
    """One row per unit: its best concept (empty when every IoU is 0)."""
    best = result.iou.argmax(axis=1)
    iou = result.iou[np.arange(len(best)), best]
    has = iou > 0
    return pd.DataFrame({
        "unit": np.arange(len(best)),
        "concept": [names[c] if ok else "" for c, ok in zip(best, has)],
        "category": [categories[c] if ok else "" for c, ok in zip(best, has)],
        "iou": iou, "threshold": result.thresholds.astype(np.float64),
        "detector": iou > iou_threshold}, columns=CONCEPT_COLUMNS)


def image_concept_table(results: Mapping[str, LayerDissection], rows: pd.DataFrame,
                        columns: Sequence[str]) -> pd.DataFrame:
    """``layer, unit, concept, category, auc``: per value of each column (a tag present
    on some images and absent on others), the AUC of each unit's per-image maximum."""
    records = []
    for column in columns:
        if column not in rows.columns:
            raise ValueError(f"config key 'dissect.image_concepts': {column!r} is not a manifest "
                             f"column; columns: {', '.join(map(str, rows.columns))}")
        values = rows[column].astype(str)
        for value in sorted(values.unique()):
            for layer, result in results.items():
                auc = auc_scores(result.image_max, (values == value).to_numpy())
                records += [(layer, unit, value, column, float(a)) for unit, a in enumerate(auc)
                            if np.isfinite(a)]
    return pd.DataFrame.from_records(records,
                                     columns=["layer", "unit", "concept", "category", "auc"])


def _candidate_rows(manifest_csv, source: str, section: DissectConfig):
    manifest, _ = read_manifest(manifest_csv)
    stems = [image_stem(p) for p in manifest["path"]]
    duplicates = sorted({s for s in stems if stems.count(s) > 1}) if len(set(stems)) < len(stems) \
        else []
    if duplicates:
        raise ValueError(f"dissect.concepts: masks are matched by file name, but several images "
                         f"are named {', '.join(duplicates[:5])}")
    concepts = read_concepts(source, stems)
    rows = manifest[[s in concepts.files for s in stems]].reset_index(drop=True)
    order = np.random.default_rng(int(section.seed)).permutation(len(rows))
    count = len(rows) if section.n_images is None else min(int(section.n_images), len(rows))
    if section.n_images is not None and count < int(section.n_images):
        logger.warning("dissect.n_images = %d but only %d images have masks: all are used",
                       section.n_images, len(rows))
    return rows.iloc[np.sort(order[:count])].reset_index(drop=True), concepts


def run_dissect(model_cfg: ModelConfig, weights_file, section: DissectConfig,
                preprocess: PreprocessConfig, layers: Sequence[str] | None, manifest_csv,
                concepts_source: str | os.PathLike, *, layer_dirs: Mapping[str, str],
                image_concepts_csv: str, detectors_png: str, summary_json: str) -> None:
    """The stage. ``layer_dirs``: layer -> its folder (``concepts.csv``, ``summary.csv``,
    ``units.png`` inside); ``concepts_source``: ``dissect.concepts`` or the demo's index."""
    model, device = load_stage_model(model_cfg, weights_file, preprocess, section.device,
                                     key="dissect.device")
    names = chosen_layers(model, section.layers, layers, "dissect.layers")
    rows, concepts = _candidate_rows(manifest_csv, str(concepts_source), section)
    results, readable = dissect_layers(model, rows, concepts, preprocess, names,
                                       float(section.quantile), int(section.batch_size), device)
    rows = rows.iloc[readable].reset_index(drop=True)
    empty = [concepts.names[c] for c in
             np.flatnonzero(np.all(next(iter(results.values())).iou == 0, axis=0))]
    tables = {}
    for name in names:
        folder = Path(layer_dirs[name])
        folder.mkdir(parents=True, exist_ok=True)
        args = (results[name], concepts.names, concepts.categories, float(section.iou_threshold))
        tables[name] = best_table(*args)
        write_text(folder / "concepts.csv", concept_table(*args).to_csv(index=False))
        write_text(folder / "summary.csv", tables[name].to_csv(index=False))
        plot_units(model, rows, concepts, preprocess, name, results[name], tables[name],
                   section, device, folder / "units.png")
    write_text(image_concepts_csv, image_concept_table(results, rows, section.image_concepts)
               .to_csv(index=False))
    plot_detectors(tables, concepts.category_names, detectors_png)
    _write_summary(summary_json, tables, layer_dirs, image_concepts_csv, detectors_png,
                   len(rows), empty, section)


def _write_summary(summary_json, tables, layer_dirs, image_concepts_csv, detectors_png,
                   n_images, empty, section) -> None:
    base = Path(summary_json).parent
    numbers = [("images", n_images), ("quantile q", section.quantile),
               ("detector IoU >", section.iou_threshold)]
    for name, table in tables.items():
        counts = table[table["detector"]].groupby("category").size()
        text = ", ".join(f"{c}: {n}" for c, n in counts.items()) or "none"
        numbers.append((f"{name}: detectors by category", text))
    numbers.append(("concepts without any pixel in the images (skipped)",
                    ", ".join(empty) or "none"))
    figures = [figure_entry(detectors_png, base, "detectors by category",
                            "units whose best concept has IoU above the threshold, per layer")]
    tables_out = []
    for name, folder in layer_dirs.items():
        figures.append(figure_entry(Path(folder) / "units.png", base, f"{name}: best units",
                                    "each row a unit (label, IoU), its top images; green: the "
                                    "concept's mask, red: where the unit exceeds T_k"))
        tables_out.append(figure_entry(Path(folder) / "summary.csv", base,
                                       f"{name}: best concept per unit", "label, IoU, T_k"))
    tables_out.append(figure_entry(image_concepts_csv, base, "image-level concepts",
                                   "AUC of each unit's per-image maximum for each tag"))
    write_summary(summary_json, "dissect", "Concept labels (Network Dissection)",
                  ("Each unit's activation map is thresholded at T_k, the top quantile q of "
                   "all its activations over the images, upsampled bilinearly to the mask "
                   "size and compared with every concept's masks: IoU summed over the "
                   "dataset (Bau et al. 2017). A unit is a detector of its best concept "
                   "when that IoU exceeds the threshold."),
                  numbers=numbers, figures=figures, tables=tables_out)
