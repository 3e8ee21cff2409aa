"""The ``probes`` stage: what can a linear read-out of each layer tell apart?

Per analysed layer, a logistic regression (scikit-learn ``LogisticRegression``
after ``StandardScaler``, L2 penalty ``C``) from the layer's per-channel spatial
mean (the shards' ``layers/<name>/mean``) to the class, and to every attribute
with at most ``max_categories`` distinct values (numeric attributes with many
values, such as positions, are not probed). Fitted on the manifest's ``train``
split and scored on its ``test`` split when it has both, else on a seeded
stratified split holding out ``test_fraction`` of the labelled images.

``probes.csv``: ``layer, target, accuracy, chance`` (``target`` is ``class`` or
the attribute's column; ``chance`` the held-out accuracy of always answering the
most frequent training value); ``probes.png``: accuracy per layer, one line per
target, chance dashed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from convscope.analysis.common import save_figure
from convscope.analysis.layer_names import select_shard_layers
from convscope.config.sections import ProbesConfig
from convscope.data.manifest import MANIFEST_COLUMNS, read_manifest
from convscope.store.atomic import write_text
from convscope.store.shards import iter_shards, layer_key, read_attrs
from convscope.store.summary import figure_entry, write_summary

__all__ = ["PROBE_COLUMNS", "probe_targets", "held_out", "probe_accuracy", "run_probes"]

logger = logging.getLogger(__name__)

PROBE_COLUMNS = ["layer", "target", "accuracy", "chance"]


def probe_targets(manifest: pd.DataFrame, max_categories: int) -> dict[str, pd.Series]:
    """``class`` (the label, -1 unknown -> missing) and each attribute with 2..max_categories
    values, as text; missing values stay missing."""
    label = manifest["label"]
    targets = {"class": label.astype(str).where(label >= 0)}
    for column in manifest.columns:
        if column in MANIFEST_COLUMNS:
            continue
        values = manifest[column]
        if 2 <= values.nunique(dropna=True) <= max_categories:
            targets[column] = values.astype(str).where(values.notna())
    return targets


def held_out(manifest: pd.DataFrame, labels: pd.Series, cfg: ProbesConfig) -> np.ndarray:
    """(n,) bool: the test rows among the rows where ``labels`` is known."""
    split = manifest["split"].astype(str)
    known = labels.notna().to_numpy()
    if {"train", "test"} <= set(split[known]):
        return (split == "test").to_numpy() & known
    rows = np.flatnonzero(known)
    counts = labels[known].value_counts()
    stratify = labels[known] if counts.min() >= 2 else None
    _, test = train_test_split(rows, test_size=cfg.test_fraction, random_state=cfg.seed,
                               stratify=stratify)
    out = np.zeros(len(manifest), bool)
    out[test] = True
    return out


def probe_accuracy(features: np.ndarray, labels: np.ndarray, train: np.ndarray,
                   test: np.ndarray, cfg: ProbesConfig) -> tuple[float, float]:
    """(held-out accuracy of the probe, of the most frequent training value); NaN when the
    training rows hold fewer than two values or there are no test rows."""
    if len(np.unique(labels[train])) < 2 or not test.any():
        return float("nan"), float("nan")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=cfg.C, max_iter=cfg.max_iter))
    probe.fit(features[train], labels[train])
    accuracy = float((probe.predict(features[test]) == labels[test]).mean())
    values, counts = np.unique(labels[train], return_counts=True)
    chance = float((labels[test] == values[np.argmax(counts)]).mean())
    return accuracy, chance


def _layer_means(shard_paths, layers) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    names = ["index"] + [f"layers/{layer_key(layer)}/mean" for layer in layers]
    parts = {name: [] for name in names}
    for chunk in iter_shards(shard_paths, names):
        for name in names:
            parts[name].append(chunk[name])
    index = np.concatenate(parts["index"])
    return index, {layer: np.concatenate(parts[f"layers/{layer_key(layer)}/mean"])
                   for layer in layers}


def _plot(table: pd.DataFrame, layers: Sequence[str], path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, (target, rows) in enumerate(table.groupby("target", sort=False)):
        colour = f"C{i % 10}"
        rows = rows.set_index("layer").reindex(layers)
        ax.plot(range(len(layers)), rows["accuracy"], marker="o", color=colour, label=target)
        ax.plot(range(len(layers)), rows["chance"], linestyle="--", color=colour, linewidth=0.8)
    ax.set_xticks(range(len(layers)), layers, rotation=60, fontsize=7)
    ax.set(ylim=(0, 1.02), ylabel="held-out accuracy", title="linear probes (dashed: chance)")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def run_probes(shard_paths: Sequence[str | os.PathLike], layers: Sequence[str] | None,
               cfg: ProbesConfig, manifest_csv, *, probes_csv, plot_png, summary_json) -> None:
    """The stage: a probe per layer and target; the table, the figure and ``summary.json``."""
    shard_paths = [os.fspath(p) for p in shard_paths]
    if not shard_paths:
        raise ValueError("run_probes: no shards given")
    layers = select_shard_layers(read_attrs(shard_paths[0]), layers, key="layers",
                                 source=f"shard {shard_paths[0]}")
    manifest, _ = read_manifest(manifest_csv)
    index, features = _layer_means(shard_paths, layers)
    manifest = manifest.set_index("index").loc[index].reset_index()
    finite = np.all([np.isfinite(v).all(axis=1) for v in features.values()], axis=0)
    records, notes = [], []
    for target, labels in probe_targets(manifest, cfg.max_categories).items():
        labels = labels.where(finite)
        test = held_out(manifest, labels, cfg)
        train = labels.notna().to_numpy() & ~test
        values = labels.fillna("").to_numpy(str)
        for layer in layers:
            accuracy, chance = probe_accuracy(features[layer], values, train, test, cfg)
            records.append((layer, target, accuracy, chance))
        if not np.isfinite(records[-1][2]):
            notes.append(target)
    table = pd.DataFrame.from_records(records, columns=PROBE_COLUMNS)
    write_text(probes_csv, table.to_csv(index=False, float_format="%.6g"))
    _plot(table, layers, plot_png)
    logger.info("probes: %d layers x %d targets", len(layers), table["target"].nunique())
    root = Path(summary_json).parent
    split = ("the manifest's train / test split" if {"train", "test"} <= set(manifest["split"])
             else f"a seeded stratified split ({cfg.test_fraction:g} held out)")
    write_summary(
        summary_json, "probes", "Linear probes",
        ("What a linear read-out of each layer can tell apart: a logistic regression from "
         "the layer's per-channel spatial mean to the class and to each categorical "
         f"attribute, fitted and scored on {split}. Dashed: always answering the most "
         "frequent value. Rising curves: the network makes the target linearly readable "
         "as it goes deeper."),
        numbers=[("layers", ", ".join(layers)), ("targets", ", ".join(dict.fromkeys(
            table["target"]))), ("images", int(finite.sum())),
            ("targets not probed (one value in training, or no held-out image)",
             ", ".join(notes) or "none")],
        figures=[figure_entry(plot_png, root, "Probe accuracy per layer")],
        tables=[figure_entry(probes_csv, root, "Probe accuracy", "layer, target, accuracy, "
                             "chance")])
