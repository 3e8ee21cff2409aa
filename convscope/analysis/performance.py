"""Top-1 / top-5 accuracy overall, per class and per attribute, with 95% intervals.

Rows: the images in the shards (failed images are not there) with a known
label (``label >= 0``), restricted by ``split``:

- ``"test"``: the rows whose manifest ``split`` is ``test`` when
  there are any, otherwise every labelled row (noted in ``tables.md``);
- ``"train"``: the ``train`` rows (an error if there are none);
- ``"all"``: every labelled row.

Attributes are the manifest's own columns (everything but ``index``,
``path``, ``slot``, ``label``, ``split``) and the pixel attributes of the
shards (``image_attrs/<name>``; renamed ``pixel_<name>`` if a manifest column
has the same name). Numeric attributes with more than ``n_bins`` distinct
values are cut into ``n_bins`` quantile bins (``pd.qcut(..., duplicates=
"drop")``, so ties may give fewer bins); other attributes are grouped by
value, and those with more than ``max_categories`` values are skipped with a
note. Rows missing an attribute are left out of that attribute's table.

An attribute with a single value over the evaluated images (e.g. ``width``
on 28 x 28 data) gets no table and no plot: it is listed as constant in
``tables.md`` and in the notes.

Top-5 is "the label is among the first min(5, k) predictions" where ``k`` is
the width of ``topk/class``. Intervals are Wilson score intervals at 95%.

Other predictions of the same images (``compare_columns``: manifest columns
holding a human labeler's answers or a second model's top-1, as class ids or
class names) are compared with the model's top-1 on the images both answered
(a missing value = no answer): accuracy of each, overall and per class, with
intervals (``comparison``), the agreement counts (``agreement``: both right,
only the model right, only the other right, both wrong) and a few example
images of each disagreement kind (``comparison_examples``, the first
`EXAMPLES_PER_KIND` by manifest row of only the model right, only the other
right, both wrong), drawn with their thumbnails in one figure
(``comparison_panel``, `render_comparison_panel`). Compare columns are not
attributes.

With no labelled image to evaluate every output is still written (empty
tables, a note that says why) so that the report can say so.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from convscope.analysis.accuracy import (METRICS, accuracy_summary, confusion_table,
                                         per_attribute_table, per_class_table)
from convscope.analysis.common import duplicate_paths, save_figure, save_placeholder
from convscope.analysis.comparison import (AGREEMENT, compare_tables, other_predictions,
                                           write_comparison_panel)
from convscope.config.sections import PerformanceConfig
from convscope.data.manifest import MANIFEST_COLUMNS, read_manifest
from convscope.store.atomic import atomic_path, write_text
from convscope.store.paths import stored_paths
from convscope.store.shards import iter_shards, open_shard

__all__ = ["SPLIT_CHOICES", "load_predictions", "run_performance"]

logger = logging.getLogger(__name__)

SPLIT_CHOICES = ("test", "all", "train")


def _pixel_attr_names(path) -> list[str]:
    """Names of the pixel attributes (``image_attrs/<name>``) of a shard, sorted."""
    with open_shard(path) as f:
        return sorted(f["image_attrs"].keys()) if "image_attrs" in f else []


def _shard_predictions(shard_paths: Sequence, pixel_names: Sequence[str]) -> tuple[pd.DataFrame, int]:
    """Per-image index, label, pred, top1, top5 and pixel attributes over the shards.

    Returns ``(frame, width)``: ``width`` is the number of predictions the
    shards hold per image (at most 5 are used for top-5).
    """
    names = ["index", "label", "topk/class"] + [f"image_attrs/{a}" for a in pixel_names]
    parts = []
    width = 5
    for chunk in iter_shards(shard_paths, names):
        topk = np.asarray(chunk["topk/class"])
        if topk.ndim == 1:
            topk = topk[:, None]
        width = min(width, topk.shape[1])
        label = chunk["label"].astype(np.int64)
        part = {
            "index": chunk["index"].astype(np.int64),
            "label": label,
            "pred": topk[:, 0].astype(np.int64),
            "top1": topk[:, 0] == label,
            "top5": (topk[:, :5] == label[:, None]).any(axis=1),
        }
        for attr in pixel_names:
            part[f"image_attrs/{attr}"] = chunk[f"image_attrs/{attr}"]
        parts.append(pd.DataFrame(part))
    return pd.concat(parts, ignore_index=True), width


def _select_split(frame: pd.DataFrame, split: str, manifest_csv, notes: list[str]) -> pd.DataFrame:
    """The labelled rows of ``split`` (see the module docstring); notes are appended to ``notes``."""
    unlabelled = int((frame["label"] < 0).sum())
    frame = frame[frame["label"] >= 0]
    if unlabelled:
        notes.append(f"{unlabelled} image(s) without a label are not counted.")
    present = sorted(frame["split"].dropna().unique())
    if split == "test":
        if "test" in present:
            return frame[frame["split"] == "test"]
        notes.append(f"No test split in the manifest (splits: {present}); all labelled "
                     "images are evaluated.")
    elif split == "train":
        if "train" not in present:
            raise ValueError(f"performance.split is 'train' but no labelled image of "
                             f"{manifest_csv} has split == 'train' (splits: {present}); "
                             f"choose one of {list(SPLIT_CHOICES)}")
        return frame[frame["split"] == "train"]
    return frame


def load_predictions(shard_paths: Sequence[str | os.PathLike], manifest_csv: str | os.PathLike,
                     split: str) -> tuple[pd.DataFrame, list[str], list[str], list[str]]:
    """Per-image correctness joined with the manifest's and the shards' attributes.

    ``split`` is one of `SPLIT_CHOICES`. Returns ``(frame, attributes,
    class_names, notes)``: ``frame`` has one row per evaluated image with
    columns index, label, pred (top-1 class), top1, top5 (bool), path, split and
    one column per attribute.
    """
    if split not in SPLIT_CHOICES:
        raise ValueError(f"performance.split must be one of {list(SPLIT_CHOICES)}, "
                         f"got {split!r}")
    shard_paths = list(shard_paths)
    if not shard_paths:
        raise ValueError("run_performance: no shards given")
    manifest, class_names = read_manifest(manifest_csv)
    notes: list[str] = []
    pixel_names = _pixel_attr_names(shard_paths[0])
    shards, width = _shard_predictions(shard_paths, pixel_names)
    if width < 5:
        notes.append(f"The shards hold only the top-{width} predictions; 'top5' is top-{width}.")

    manifest_attrs = [c for c in manifest.columns if c not in MANIFEST_COLUMNS]
    renamed = {}
    for attr in pixel_names:
        renamed[f"image_attrs/{attr}"] = f"pixel_{attr}" if attr in manifest_attrs else attr
    shards = shards.rename(columns=renamed)
    missing = len(manifest) - len(shards)
    if missing > 0:
        notes.append(f"{missing} manifest row(s) have no shard row (unreadable or not "
                     "extracted) and are not counted.")
    duplicates = duplicate_paths(manifest)
    if duplicates["rows"]:
        notes.append(f"{duplicates['paths']} image(s) appear more than once in the manifest "
                     f"({duplicates['rows']} repeated row(s), e.g. {duplicates['examples'][:3]}); "
                     "each row is counted.")
    frame = shards.merge(manifest[["index", "path", "split"] + manifest_attrs], on="index",
                         how="left", validate="one_to_one")
    frame = _select_split(frame, split, manifest_csv, notes)
    attributes = manifest_attrs + list(renamed.values())
    return frame.reset_index(drop=True), attributes, class_names, notes

def _pct(value: float) -> str:
    """A fraction as a percentage with one decimal; a dash for None or NaN."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{100 * value:.1f}"


def _markdown(table: pd.DataFrame, label_columns: Sequence[str]) -> str:
    """A Markdown table: label columns, n, then "acc (lo–hi)" in percent per metric."""
    header = list(label_columns) + ["n", "top-1 % (95% CI)", "top-5 % (95% CI)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.to_dict("records"):
        cells = [str(row[c]).replace("|", "\\|") for c in label_columns] + [str(row["n"])]
        for m in METRICS:
            cells.append(f"{_pct(row[m])} ({_pct(row[m + '_lo'])}–{_pct(row[m + '_hi'])})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _comparison_markdown(comparison: pd.DataFrame, agreement: pd.DataFrame) -> list[str]:
    """Lines of the ``tables.md`` section comparing the model with other predictions."""
    if agreement.empty:
        return []
    parts = ["## Compared with other predictions", "",
             "Top-1 on the images the other one answered (Wilson 95% intervals).", "",
             "| other | scope | n | model top-1 % (95% CI) | other top-1 % (95% CI) |",
             "|---|---|---|---|---|"]
    for row in comparison.to_dict("records"):
        scope = {"overall": "all", "class": f"class {row['class_name']}"}.get(
            row["scope"], f"{row['attribute']} = {row['value']}")
        cells = [row["other"], scope.replace("|", "\\|"), str(row["n"])]
        for who in ("model", "other"):
            cells.append(f"{_pct(row[who + '_top1'])} ({_pct(row[who + '_top1_lo'])}–"
                         f"{_pct(row[who + '_top1_hi'])})")
        parts.append("| " + " | ".join(cells) + " |")
    parts += ["", "Agreement (images both answered):", "",
              "| other | n | both right | only the model right | only the other right | "
              "both wrong |", "|---|---|---|---|---|---|"]
    for row in agreement.to_dict("records"):
        parts.append("| " + " | ".join(str(row[c]) for c in ("other", "n", *AGREEMENT)) + " |")
    return parts + [""]


def _write_markdown(path: Path, overall: pd.DataFrame, per_class: pd.DataFrame,
                    per_attribute: pd.DataFrame, notes: Sequence[str], split: str,
                    constant: dict[str, str] | None = None,
                    comparison: dict[str, pd.DataFrame] | None = None,
                    max_class_rows: int = 40) -> None:
    """``tables.md``: the tables in Markdown, long class lists cut to the extremes, notes."""
    parts = ["# Accuracy", "", f"Evaluated rows: split = {split!r}. Intervals: Wilson 95%.", ""]
    if int(overall["n"].sum()) == 0:
        parts += ["**No labelled images were evaluated**: accuracy is not defined (see the "
                  "notes).", ""]
    parts += ["## Overall", "", _markdown(overall, ["split"]), "", "## Per class", ""]
    if len(per_class) > max_class_rows:
        half = max_class_rows // 2
        ranked = per_class.sort_values(["top1", "n"], ascending=[True, False])
        parts += [f"{len(per_class)} classes; the {half} with the lowest and the {half} with "
                  "the highest top-1 accuracy (all in per_class.csv).", "",
                  "Lowest:", "", _markdown(ranked.head(half), ["class", "class_name"]), "",
                  "Highest:", "", _markdown(ranked.tail(half).iloc[::-1], ["class", "class_name"])]
    else:
        parts.append(_markdown(per_class, ["class", "class_name"]))
    parts += ["", "## Per attribute", ""]
    for attr, table in per_attribute.groupby("attribute", sort=False):
        kind = table["kind"].iloc[0]
        how = "quantile bins" if kind == "numeric" else "values"
        parts += [f"### {attr} ({how})", "", _markdown(table, ["value"]), ""]
    if per_attribute.empty:
        parts += ["No attribute tables.", ""]
    if constant:
        parts += ["### Constant attributes", "",
                  "The same value for every evaluated image (no table):", ""]
        parts += [f"- {attr} = {value}" for attr, value in constant.items()] + [""]
    if comparison is not None:
        parts += _comparison_markdown(comparison["comparison"], comparison["agreement"])
    if notes:
        parts += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    write_text(path, "\n".join(parts) + "\n")


def _plt():
    """matplotlib's pyplot on the Agg (file-only) backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_attribute(table: pd.DataFrame, attr: str, path: Path) -> None:
    """Grouped bars of top-1 and top-5 accuracy per value, with Wilson intervals."""
    plt = _plt()
    x = np.arange(len(table))
    width = 0.4
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(table) + 1.5), 3.4))
    for offset, metric, colour in ((-width / 2, "top1", "#4477aa"), (width / 2, "top5", "#ee7733")):
        acc = table[metric].to_numpy(dtype=np.float64)
        err = np.clip(np.vstack([acc - table[f"{metric}_lo"].to_numpy(dtype=np.float64),
                                 table[f"{metric}_hi"].to_numpy(dtype=np.float64) - acc]),
                      0.0, None)
        ax.bar(x + offset, acc, width, yerr=err, capsize=2, color=colour,
               label=metric.replace("top", "top-"))
    ax.set_xticks(x, [f"{v}\n(n={n})" for v, n in zip(table["value"], table["n"])],
                  fontsize=7, rotation=30 if len(table) > 6 else 0)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title(f"accuracy by {attr} (95% Wilson intervals)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def _plot_confusion(table: pd.DataFrame, path: Path) -> None:
    """Row-normalised confusion matrix; names shown up to 40 classes, counts up to 15."""
    plt = _plt()
    counts = table.to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = counts / counts.sum(axis=1, keepdims=True)
    rates = np.nan_to_num(rates)
    rows, cols = counts.shape
    height = min(12.0, max(4.0, 0.3 * rows + 2.5))
    width = min(14.0, max(4.0, 0.3 * cols + 3.5))
    fig, ax = plt.subplots(figsize=(width, height))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1, interpolation="nearest",
                      aspect="auto" if max(rows, cols) > 40 else "equal")
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of true class")
    if max(rows, cols) <= 40:
        ax.set_xticks(range(cols), table.columns, rotation=90, fontsize=7)
        ax.set_yticks(range(rows), table.index, fontsize=7)
    if max(rows, cols) <= 15:
        for i in range(rows):
            for j in range(cols):
                if counts[i, j]:
                    ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted (top-1)")
    ax.set_ylabel("true")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)

def _safe_name(name: str) -> str:
    """``name`` reduced to a file-name-safe stem (letters, digits, ``_ . -``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "attribute"


def _write_csv(table: pd.DataFrame, path: str | os.PathLike, index: bool = False) -> None:
    """``table.to_csv`` at ``path``, atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=index)


def _tables(frame: pd.DataFrame, attributes: list[str], class_names: list[str],
            cfg: PerformanceConfig) -> tuple[dict[str, pd.DataFrame], list[str], dict[str, str]]:
    """The overall, per-class, per-attribute and confusion tables; attribute notes; constants."""
    overall = accuracy_summary(frame)
    overall.insert(0, "split", cfg.split)
    per_class = per_class_table(frame, class_names)
    per_attribute, notes, constant = per_attribute_table(
        frame, attributes, n_bins=int(cfg.n_bins), max_categories=int(cfg.max_categories))
    if frame.empty:
        confusion = pd.DataFrame(index=pd.Index([], name="true"),
                                 columns=pd.Index([], name="predicted"))
    else:
        confusion = confusion_table(frame, class_names)
    return {"overall": overall, "per_class": per_class, "per_attribute": per_attribute,
            "confusion": confusion}, notes, constant


def _check_columns(key: str, wanted: Sequence[str], valid: Sequence[str]) -> None:
    """Raise ``ValueError`` naming ``key`` when ``wanted`` has names not in ``valid``."""
    unknown = sorted(set(wanted) - set(valid))
    if unknown:
        raise ValueError(f"{key}: {unknown} are not attributes (manifest columns); "
                         f"valid choices: {list(valid)}")


def _write_plots(result: dict[str, pd.DataFrame], confusion_plot: str | os.PathLike,
                 plots: str | os.PathLike) -> None:
    """The confusion matrix (a placeholder without labelled images) and one plot per attribute."""
    if int(result["overall"]["n"].sum()) == 0:
        save_placeholder(confusion_plot, "No labelled images: no confusion matrix")
    else:
        _plot_confusion(result["confusion"], confusion_plot)
    Path(plots).mkdir(parents=True, exist_ok=True)
    for attr, table in result["per_attribute"].groupby("attribute", sort=False):
        _plot_attribute(table, str(attr), Path(plots) / f"{_safe_name(attr)}.png")


def run_performance(shard_paths: Sequence[str | os.PathLike], manifest_csv: str | os.PathLike,
                    cfg: PerformanceConfig, *, overall: str | os.PathLike,
                    per_class: str | os.PathLike, per_attribute: str | os.PathLike,
                    tables: str | os.PathLike, confusion: str | os.PathLike,
                    confusion_plot: str | os.PathLike, plots: str | os.PathLike,
                    comparison: str | os.PathLike, agreement: str | os.PathLike,
                    comparison_examples: str | os.PathLike,
                    comparison_panel: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """Compute the accuracy tables and write them, each at the path it is given.

    ``cfg`` is the validated ``performance`` section (split, n_bins,
    max_categories, exclude, compare_columns). Outputs: ``overall``,
    ``per_class``, ``per_attribute`` and ``confusion`` (CSV), ``tables``
    (Markdown), ``confusion_plot`` (PNG), the folder ``plots`` holding one
    ``<attribute>.png`` per attribute table, and the comparison with other
    predictions: ``comparison``, ``agreement``, ``comparison_examples`` (CSV;
    only a header when ``compare_columns`` is empty) and ``comparison_panel``
    (PNG: the examples' thumbnails, `render_comparison_panel`; a small image
    saying why when there is nothing to show). Returns the tables by
    name (overall, per_class, per_attribute, confusion, comparison,
    agreement, examples).
    """
    shard_paths = list(shard_paths)
    frame, attributes, class_names, notes = load_predictions(shard_paths, manifest_csv,
                                                             cfg.split)
    _check_columns("performance.exclude", cfg.exclude, attributes)
    _check_columns("performance.compare_columns", cfg.compare_columns, attributes)
    others = {column: other_predictions(frame[column], column, class_names)
              for column in dict.fromkeys(cfg.compare_columns)}
    skipped = set(cfg.exclude) | set(cfg.compare_columns)
    attributes = [a for a in attributes if a not in skipped]
    if frame.empty:
        notes.append(f"No labelled images to evaluate in {manifest_csv} with split "
                     f"{cfg.split!r} (performance.split); accuracy needs labels (label >= 0).")
    result, attr_notes, constant = _tables(frame, attributes, class_names, cfg)
    compared = compare_tables(frame, others, class_names, attributes, int(cfg.n_bins),
                              int(cfg.max_categories))
    compared["examples"]["path"] = stored_paths(compared["examples"]["path"],
                                                Path(manifest_csv).parent)
    result.update(compared)
    notes = notes + attr_notes
    level = logging.WARNING if frame.empty else logging.INFO
    for note in notes:
        logger.log(level, "%s", note)

    for name, path in (("overall", overall), ("per_class", per_class),
                       ("per_attribute", per_attribute), ("comparison", comparison),
                       ("agreement", agreement), ("examples", comparison_examples)):
        _write_csv(result[name], path)
    _write_csv(result["confusion"], confusion, index=True)
    write_comparison_panel(comparison_panel, shard_paths, list(others), compared)
    _write_markdown(tables, result["overall"], result["per_class"], result["per_attribute"],
                    notes, cfg.split, constant, compared)
    _write_plots(result, confusion_plot, plots)
    return result
