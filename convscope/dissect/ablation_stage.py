"""The ablation stage: per analysed layer, each unit zeroed in turn on held-out images.

Writes, per layer, ``<layer>.csv`` (`ABLATION_COLUMNS`: unit, class, delta_accuracy,
delta_logit), ``curves.csv`` (remove-top-N and keep-only-top-N balanced accuracy per
class) with ``curves.png``, ``units.csv`` (each ablated unit's concept label from the
dissect stage when it ran, its top images from ``units/topk.csv``, and the classes whose
balanced accuracy drops most without it) and ``summary.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from convscope.analysis.common import save_figure
from convscope.config.counts import clip_count
from convscope.config.sections import AblationConfig, ModelConfig, PreprocessConfig
from convscope.data.manifest import read_manifest
from convscope.data.preprocess import to_model_input
from convscope.data.sample import readable_sample
from convscope.dissect.ablation import LayerAblator, class_curves, unit_effects
from convscope.explain.forward import chosen_layers
from convscope.nn.models import load_stage_model
from convscope.store.atomic import write_text
from convscope.store.summary import figure_entry, write_summary
from convscope.store.tables import read_table

__all__ = ["ABLATION_COLUMNS", "CURVE_COLUMNS", "held_out_sample", "run_ablation"]

logger = logging.getLogger(__name__)

ABLATION_COLUMNS = ["unit", "class", "delta_accuracy", "delta_logit"]
CURVE_COLUMNS = ["layer", "class", "mode", "n_units", "balanced_accuracy", "baseline"]
HELD_OUT_SPLITS = ("test", "val", "validation")


def held_out_sample(manifest_csv, section: AblationConfig):
    """(rows, images, class names, what was used): a seeded sample of the labelled images
    of a held-out split, or of all labelled images when there is none."""
    manifest, names = read_manifest(manifest_csv)
    labelled = manifest[manifest["label"] >= 0]
    if not len(labelled):
        raise ValueError("ablation needs labelled images; the manifest has none")
    held = labelled[labelled["split"].isin(HELD_OUT_SPLITS)]
    note = "held-out split (" + ", ".join(sorted(held["split"].unique())) + ")"
    if not len(held):
        held, note = labelled, "all labelled images (the manifest has no test/val split)"
    rows, images = readable_sample(held.reset_index(drop=True), int(section.n_images),
                                   int(section.seed))
    if not images:
        raise ValueError("ablation: none of the held-out images could be read")
    clip_count("ablation.n_images", int(section.n_images), len(images), "readable held-out images")
    return rows, images, names, note


def _ablated_units(ablator: LayerAblator, section: AblationConfig) -> list[int]:
    count = ablator.channels if section.units is None else min(int(section.units),
                                                               ablator.channels)
    if section.ranking == "index":
        return list(range(count))
    mean = ablator.mean_activation.mean(dim=0).numpy()
    order = np.lexsort((np.arange(len(mean)), -mean))
    return sorted(int(u) for u in order[:count])


def _layer_table(units, delta_acc, delta_logit, names) -> pd.DataFrame:
    records = [(u, names[c], float(delta_acc[i, c]), float(delta_logit[i, c]))
               for i, u in enumerate(units) for c in range(len(names))
               if not np.isnan(delta_logit[i, c])]
    return pd.DataFrame.from_records(records, columns=ABLATION_COLUMNS)


def _check_closed_form(ablator: LayerAblator, units) -> float | None:
    """Max |closed form - forward pass| over the first units' logits; None without it."""
    if not ablator.closed_form:
        return None
    keep = torch.ones(min(8, len(units)), ablator.channels)
    keep[torch.arange(len(keep)), torch.as_tensor(units[:len(keep)])] = 0.0
    diff = float((ablator.logits(keep) - ablator.logits(keep, forward=True)).abs().max())
    scale = float(ablator.base.abs().max()) or 1.0
    if diff > 1e-4 * scale + 1e-5:
        raise RuntimeError(f"ablation: the closed form differs from the forward pass at "
                           f"{ablator.layer} by {diff:.3g}")
    return diff


def _needed_by(table: pd.DataFrame, unit: int, n: int = 3) -> str:
    rows = table[(table["unit"] == unit) & (table["delta_accuracy"] < 0)]
    rows = rows.sort_values(["delta_accuracy", "class"], kind="mergesort").head(n)
    return "; ".join(f"{r['class']} ({r['delta_accuracy']:+.3f})" for _, r in rows.iterrows())


def _units_table(tables, labels: Mapping[str, pd.DataFrame], topk_csv) -> pd.DataFrame:
    topk = read_table(topk_csv) if topk_csv and Path(topk_csv).exists() else None
    records = []
    for layer, table in tables.items():
        label = labels.get(layer)
        for unit in sorted(table["unit"].unique()):
            concept, iou = "", np.nan
            if label is not None and unit in set(label["unit"]):
                best = label[label["unit"] == unit].iloc[0]
                concept = "" if pd.isna(best["concept"]) else str(best["concept"])
                iou = float(best["iou"])
            top = "" if topk is None else ";".join(
                str(i) for i in topk[(topk["layer"] == layer) & (topk["channel"] == unit)]
                .sort_values("rank")["index"])
            records.append((layer, int(unit), concept, iou, top, _needed_by(table, unit)))
    return pd.DataFrame.from_records(records, columns=["layer", "unit", "concept", "iou",
                                                       "top_images", "needed_by"])


def plot_curves(curves: pd.DataFrame, path) -> None:
    """A panel per layer: per class, balanced accuracy after removing the top N units
    (solid) and keeping only them (dashed), N on a log axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layers = list(dict.fromkeys(curves["layer"])) or ["(none)"]
    fig = Figure(figsize=(3.4 * len(layers), 3.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(layers), squeeze=False)[0]
    colours = {}
    for ax, layer in zip(axes, layers):
        rows = curves[curves["layer"] == layer]
        for name, group in rows.groupby("class", sort=False):
            colour = colours.setdefault(name, f"C{len(colours) % 10}")
            for mode, style in (("remove", "-"), ("keep_only", "--")):
                part = group[group["mode"] == mode]
                ax.plot(part["n_units"], part["balanced_accuracy"], style, color=colour,
                        linewidth=1.0, label=name if mode == "remove" else None)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{layer}: remove (-) / keep only (--) top N", fontsize=8)
        ax.set_xlabel("N units", fontsize=8)
        ax.set_ylim(0.0, 1.02)
    axes[0].set_ylabel("class balanced accuracy", fontsize=8)
    axes[-1].legend(fontsize=6, ncol=2)
    save_figure(fig, path)


def _ablate_layer(model, inputs, labels, names, layer, section, device):
    ablator = LayerAblator(model, layer, inputs, int(section.batch_size), device)
    units = _ablated_units(ablator, section)
    delta_acc, delta_logit = unit_effects(ablator, units, labels, len(names))
    curves = class_curves(ablator, units, delta_logit, labels, len(names),
                          sorted(set(int(s) for s in section.curve_steps)))
    baseline = ablator.base.argmax(dim=1)
    accuracy = {c: float(((baseline[labels == c] == c).double().mean()
                          + (baseline[labels != c] != c).double().mean()) / 2)
                if (labels == c).any() and (labels != c).any() else np.nan
                for c in range(len(names))}
    curve_rows = [(layer, names[c], mode, n, acc, accuracy[c]) for c, mode, n, acc in curves]
    logger.info("ablation %s: %d units, %s", layer, len(units), ablator.method)
    return (_layer_table(units, delta_acc, delta_logit, names), curve_rows, ablator.method,
            _check_closed_form(ablator, units))


def run_ablation(model_cfg: ModelConfig, weights_file, section: AblationConfig,
                 preprocess: PreprocessConfig, layers: Sequence[str] | None, manifest_csv, *,
                 layer_csvs: Mapping[str, str], curves_csv: str, curves_png: str,
                 units_csv: str, summary_json: str, topk_csv=None,
                 dissect_summaries: Mapping[str, str] | None = None) -> None:
    """The stage. ``layer_csvs``: layer -> its table; ``dissect_summaries``: layer -> the
    dissect stage's ``summary.csv`` (concept labels), when that stage ran."""
    model, device = load_stage_model(model_cfg, weights_file, preprocess, section.device,
                                     key="ablation.device")
    names = chosen_layers(model, section.layers, layers, "ablation.layers")
    rows, images, classes, note = held_out_sample(manifest_csv, section)
    inputs = to_model_input(images, preprocess)
    labels = torch.as_tensor(rows["label"].to_numpy().copy(), dtype=torch.long)
    tables, curve_rows, methods, checks = {}, [], {}, {}
    for layer in names:
        tables[layer], rows_, methods[layer], checks[layer] = _ablate_layer(
            model, inputs, labels, classes, layer, section, device)
        curve_rows += rows_
        write_text(layer_csvs[layer], tables[layer].to_csv(index=False))
    curves = pd.DataFrame.from_records(curve_rows, columns=CURVE_COLUMNS)
    write_text(curves_csv, curves.to_csv(index=False))
    plot_curves(curves, curves_png)
    labels_by_layer = {layer: read_table(path, keep_default_na=False)
                       for layer, path in (dissect_summaries or {}).items() if Path(path).exists()}
    write_text(units_csv, _units_table(tables, labels_by_layer, topk_csv).to_csv(index=False))
    _write_summary(summary_json, layer_csvs, curves_csv, curves_png, units_csv, len(rows), note,
                   methods, checks, bool(labels_by_layer))


def _write_summary(summary_json, layer_csvs, curves_csv, curves_png, units_csv, n_images, note,
                   methods, checks, labelled) -> None:
    base = Path(summary_json).parent
    numbers = [("held-out images", n_images), ("images from", note)]
    for layer, method in methods.items():
        text = method
        if checks[layer] is not None:
            text += f"; checked against the forward pass: max |difference| {checks[layer]:.1e}"
        numbers.append((f"{layer}: logits by", text))
    tables = [figure_entry(units_csv, base, "units, their concept and the classes that need them",
                           "concept label (dissect stage" + ("" if labelled else ", not run")
                           + "), top images (manifest rows, units/topk.csv), and the classes "
                           "whose balanced accuracy drops most when the unit is zeroed")]
    tables += [figure_entry(path, base, f"{layer}: one unit zeroed",
                            "change of per-class balanced accuracy and class logit")
               for layer, path in layer_csvs.items()]
    tables.append(figure_entry(curves_csv, base, "curves", "remove / keep-only top N per class"))
    write_summary(summary_json, "ablation", "Causal ablation of units",
                  ("Each unit is zeroed in turn at its layer and the held-out images go through "
                   "the rest of the network: the change of each class's balanced accuracy "
                   "((recall + specificity) / 2) and of its logit on its own images "
                   "(Bau et al. 2020). Curves: balanced accuracy when the N units a class "
                   "needs most (largest logit drop) are removed, or are the only ones kept."),
                  numbers=numbers,
                  figures=[figure_entry(curves_png, base, "remove / keep-only curves",
                                        "per class: solid = top N removed, dashed = only "
                                        "top N kept")],
                  tables=tables)
