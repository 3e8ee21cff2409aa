"""Feature inversion (Mahendran & Vedaldi 2015): what an image's code still knows about it.

For an image ``x0`` and a layer ``phi``, `invert` finds the image ``x`` (0..1, pixel
parametrisation through a sigmoid, no random transforms) that minimises

    ||phi(x) - phi(x0)||^2 / ||phi(x0)||^2  +  tv_weight * TV^beta(x)
                                              +  alpha_weight * mean |x - 0.5|^alpha

with `convscope.synthesis.render.render` (which maximises, so the objective is the
negative loss). All images of one layer are inverted together in one batch.
`run_inversion` does it for a seeded sample of the dataset and every chosen layer and
writes ``inversion.h5`` (``rows``, ``originals`` (N, H, W, C) uint8, ``reconstructions``
(L, N, H, W, C) uint8, ``loss`` (L, N, steps), ``feature_loss`` (L, N) of the result and
``feature_loss_random`` (L, N) of a random image, ``layers``), a figure with the original
and the layers side by side per image, and ``summary.json``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from convscope.analysis.common import save_figure
from convscope.config.counts import clip_count
from convscope.config.sections import InversionConfig, ModelConfig, PreprocessConfig
from convscope.nn.hooks import capture_tensors
from convscope.nn.layers import check_layer_names
from convscope.nn.models import load_stage_model
from convscope.render.grids import to_uint8
from convscope.store.h5 import write_h5
from convscope.store.summary import figure_entry, write_summary
from convscope.synthesis.images import sample_images
from convscope.synthesis.objectives import alpha_norm, feature_match, total_variation
from convscope.synthesis.quality import (INVERSION_FACTOR, RULES, count_line, h5_arrays, judge,
                                         ordered, stored01, summary_entry)
from convscope.synthesis.render import Rendered, RenderSettings, render, to_model_space

__all__ = ["layer_features", "feature_loss", "invert", "run_inversion"]


@torch.no_grad()
def layer_features(model: nn.Module, layer: str, images01: torch.Tensor,
                   preprocess: PreprocessConfig) -> torch.Tensor:
    """``phi(x)``: the output of ``layer`` for (n, C, H, W) images in 0..1."""
    with capture_tensors(model, [layer], key="synthesis.inversion.layers", stop=True) as acts:
        model(to_model_space(images01, preprocess))
    return acts[layer]


def feature_loss(model: nn.Module, layer: str, images01: torch.Tensor, target: torch.Tensor,
                 preprocess: PreprocessConfig) -> np.ndarray:
    """(n,) ``||phi(x) - target||^2 / ||target||^2`` of (n, C, H, W) images in 0..1."""
    features = layer_features(model, layer, images01, preprocess)
    diff = (features - target).flatten(1).pow(2).sum(1)
    return (diff / target.flatten(1).pow(2).sum(1).clamp_min(1e-12)).cpu().numpy()


def invert(model: nn.Module, layer: str, images01: torch.Tensor, cfg: InversionConfig, *,
           preprocess: PreprocessConfig, seed: int, device) -> Rendered:
    """Reconstruct (n, C, H, W) images in 0..1 from their ``layer`` features; the curves
    are the negative loss at each step."""
    target = layer_features(model, layer, images01.to(device), preprocess)
    loss = feature_match(layer, target) + cfg.tv_weight * total_variation(cfg.tv_beta)
    if cfg.alpha_weight > 0:
        loss = loss + cfg.alpha_weight * alpha_norm(cfg.alpha)
    settings = RenderSettings(steps=cfg.steps, learning_rate=cfg.learning_rate,
                              parametrisation="pixels", decorrelate=False)
    return render(model, -loss, images01.shape[0], settings, preprocess=preprocess, seed=seed,
                  device=device, desc=f"inversion {layer}")


def _figure(path, originals: np.ndarray, reconstructions: np.ndarray, layers: Sequence[str],
            rows: np.ndarray) -> None:
    """Rows = images, columns = the original and each layer's reconstruction."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n, cols = len(originals), len(layers) + 1
    fig = Figure(figsize=(1.6 * cols, 1.7 * n), dpi=100)
    FigureCanvasAgg(fig)
    for i in range(n):
        for j in range(cols):
            image = originals[i] if j == 0 else reconstructions[j - 1, i]
            ax = fig.add_subplot(n, cols, i * cols + j + 1)
            ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image,
                      cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title("original" if j == 0 else layers[j - 1], fontsize=9)
            if j == 0:
                ax.set_ylabel(f"row {rows[i]}", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def run_inversion(model_cfg: ModelConfig, weights: str | os.PathLike | None,
                  preprocess: PreprocessConfig, cfg: InversionConfig, device_name: str,
                  seed: int, manifest_csv: str | os.PathLike, layers: Sequence[str] | None, *,
                  inversion_h5, figure_png, summary_json) -> dict:
    """Invert a seeded sample of images from each layer of ``cfg.layers`` (the
    ``synthesis.inversion`` section; null: ``layers``); writes the stage's files."""
    layers = list(cfg.layers or layers or [])
    if not layers:
        raise ValueError("config keys 'synthesis.inversion.layers' and 'layers' are both empty; "
                         "name the layers to invert from")
    model, device = load_stage_model(model_cfg, weights, preprocess, device_name,
                                     key="synthesis.device")
    check_layer_names(model, layers, key="synthesis.inversion.layers")
    rows, originals = sample_images(manifest_csv, cfg.n_images, seed, preprocess)
    clip_count("synthesis.inversion.n_images", cfg.n_images, len(rows), "readable images")
    images01 = torch.from_numpy(originals).permute(0, 3, 1, 2).float().div(255.0).to(device)
    random01 = torch.rand(images01.shape, generator=torch.Generator().manual_seed(
        seed)).to(device)
    recon, losses, final, at_random = [], [], [], []
    for layer in layers:
        rendered = invert(model, layer, images01, cfg, preprocess=preprocess,
                          seed=seed, device=device)
        target = layer_features(model, layer, images01, preprocess)
        recon.append(to_uint8(rendered.images))
        result = stored01(recon[-1]).to(device)  # judged as stored: 8-bit
        losses.append(-rendered.curves)
        final.append(feature_loss(model, layer, result, target, preprocess))
        at_random.append(feature_loss(model, layer, random01, target, preprocess))
    recon, final, at_random = np.stack(recon), np.stack(final), np.stack(at_random)
    verdicts = judge([f"{layer}, manifest row {int(r)}" for layer in layers for r in rows],
                     final.reshape(-1), at_random.reshape(-1), higher_is_better=False,
                     factor=INVERSION_FACTOR)
    write_h5(inversion_h5, {"rows": rows, "originals": originals, "reconstructions": recon,
                            "loss": np.stack(losses), "feature_loss": final,
                            "feature_loss_random": at_random, "layers": layers,
                            **h5_arrays(verdicts)}, {"rule": RULES["inversion"]})
    _figure(figure_png, originals, recon, layers, rows)
    numbers = [("images", len(rows)), ("steps", cfg.steps),
               ("reconstructions", count_line(verdicts))]
    numbers += [(f"feature loss at {layer} (random image)",
                 f"{final[i].mean():.3f} ({at_random[i].mean():.3f})")
                for i, layer in enumerate(layers)]
    return write_summary(
        summary_json, "synthesis_inversion", "Feature inversion",
        "Each row is one image of the dataset and what can be reconstructed from its "
        "representation at each layer alone (Mahendran & Vedaldi 2015): an image whose "
        "features match the original's, with a total-variation prior. Deeper layers keep less "
        "of the exact pixels and more of what the network finds relevant. The feature loss is "
        "||phi(x) - phi(x0)||^2 / ||phi(x0)||^2 (a random image's in brackets), on the stored "
        f"8-bit reconstruction; {RULES['inversion']}.",
        numbers=numbers,
        quality=[summary_entry("inversion", ordered(verdicts), "relative feature distance of "
                               "the stored reconstruction", "that of a random image")],
        figures=[figure_entry(figure_png, os.path.dirname(os.path.abspath(summary_json)),
                              "original and reconstructions",
                              "columns: the original, then the reconstruction from each layer")])
