"""What the report checks in what it shows, and says at the top of the overview.

`chance_warning`: top-1 accuracy near chance (a setup error, usually);
`dataset_notes`: images listed more than once in the manifest, analyses skipped
or cut short because the dataset is too small; `headline_numbers`: key numbers
from the analyses' JSON summaries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from convscope.analysis.common import duplicate_paths
from convscope.analysis.accuracy import wilson_interval
from convscope.report.readers import read_json

__all__ = ["CHANCE_CAUSES", "chance_warning", "dataset_notes", "headline_numbers"]


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


def dataset_notes(manifest: pd.DataFrame, embedding_json, knn_accuracy_json) -> list[str]:
    """Warnings for the top of the report: duplicate images, analyses skipped or cut short."""
    notes = []
    duplicates = duplicate_paths(manifest)
    if duplicates["rows"]:
        notes.append(f"{duplicates['paths']} image(s) appear more than once in the manifest "
                     f"({duplicates['rows']} repeated row(s), e.g. "
                     f"{', '.join(duplicates['examples'][:3])}); every row is counted in every "
                     "table and figure.")
    skipped = read_json(embedding_json).get("skipped")
    if skipped:
        notes.append(f"t-SNE map skipped: {skipped}.")
    notes += [f"Nearest neighbours: {note}." for note in
              read_json(knn_accuracy_json).get("notes", [])]
    return notes


def headline_numbers(knn_accuracy_json, embedding_json) -> list[dict]:
    """Key numbers from the analyses' JSON summaries, for the top of the report."""
    rows = []
    summary = read_json(embedding_json)
    if summary.get("trustworthiness") is not None:
        rows.append({"what": "t-SNE map trustworthiness",
                     "value": f"{summary['trustworthiness']:.3f}"})
    for entry in read_json(knn_accuracy_json).get("results", []):
        space = f"{entry['space']} space"
        if entry.get("features") == "input":
            space += " (model input pixels)"
        rows.append({"what": f"leave-one-out {entry['k']}-NN accuracy, {space}",
                     "value": f"{entry['accuracy']:.3f}"})
    return rows
