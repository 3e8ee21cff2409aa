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
from PIL import Image, ImageDraw

from convscope.analysis.common import class_name, duplicate_paths, save_figure, save_placeholder
from convscope.config.sections import PerformanceConfig
from convscope.data.manifest import MANIFEST_COLUMNS, read_manifest
from convscope.render.grids import caption_font, upscale_nearest
from convscope.render.mosaic import gather_thumbs
from convscope.store.atomic import atomic_path, save_image, write_text
from convscope.store.shards import iter_shards, open_shard, read_concat

__all__ = [
    "Z_95",
    "SPLIT_CHOICES",
    "wilson_interval",
    "accuracy_summary",
    "load_predictions",
    "per_class_table",
    "per_attribute_table",
    "confusion_table",
    "other_predictions",
    "compare_tables",
    "render_comparison_panel",
    "run_performance",
]

logger = logging.getLogger(__name__)

#: Two-sided 95% normal quantile.
Z_95 = 1.959963984540054
SPLIT_CHOICES = ("test", "all", "train")
_METRICS = ("top1", "top5")
#: Example images per disagreement kind in ``comparison_examples``.
EXAMPLES_PER_KIND = 5
_AGREEMENT = ("both_right", "only_model", "only_other", "both_wrong")
#: The disagreement kinds with example images, in the order of the panel's rows.
EXAMPLE_KINDS = _AGREEMENT[1:]


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
                        max_categories: int) -> tuple[pd.DataFrame, list[str], dict[str, str]]:
    """Accuracy per attribute value (categorical) or quantile bin (numeric).

    Returns ``(table, notes, constant)``: ``constant`` maps each attribute
    with a single value over the rows to that value (as text); such an
    attribute has no rows in the table and a note. Table columns: attribute, kind
    ("categorical" / "numeric"), value (the value, or the bin as "lo–hi"),
    bin_lo, bin_hi (NaN for values), then the `accuracy_summary` columns.
    """
    if n_bins < 1:
        raise ValueError(f"performance.n_bins must be >= 1, got {n_bins}")
    tables, notes, constant = [], [], {}
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
        if distinct == 1:
            constant[attr] = str(values.iloc[0])
            notes.append(f"{attr}: constant ({constant[attr]}) over the {len(values)} evaluated "
                         "image(s); no table.")
            continue
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
        return pd.DataFrame(columns=columns), notes, constant
    return pd.concat(tables, ignore_index=True)[columns], notes, constant


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


def other_predictions(values: pd.Series, column: str, class_names: Sequence[str]) -> np.ndarray:
    """Class ids (n,) int64 of another labeler's answers; -1 where there is no answer.

    ``values`` holds class ids (integers) or class names (text, mapped through
    ``class_names``); a missing value is "no answer". Anything else (an
    unknown name, a fraction, an id outside the classes) raises ``ValueError``
    naming the ``performance.compare_columns`` column, the values and what is valid.
    """
    key = f"performance.compare_columns: column {column!r}"
    ids = np.full(len(values), -1, dtype=np.int64)
    known = values.notna().to_numpy()
    present = values[known]
    n_names = len(class_names)
    if pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(present):
        numbers = present.to_numpy(dtype=np.float64)
        bad = sorted(set(numbers[(numbers != np.round(numbers)) | (numbers < 0)
                                 | ((numbers >= n_names) if n_names else False)].tolist()))
        if bad:
            raise ValueError(f"{key} holds {bad[:10]}, which are not class ids; valid: "
                             f"integers 0..{n_names - 1} or the class names "
                             f"{list(class_names)[:10]}")
        ids[known] = numbers.astype(np.int64)
        return ids
    id_of_name = {str(name): i for i, name in enumerate(class_names)}
    text = present.astype(str).str.strip()
    mapped = text.map(lambda v: id_of_name.get(v, int(v) if v.isdigit() and
                                               (not n_names or int(v) < n_names) else None))
    unknown = sorted(set(text[mapped.isna()]))
    if unknown:
        raise ValueError(f"{key} holds {unknown[:10]}, which are not class names of the manifest; "
                         f"valid: {list(class_names)[:20]} (or class ids 0..{n_names - 1})")
    ids[known] = mapped.to_numpy(dtype=np.int64)
    return ids


def compare_tables(frame: pd.DataFrame, others: dict[str, np.ndarray],
                   class_names: Sequence[str], attributes: Sequence[str] = (),
                   n_bins: int = 5, max_categories: int = 50) -> dict[str, pd.DataFrame]:
    """The model's top-1 side by side with other predictions of the same images.

    ``others`` maps a name to (len(frame),) class ids (-1 = no answer, from
    `other_predictions`). Each comparison uses the rows the other answered.
    Returns ``comparison`` (per other: overall, per class and per value or
    bin of each of ``attributes``, grouped as `per_attribute_table` does;
    n, model_top1 and other_top1 with Wilson 95% bounds), ``agreement`` (per other: n,
    both_right, only_model, only_other, both_wrong) and ``examples`` (up to
    `EXAMPLES_PER_KIND` rows per other and disagreement kind, by manifest row).
    """
    comparison, agreement, examples = [], [], []
    for other, ids in others.items():
        answered = ids >= 0
        sub = frame.loc[answered, ["index", "path", "label", "pred", "top1"]].copy()
        sub["other_pred"] = ids[answered]
        sub["other_top1"] = sub["other_pred"] == sub["label"]
        groups = [("overall", None, sub)] + [("class", int(c), g) for c, g in
                                              sub.groupby("label", sort=True)]
        for scope, cls, rows in groups:
            entry = {"other": other, "scope": scope, "class": -1 if cls is None else cls,
                     "class_name": "" if cls is None else class_name(class_names, cls),
                     "attribute": "", "value": "", "n": len(rows)}
            for who, hits in (("model", rows["top1"]), ("other", rows["other_top1"])):
                lo, hi = wilson_interval(int(hits.sum()), len(rows))
                entry[f"{who}_top1"] = float(hits.mean()) if len(rows) else float("nan")
                entry[f"{who}_top1_lo"], entry[f"{who}_top1_hi"] = float(lo), float(hi)
            comparison.append(entry)
        comparison += _compare_by_attribute(other, sub, frame.loc[answered, list(attributes)],
                                            n_bins, max_categories)
        kind = np.select([sub["top1"] & sub["other_top1"], sub["top1"] & ~sub["other_top1"],
                          ~sub["top1"] & sub["other_top1"]], list(_AGREEMENT[:3]), _AGREEMENT[3])
        sub["kind"] = kind
        agreement.append({"other": other, "n": len(sub),
                          **{k: int((kind == k).sum()) for k in _AGREEMENT}})
        for k in EXAMPLE_KINDS:
            picked = sub[sub["kind"] == k].sort_values("index").head(EXAMPLES_PER_KIND)
            for row in picked.to_dict("records"):
                examples.append({
                    "other": other, "kind": k, "index": int(row["index"]), "path": row["path"],
                    "label": class_name(class_names, row["label"]),
                    "model_pred": class_name(class_names, row["pred"]),
                    "other_pred": class_name(class_names, row["other_pred"])})
    columns = {
        "comparison": ["other", "scope", "class", "class_name", "attribute", "value", "n"] + [
            f"{w}_top1{s}" for w in ("model", "other") for s in ("", "_lo", "_hi")],
        "agreement": ["other", "n", *_AGREEMENT],
        "examples": ["other", "kind", "index", "path", "label", "model_pred", "other_pred"],
    }
    rows = {"comparison": comparison, "agreement": agreement, "examples": examples}
    return {name: pd.DataFrame(rows[name], columns=cols) for name, cols in columns.items()}


def _compare_by_attribute(other: str, paired: pd.DataFrame, attrs: pd.DataFrame, n_bins: int,
                          max_categories: int) -> list[dict]:
    """Comparison rows per attribute value or bin, on the images ``other`` answered."""
    if attrs.empty or not len(attrs.columns):
        return []
    # per_attribute_table groups two boolean columns: the model's hits go in as
    # "top1" and the other's as "top5", so both share the same bins.
    both = attrs.assign(top1=paired["top1"].to_numpy(), top5=paired["other_top1"].to_numpy())
    table, _, _ = per_attribute_table(both, list(attrs.columns), n_bins, max_categories)
    rows = []
    for row in table.to_dict("records"):
        entry = {"other": other, "scope": "attribute", "class": -1, "class_name": "",
                 "attribute": row["attribute"], "value": row["value"], "n": int(row["n"])}
        for who, metric in (("model", "top1"), ("other", "top5")):
            for suffix in ("", "_lo", "_hi"):
                entry[f"{who}_top1{suffix}"] = float(row[metric + suffix])
        rows.append(entry)
    return rows


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
        parts.append("| " + " | ".join(str(row[c]) for c in ("other", "n", *_AGREEMENT)) + " |")
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


#: Geometry of the comparison panel, in pixels (see `render_comparison_panel`).
PANEL_MIN_TILE_PX = 80
PANEL_PAD = 4
PANEL_LABEL_W = 150
PANEL_TITLE_H = 24
PANEL_LINE_H = 12
PANEL_CAPTION_LINES = 3
_KIND_TEXT = {"only_model": "only the model right", "only_other": "only {other} right",
              "both_wrong": "both wrong"}
_RIGHT_RGB, _WRONG_RGB = (0, 120, 0), (190, 0, 0)


def panel_geometry(thumb_px: int) -> dict[str, int]:
    """Sizes in the comparison panel for thumbnails of side ``thumb_px``.

    ``factor``: the thumbnails are enlarged by pixel repetition with the
    smallest integer factor that reaches `PANEL_MIN_TILE_PX` (1 for large
    thumbnails); ``tile`` = thumb_px * factor; ``cell_w`` = tile + 2 pad;
    ``cell_h`` = tile + 3 pad + `PANEL_CAPTION_LINES` * `PANEL_LINE_H`;
    ``block_h`` = `PANEL_TITLE_H` + one ``cell_h`` per kind of
    `EXAMPLE_KINDS`; ``width`` = `PANEL_LABEL_W` + `EXAMPLES_PER_KIND` cells.
    """
    factor = max(1, math.ceil(PANEL_MIN_TILE_PX / thumb_px))
    tile = thumb_px * factor
    cell_w = tile + 2 * PANEL_PAD
    cell_h = tile + 3 * PANEL_PAD + PANEL_CAPTION_LINES * PANEL_LINE_H
    return {"factor": factor, "tile": tile, "cell_w": cell_w, "cell_h": cell_h,
            "block_h": PANEL_TITLE_H + len(EXAMPLE_KINDS) * cell_h,
            "width": PANEL_LABEL_W + EXAMPLES_PER_KIND * cell_w}


def _fit(draw, text: str, font, width: int) -> str:
    """``text`` cut (with an ellipsis) to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def render_comparison_panel(examples: pd.DataFrame, agreement: pd.DataFrame,
                            thumbs: dict[int, np.ndarray]):
    """The example images of each disagreement kind, one block per compared column.

    ``examples`` and ``agreement`` are `compare_tables`' tables (``examples``
    may be read back from its CSV: ``label``, ``model_pred`` and
    ``other_pred`` are class names); ``thumbs`` maps a manifest index to its
    (t, t, 3) uint8 thumbnail (all of one size). Layout (sizes from
    `panel_geometry`): block ``b`` (the ``b``-th row of ``agreement``) starts
    at y = b * block_h with a title line of `PANEL_TITLE_H`; its row ``k``
    (kind ``EXAMPLE_KINDS[k]``, named at the left with its count) starts at
    y = b * block_h + `PANEL_TITLE_H` + k * cell_h; its ``j``-th example (in
    the order of ``examples``) is the thumbnail enlarged by pixel repetition
    at (x, y) = (`PANEL_LABEL_W` + j * cell_w + pad, row top + pad), captioned
    below with the true class, the model's answer and the other's (named
    "other" when the column's name is longer than 8 characters; an answer
    in green when right, red when wrong); cells without an example stay
    white. Returns an RGB PIL image on white.
    """
    if not thumbs:
        raise ValueError("render_comparison_panel: no thumbnails to draw")
    geo = panel_geometry(int(next(iter(thumbs.values())).shape[0]))
    tile, cell_w, cell_h, block_h = geo["tile"], geo["cell_w"], geo["cell_h"], geo["block_h"]
    canvas = Image.new("RGB", (geo["width"], max(1, len(agreement)) * block_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font, title_font = caption_font(10), caption_font(13)
    for b, row in enumerate(agreement.to_dict("records")):
        other, top = str(row["other"]), b * block_h
        if b:
            draw.line([(0, top), (geo["width"], top)], fill=(160, 160, 160))
        draw.text((PANEL_PAD, top + 5),
                  _fit(draw, f"model vs {other} ({row['n']} image(s) both answered)",
                       title_font, geo["width"] - 2 * PANEL_PAD),
                  fill=(0, 0, 0), font=title_font)
        mine = examples[examples["other"].astype(str) == other]
        who_other = other if len(other) <= 8 else "other"  # room for the answer
        for k, kind in enumerate(EXAMPLE_KINDS):
            y = top + PANEL_TITLE_H + k * cell_h
            label = _KIND_TEXT[kind].format(other=other)
            lines = [_fit(draw, label, font, PANEL_LABEL_W - 2 * PANEL_PAD),
                     f"{row[kind]} of {row['n']} images"]
            draw.multiline_text((PANEL_PAD, y + PANEL_PAD), "\n".join(lines), fill=(0, 0, 0),
                                font=font, spacing=3)
            shown = mine[mine["kind"] == kind].head(EXAMPLES_PER_KIND)
            for j, ex in enumerate(shown.to_dict("records")):
                left = PANEL_LABEL_W + j * cell_w + PANEL_PAD
                draw.rectangle([left - 1, y + PANEL_PAD - 1, left + tile, y + PANEL_PAD + tile],
                               outline=(60, 60, 60))
                image = upscale_nearest(np.asarray(thumbs[int(ex["index"])], np.uint8),
                                        geo["factor"])
                canvas.paste(Image.fromarray(np.ascontiguousarray(image)),
                             (left, y + PANEL_PAD))
                truth = str(ex["label"])
                caption = [(f"true: {truth}", (0, 0, 0))] + [
                    (f"{who}: {answer}", _RIGHT_RGB if str(answer) == truth else _WRONG_RGB)
                    for who, answer in (("model", ex["model_pred"]), (who_other, ex["other_pred"]))]
                for i, (text, colour) in enumerate(caption):
                    draw.text((left, y + 2 * PANEL_PAD + tile + i * PANEL_LINE_H),
                              _fit(draw, text, font, cell_w - PANEL_PAD), fill=colour, font=font)
    return canvas


def _thumbs_by_index(shard_paths: Sequence, indices: Sequence[int]) -> dict[int, np.ndarray]:
    """Thumbnails of the given manifest indices (each must be in a shard), by index."""
    wanted = sorted({int(i) for i in indices})
    if not wanted:
        return {}
    shard_index = read_concat(shard_paths, "index").astype(np.int64)
    position = pd.Series(np.arange(len(shard_index)), index=shard_index)
    position = position[~position.index.duplicated()]
    rows = position.loc[wanted].to_numpy(dtype=np.int64)
    return dict(zip(wanted, gather_thumbs(shard_paths, rows)))


def _write_comparison_panel(path, shard_paths: Sequence, compare_columns: Sequence[str],
                            compared: dict[str, pd.DataFrame]) -> None:
    """The comparison panel at ``path``, or a small placeholder saying why there is none."""
    examples, agreement = compared["examples"], compared["agreement"]
    if not len(compare_columns):
        save_placeholder(path, "No comparison columns configured (performance.compare_columns)")
    elif examples.empty:
        save_placeholder(path, f"No disagreement to show: on the images they answered, "
                               f"{', '.join(map(str, compare_columns))} and the model are both "
                               "right, or no labelled image was answered")
    else:
        save_image(path, render_comparison_panel(
            examples, agreement, _thumbs_by_index(shard_paths, examples["index"])))


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
    result.update(compared)
    notes = notes + attr_notes
    level = logging.WARNING if frame.empty else logging.INFO
    for note in notes:
        logger.log(level, "%s", note)

    _write_csv(result["overall"], overall)
    _write_csv(result["per_class"], per_class)
    _write_csv(result["per_attribute"], per_attribute)
    _write_csv(result["confusion"], confusion, index=True)
    _write_csv(compared["comparison"], comparison)
    _write_csv(compared["agreement"], agreement)
    _write_csv(compared["examples"], comparison_examples)
    _write_comparison_panel(comparison_panel, shard_paths, list(others), compared)
    _write_markdown(tables, result["overall"], result["per_class"], result["per_attribute"],
                    notes, cfg.split, constant, compared)
    if frame.empty:
        save_placeholder(confusion_plot, "No labelled images: no confusion matrix")
    else:
        _plot_confusion(result["confusion"], confusion_plot)
    Path(plots).mkdir(parents=True, exist_ok=True)
    for attr, table in result["per_attribute"].groupby("attribute", sort=False):
        _plot_attribute(table, str(attr), Path(plots) / f"{_safe_name(attr)}.png")
    return result
