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

Top-5 is "the label is among the first min(5, k) predictions" where ``k`` is
the width of ``topk/class``. Intervals are Wilson score intervals at 95%.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from convscope.analysis.common import class_name, save_figure
from convscope.config.sections import PerformanceConfig
from convscope.data.manifest import MANIFEST_COLUMNS, read_manifest
from convscope.store.atomic import atomic_path, write_text
from convscope.store.shards import iter_shards

__all__ = [
    "Z_95",
    "SPLIT_CHOICES",
    "wilson_interval",
    "accuracy_summary",
    "load_predictions",
    "per_class_table",
    "per_attribute_table",
    "confusion_table",
    "run_performance",
]

logger = logging.getLogger(__name__)

#: Two-sided 95% normal quantile.
Z_95 = 1.959963984540054
SPLIT_CHOICES = ("test", "all", "train")
_METRICS = ("top1", "top5")


def wilson_interval(successes, n, z: float = Z_95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial proportion; NaN where ``n == 0``.

    Args:
        successes, n: counts (scalars or arrays of the same shape).
    Returns:
        (lo, hi) arrays, each within [0, 1].
    """
    successes = np.asarray(successes, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = successes / n
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
        lo = np.where(successes <= 0, 0.0, np.clip(centre - half, 0.0, 1.0))
        hi = np.where(successes >= n, 1.0, np.clip(centre + half, 0.0, 1.0))
    lo = np.where(n > 0, lo, np.nan)
    hi = np.where(n > 0, hi, np.nan)
    return lo, hi


def accuracy_summary(frame: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """Count and top-1/top-5 accuracy with Wilson intervals, overall or per ``by``.

    ``frame`` needs boolean columns ``top1`` and ``top5``. Columns of the
    result: [by], n, top1, top1_lo, top1_hi, top5, top5_lo, top5_hi.
    """
    if by is None:
        grouped = pd.DataFrame({"n": [len(frame)], "top1_hits": [int(frame["top1"].sum())],
                                "top5_hits": [int(frame["top5"].sum())]})
    else:
        grouped = (frame.groupby(by, observed=True, sort=True)
                   .agg(n=("top1", "size"), top1_hits=("top1", "sum"), top5_hits=("top5", "sum"))
                   .reset_index())
    out = grouped[[by]].copy() if by is not None else pd.DataFrame(index=grouped.index)
    out["n"] = grouped["n"].astype(np.int64)
    for metric in _METRICS:
        hits = grouped[f"{metric}_hits"].to_numpy(dtype=np.float64)
        n = out["n"].to_numpy(dtype=np.float64)
        lo, hi = wilson_interval(hits, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[metric] = np.where(n > 0, hits / n, np.nan)
        out[f"{metric}_lo"] = lo
        out[f"{metric}_hi"] = hi
    return out


def _pixel_attr_names(path) -> list[str]:
    """Names of the pixel attributes (``image_attrs/<name>``) of a shard, sorted."""
    with h5py.File(path, "r", locking=False) as f:
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
    columns index, label, pred (top-1 class), top1, top5 (bool), split and one
    column per attribute.
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
    frame = shards.merge(manifest[["index", "split"] + manifest_attrs], on="index",
                         how="left", validate="one_to_one")
    frame = _select_split(frame, split, manifest_csv, notes)
    attributes = manifest_attrs + list(renamed.values())
    return frame.reset_index(drop=True), attributes, class_names, notes


def per_class_table(frame: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """`accuracy_summary` per true class, with a ``class_name`` column."""
    table = accuracy_summary(frame, by="label").rename(columns={"label": "class"})
    table.insert(1, "class_name", [class_name(class_names, int(c)) for c in table["class"]])
    return table


def _format_edge(value: float) -> str:
    """A bin edge with four significant digits."""
    return f"{value:.4g}"


def _numeric_table(sub: pd.DataFrame, values: pd.Series, n_bins: int) -> pd.DataFrame:
    """`accuracy_summary` per quantile bin of ``values``, with value, bin_lo and bin_hi."""
    sub["group"] = pd.qcut(values.astype(np.float64), q=n_bins, duplicates="drop")
    table = accuracy_summary(sub, by="group")
    intervals = pd.IntervalIndex(table["group"])
    table.insert(0, "bin_hi", intervals.right.to_numpy(dtype=np.float64))
    table.insert(0, "bin_lo", intervals.left.to_numpy(dtype=np.float64))
    # qcut lowers the first edge by 0.1% of the range; report the data's own min
    table.loc[table.index[0], "bin_lo"] = float(values.min())
    table.insert(0, "value", [f"{_format_edge(lo)}–{_format_edge(hi)}" for lo, hi
                              in zip(table["bin_lo"], table["bin_hi"])])
    return table


def _categorical_table(sub: pd.DataFrame, values: pd.Series) -> pd.DataFrame:
    """`accuracy_summary` per value of ``values``, with value and NaN bin edges."""
    sub["group"] = values
    table = accuracy_summary(sub, by="group")
    table.insert(0, "bin_hi", np.nan)
    table.insert(0, "bin_lo", np.nan)
    table.insert(0, "value", table["group"].astype(str))
    return table


def per_attribute_table(frame: pd.DataFrame, attributes: Sequence[str], n_bins: int,
                        max_categories: int) -> tuple[pd.DataFrame, list[str]]:
    """Accuracy per attribute value (categorical) or quantile bin (numeric).

    Returns ``(table, notes)``; table columns: attribute, kind
    ("categorical" / "numeric"), value (the value, or the bin as "lo–hi"),
    bin_lo, bin_hi (NaN for values), then the `accuracy_summary` columns.
    """
    if n_bins < 1:
        raise ValueError(f"performance.n_bins must be >= 1, got {n_bins}")
    tables, notes = [], []
    for attr in attributes:
        values = frame[attr]
        known = values.notna()
        if not known.all():
            notes.append(f"{attr}: {int((~known).sum())} row(s) without a value are left out.")
        sub = frame.loc[known, ["top1", "top5"]].copy()
        values = values[known]
        if values.empty:
            notes.append(f"{attr}: no values; skipped.")
            continue
        numeric = (pd.api.types.is_numeric_dtype(values)
                   and not pd.api.types.is_bool_dtype(values))
        distinct = values.nunique()
        if numeric and distinct > n_bins:
            table, kind = _numeric_table(sub, values, n_bins), "numeric"
        elif distinct > max_categories:
            notes.append(f"{attr}: {distinct} distinct values > max_categories="
                         f"{max_categories}; skipped.")
            continue
        else:
            table, kind = _categorical_table(sub, values), "categorical"
        table = table.drop(columns="group")
        table.insert(0, "kind", kind)
        table.insert(0, "attribute", attr)
        tables.append(table)
    columns = ["attribute", "kind", "value", "bin_lo", "bin_hi", "n"] + [
        f"{m}{s}" for m in _METRICS for s in ("", "_lo", "_hi")]
    if not tables:
        return pd.DataFrame(columns=columns), notes
    return pd.concat(tables, ignore_index=True)[columns], notes


def confusion_table(frame: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """Counts of (true class, top-1 prediction).

    Rows: the true classes that occur; columns: those classes followed by any
    other predicted class (so the matrix is square when the model only
    predicts classes that occur). Labels are class names.
    """
    from sklearn.metrics import confusion_matrix

    true_classes = sorted(set(frame["label"].astype(int)))
    extra = sorted(set(frame["pred"].astype(int)) - set(true_classes))
    classes = true_classes + extra
    counts = confusion_matrix(frame["label"], frame["pred"], labels=classes)
    names = [class_name(class_names, c) for c in classes]
    return pd.DataFrame(counts[:len(true_classes)],
                        index=pd.Index(names[:len(true_classes)], name="true"),
                        columns=pd.Index(names, name="predicted"))


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
        for m in _METRICS:
            cells.append(f"{_pct(row[m])} ({_pct(row[m + '_lo'])}–{_pct(row[m + '_hi'])})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_markdown(path: Path, overall: pd.DataFrame, per_class: pd.DataFrame,
                    per_attribute: pd.DataFrame, notes: Sequence[str], split: str,
                    max_class_rows: int = 40) -> None:
    """``tables.md``: the three tables in Markdown, long class lists cut to the extremes, notes."""
    parts = ["# Accuracy", "", f"Evaluated rows: split = {split!r}. Intervals: Wilson 95%.", "",
             "## Overall", "", _markdown(overall, ["split"]), "", "## Per class", ""]
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
        parts += ["No attributes.", ""]
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
            cfg: PerformanceConfig) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The overall, per-class, per-attribute and confusion tables, and the attribute notes."""
    overall = accuracy_summary(frame)
    overall.insert(0, "split", cfg.split)
    per_class = per_class_table(frame, class_names)
    per_attribute, notes = per_attribute_table(frame, attributes, n_bins=int(cfg.n_bins),
                                               max_categories=int(cfg.max_categories))
    confusion = confusion_table(frame, class_names)
    return {"overall": overall, "per_class": per_class, "per_attribute": per_attribute,
            "confusion": confusion}, notes


def run_performance(shard_paths: Sequence[str | os.PathLike], manifest_csv: str | os.PathLike,
                    cfg: PerformanceConfig, *, overall: str | os.PathLike,
                    per_class: str | os.PathLike, per_attribute: str | os.PathLike,
                    tables: str | os.PathLike, confusion: str | os.PathLike,
                    confusion_plot: str | os.PathLike,
                    plots: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """Compute the accuracy tables and write them, each at the path it is given.

    ``cfg`` is the validated ``performance`` section (split, n_bins,
    max_categories, exclude). Outputs: ``overall``, ``per_class``,
    ``per_attribute`` and ``confusion`` (CSV), ``tables`` (Markdown),
    ``confusion_plot`` (PNG) and the folder ``plots`` holding one
    ``<attribute>.png`` per attribute table. Returns the tables by name
    (overall, per_class, per_attribute, confusion).
    """
    frame, attributes, class_names, notes = load_predictions(shard_paths, manifest_csv,
                                                             cfg.split)
    exclude = set(cfg.exclude)
    unknown = sorted(exclude - set(attributes))
    if unknown:
        raise ValueError(f"performance.exclude: {unknown} are not attributes; "
                         f"valid choices: {attributes}")
    attributes = [a for a in attributes if a not in exclude]
    if frame.empty:
        raise ValueError(f"no labelled images to evaluate in {manifest_csv} with split "
                         f"{cfg.split!r}; performance needs labels (label >= 0)")
    result, attr_notes = _tables(frame, attributes, class_names, cfg)
    notes = notes + attr_notes
    for note in notes:
        logger.info("%s", note)

    _write_csv(result["overall"], overall)
    _write_csv(result["per_class"], per_class)
    _write_csv(result["per_attribute"], per_attribute)
    _write_csv(result["confusion"], confusion, index=True)
    _write_markdown(tables, result["overall"], result["per_class"], result["per_attribute"],
                    notes, cfg.split)
    _plot_confusion(result["confusion"], confusion_plot)
    Path(plots).mkdir(parents=True, exist_ok=True)
    for attr, table in result["per_attribute"].groupby("attribute", sort=False):
        _plot_attribute(table, str(attr), Path(plots) / f"{_safe_name(attr)}.png")
    return result
