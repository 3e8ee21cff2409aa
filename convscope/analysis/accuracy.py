"""Top-1 / top-5 accuracy with 95% Wilson intervals: overall, per class, per attribute.

The table builders of `convscope.analysis.performance` (which selects the
rows and writes the files). Numeric attributes with more than ``n_bins``
distinct values are cut into ``n_bins`` quantile bins (``pd.qcut(...,
duplicates="drop")``, so ties may give fewer bins); other attributes are
grouped by value, and those with more than ``max_categories`` values are
skipped with a note. Rows missing an attribute are left out of that
attribute's table; an attribute with a single value gets no table.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from convscope.analysis.common import class_name

__all__ = [
    "Z_95",
    "wilson_interval",
    "accuracy_summary",
    "per_class_table",
    "per_attribute_table",
    "confusion_table",
]

#: Two-sided 95% normal quantile.
Z_95 = 1.959963984540054
METRICS = ("top1", "top5")

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
    for metric in METRICS:
        hits = grouped[f"{metric}_hits"].to_numpy(dtype=np.float64)
        n = out["n"].to_numpy(dtype=np.float64)
        lo, hi = wilson_interval(hits, n)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[metric] = np.where(n > 0, hits / n, np.nan)
        out[f"{metric}_lo"] = lo
        out[f"{metric}_hi"] = hi
    return out

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
        f"{m}{s}" for m in METRICS for s in ("", "_lo", "_hi")]
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
