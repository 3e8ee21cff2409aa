"""Invariance of the features to vertical translation, scale and rotation (Zeiler & Fergus Fig. 5).

For a seeded sample of images, each original image is transformed by a sweep
of amounts per transform (`convscope.explain.transforms.transform_image`, on the
ORIGINAL image, then the run's preprocessing), and all copies of one image go
through the model together (in batches of ``explain.batch_size``). At each
chosen layer the distance between the original's and the copy's feature
vectors (the layer's whole output, flattened) is

    d = ||f(T x) - f(x)||_2 / ||f(x)||_2

i.e. the Euclidean distance of Zeiler & Fergus normalised by the original's
feature norm, so layers of different size and scale share one axis (0 = the
same features; NaN when the original's features are all zero). The true-class
probability of each copy is kept too (the top-1 class of the original for an
unlabelled image; column ``target_is_label``).

Outputs: ``curves.csv`` (`CURVE_COLUMNS`), one PNG per transform (per-image
curves in grey and their mean in colour, one panel per layer plus the
probability), and ``summary.json`` for the report.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from convscope.analysis.common import save_figure
from convscope.config.counts import clip_count
from convscope.config.sections import InvarianceConfig, ModelConfig, PreprocessConfig
from convscope.data.manifest import read_manifest
from convscope.data.preprocess import to_model_input
from convscope.explain.forward import chosen_layers, layer_outputs
from convscope.explain.sample import read_sample
from convscope.explain.transforms import IDENTITY, TRANSFORMS, transform_image
from convscope.nn.models import load_stage_model
from convscope.store.atomic import write_text
from convscope.store.summary import figure_entry, write_summary

__all__ = ["CURVE_COLUMNS", "transform_amounts", "normalised_distances", "invariance_curves",
           "plot_transform", "run_explain_invariance"]

logger = logging.getLogger(__name__)

CURVE_COLUMNS = ["index", "target", "target_is_label", "transform", "amount", "unit", "layer",
                 "distance", "probability"]


def transform_amounts(section: InvarianceConfig) -> dict[str, np.ndarray]:
    """Transform -> sorted amounts: ``amounts_per_transform`` evenly spaced over the range,
    plus the identity."""
    ranges = {"vertical_translation": section.translate_px, "scale": section.scale,
              "rotation": section.rotation_degrees}
    amounts = {}
    for kind, (low, high) in ranges.items():
        sweep = np.linspace(float(low), float(high), int(section.amounts_per_transform))
        amounts[kind] = np.unique(np.append(np.round(sweep, 6), IDENTITY[kind]))
    return amounts


def normalised_distances(original: torch.Tensor, copies: torch.Tensor) -> np.ndarray:
    """``||copy - original|| / ||original||`` over all feature entries.

    Args:
        original: (...) one image's layer output.
        copies: (M, ...) the transformed copies' outputs at the same layer.
    Returns:
        (M,) float64; NaN when the original's output is all zero.
    """
    flat = original.reshape(-1).double()
    diffs = copies.reshape(len(copies), -1).double() - flat
    norm = float(flat.norm())
    if norm == 0.0:
        return np.full(len(copies), np.nan)
    return (diffs.norm(dim=1) / norm).numpy()


def invariance_curves(model, images: Sequence[np.ndarray], indices: Sequence[int],
                      labels: Sequence[int], layers: Sequence[str],
                      amounts: Mapping[str, np.ndarray], preprocess: PreprocessConfig,
                      batch_size: int, device: torch.device) -> pd.DataFrame:
    """The `CURVE_COLUMNS` table: every image x transform x amount x layer.

    Args:
        images: (H, W, 3) uint8 original images.
        indices, labels: their manifest rows and class ids (-1 = unlabelled).
        amounts: transform -> amounts (`transform_amounts`).
    """
    records = []
    plan = [(kind, float(a)) for kind, values in amounts.items() for a in values]
    for image, index, label in tqdm(list(zip(images, indices, labels)), desc="invariance",
                                    unit="image"):
        copies = [image] + [transform_image(image, kind, amount) for kind, amount in plan]
        outputs, probs = layer_outputs(model, to_model_input(copies, preprocess), layers,
                                       batch_size, device, key="explain.invariance.layers")
        target = int(label) if label >= 0 else int(probs[0].argmax())
        distances = {name: normalised_distances(outputs[name][0], outputs[name][1:])
                     for name in layers}
        for j, (kind, amount) in enumerate(plan):
            for name in layers:
                records.append((int(index), target, bool(label >= 0), kind, amount,
                                TRANSFORMS[kind], name, float(distances[name][j]),
                                float(probs[j + 1, target])))
    return pd.DataFrame.from_records(records, columns=CURVE_COLUMNS)


def plot_transform(curves: pd.DataFrame, kind: str, layers: Sequence[str],
                   path: str | os.PathLike) -> None:
    """One PNG: a panel per layer (distance vs amount) and one of the true-class probability;
    thin grey lines per image, the mean in colour."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = curves[curves["transform"] == kind]
    panels = [(name, "distance", f"{name}: normalised distance") for name in layers]
    panels.append((layers[0], "probability", "true-class probability"))
    fig = Figure(figsize=(3.0 * len(panels), 2.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (layer, column, title) in zip(axes, panels):
        layer_rows = rows[rows["layer"] == layer]
        for _, image_rows in layer_rows.groupby("index"):
            ax.plot(image_rows["amount"], image_rows[column], color="0.7", linewidth=0.8)
        mean = layer_rows.groupby("amount")[column].mean()
        ax.plot(mean.index, mean.values, color="tab:red", linewidth=2.0, label="mean")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"{kind.replace('_', ' ')} ({TRANSFORMS[kind]})", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    save_figure(fig, path)


def _write_summary(curves: pd.DataFrame, figures: Mapping[str, str], curves_csv: str,
                   summary_json: str, n_images: int) -> dict:
    base = Path(summary_json).parent
    return write_summary(
        summary_json, "explain_invariance", "Invariance to translation, scale and rotation",
        ("Each sampled image is translated vertically, scaled and rotated (the original "
         "image, before preprocessing). Curves show, per layer, the Euclidean distance "
         "between the original's and the transformed image's features divided by the "
         "original's feature norm (0 = unchanged), and the true-class probability; "
         "grey: one image, red: the mean (Zeiler & Fergus 2013, Fig. 5)."),
        numbers=[("images", n_images), ("layers", ", ".join(curves["layer"].unique()))],
        figures=[figure_entry(path, base, kind.replace("_", " "),
                              "feature distance and true-class probability vs "
                              + kind.replace("_", " "))
                 for kind, path in figures.items()],
        tables=[figure_entry(curves_csv, base, "invariance curves",
                             "one row per image, transform, amount and layer")])


def run_explain_invariance(model_cfg: ModelConfig, weights_file: str | os.PathLike | None,
                           section: InvarianceConfig, preprocess: PreprocessConfig,
                           layers: Sequence[str] | None, manifest_csv: str | os.PathLike, *,
                           device: str, batch_size: int, curves_csv: str,
                           figures: Mapping[str, str], summary_json: str) -> None:
    """The stage: sample, sweep, write ``curves_csv``, one figure per transform
    (``figures``: transform name -> PNG path, every key of `TRANSFORMS`) and ``summary_json``.

    ``section`` is ``explain.invariance``; ``device`` and ``batch_size`` are
    ``explain.device`` and ``explain.batch_size``; ``layers`` the analysed layers.
    """
    model, device = load_stage_model(model_cfg, weights_file, preprocess, device,
                                     key="explain.device")
    names = chosen_layers(model, section.layers, layers, "explain.invariance.layers")
    manifest, _ = read_manifest(manifest_csv)
    labelled = manifest[manifest["label"] >= 0]
    candidates = labelled if len(labelled) else manifest
    count = clip_count("explain.invariance.n_images", section.n_images, len(candidates),
                       "usable images")
    rows, images = read_sample(candidates, count, section.seed, "explain.invariance.n_images")
    curves = invariance_curves(model, images, rows["index"].tolist(), rows["label"].tolist(),
                               names, transform_amounts(section), preprocess,
                               batch_size, device)
    for kind in TRANSFORMS:
        plot_transform(curves, kind, names, figures[kind])
    write_text(curves_csv, curves.to_csv(index=False))
    _write_summary(curves, figures, curves_csv, summary_json, len(rows))
    logger.info("invariance: %d images, %d layers, %d rows", len(rows), len(names), len(curves))
