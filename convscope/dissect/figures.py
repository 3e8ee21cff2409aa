"""Figures of the dissect stage: detectors by category, and the best units' top images
with their concept's mask (green) and the unit's thresholded region (red)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from convscope.analysis.common import save_figure
from convscope.data.images import load_image
from convscope.data.preprocess import prepare_uint8, to_model_input
from convscope.dissect.concepts import Concepts, image_stem
from convscope.dissect.dissection import prepared_masks
from convscope.nn.hooks import capture_tensors

__all__ = ["plot_detectors", "plot_units"]


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_detectors(tables: Mapping[str, pd.DataFrame], categories: Sequence[str], path) -> None:
    """Grouped bars: per layer, the number of detectors of each category."""
    fig = _figure(1.2 + 1.0 * len(tables) * max(1, len(categories)) * 0.4, 3.0)
    ax = fig.subplots()
    width = 0.8 / max(1, len(categories))
    for j, category in enumerate(categories):
        counts = [int(((t["category"] == category) & t["detector"]).sum()) for t in tables.values()]
        ax.bar(np.arange(len(tables)) + j * width, counts, width, label=category)
    ax.set_xticks(np.arange(len(tables)) + 0.4 - width / 2, list(tables))
    ax.set_ylabel("detectors")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def _overlay(image: np.ndarray, mask: np.ndarray | None, active: np.ndarray) -> np.ndarray:
    out = image.astype(np.float32) / 255.0
    if mask is not None:
        out[mask] = 0.5 * out[mask] + 0.5 * np.array([0.0, 1.0, 0.0])
    out[active] = 0.6 * out[active] + 0.4 * np.array([1.0, 0.0, 0.0])
    return out


@torch.no_grad()
def plot_units(model, rows: pd.DataFrame, concepts: Concepts, preprocess, layer: str,
               result, best: pd.DataFrame, section, device, path) -> None:
    """Rows: the ``section.figure_units`` units of highest IoU; columns: their
    ``section.top_images`` images of highest maximum activation."""
    order = best.sort_values(["iou", "unit"], ascending=[False, True], kind="mergesort")
    units = order["unit"].to_numpy()[:int(section.figure_units)]
    n_top = min(int(section.top_images), len(rows))
    fig = _figure(1.3 * n_top + 0.4, 1.4 * len(units) + 0.3)
    axes = fig.subplots(len(units), n_top, squeeze=False)
    names = {n: i for i, n in enumerate(concepts.names)}
    for r, unit in enumerate(units):
        label = best.loc[best["unit"] == unit].iloc[0]
        top = np.argsort(-result.image_max[:, unit], kind="stable")[:n_top]
        for c, position in enumerate(top):
            row = rows.iloc[int(position)]
            original = load_image(str(row["path"]), int(row["slot"]))
            image = prepare_uint8(original, preprocess)[..., :3]
            masks, _ = concepts.masks(image_stem(row["path"]), original.shape[:2])
            masks = prepared_masks(masks, preprocess)
            with capture_tensors(model, [layer], key="dissect.layers") as captured:
                model(to_model_input([original], preprocess).to(device))
                maps = captured[layer].float().cpu()
            up = F.interpolate(maps[:, unit:unit + 1], size=image.shape[:2], mode="bilinear",
                               align_corners=False)[0, 0].numpy()
            mask = masks.get(names.get(label["concept"], -1))
            ax = axes[r, c]
            ax.imshow(_overlay(image, mask, up > result.thresholds[unit]))
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"unit {unit}\n{label['concept'] or '-'} {label['iou']:.2f}",
                              fontsize=7)
    save_figure(fig, path)
