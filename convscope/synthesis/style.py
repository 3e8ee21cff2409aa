"""Texture synthesis and style transfer from Gram matrices (Gatys et al. 2015, 2016).

A layer's Gram matrix ``G = F F^T / (H W)`` (``F``: its (C, H*W) feature map)
holds which channels fire together, wherever they are: a texture's
statistics without its layout. Texture synthesis starts from seeded uniform
noise and changes the pixels until the Gram matrices of ``style_layers``
match the example's; style transfer starts from the content image and
matches the content image's features at ``content_layers`` (weight
``content_weight``) and the style image's Gram matrices (``style_weight``).
Losses are mean squared differences, summed over layers.

The pixels (0..1 scale, `convscope.synthesis.images.PixelModel`) are
optimised with L-BFGS (torch.optim.LBFGS, strong-Wolfe line search, one
iteration per step, as Gatys et al.) or Adam (``optimiser``), and clamped to
0..1 after every step. Clamping can spoil L-BFGS's curvature history so that it
stops moving (torch's LBFGS then returns without a step); a step that leaves
the loss unchanged therefore restarts L-BFGS with an empty history. The loss functions are written here (a few lines of
torch); the optimisers are torch's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from convscope.config.sections import ModelConfig, PreprocessConfig, StyleConfig
from convscope.nn.hooks import capture_tensors
from convscope.store.atomic import write_text
from convscope.store.h5 import write_h5
from convscope.store.summary import figure_entry, write_summary
from convscope.synthesis.images import (PixelModel, check_rows, middle_layer, open_stage,
                                        read_pixels, rgb_uint8, sample_rows)
from convscope.synthesis.outputs import display_factor, save_picture, side_by_side
from convscope.synthesis.quality import (RULES, TEXTURE_FACTOR, Verdict, h5_arrays, judge,
                                         stored01, summary_entry)

__all__ = ["gram_matrix", "layer_features", "optimise_pixels", "texture_noise",
           "texture_quality", "synthesize_texture", "style_transfer", "run_style"]


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) features -> (N, C, C) Gram matrices ``F F^T / (H W)``."""
    flat = features.flatten(2)
    return flat @ flat.transpose(1, 2) / flat.shape[2]


def layer_features(model: PixelModel, layers: Sequence[str], pixels: torch.Tensor,
                   key: str) -> dict[str, torch.Tensor]:
    """The outputs of ``layers`` for (N, C, H, W) pixels, with their autograd graph."""
    with capture_tensors(model.inner, list(layers), detach=False, key=key,
                         stop=True) as got:
        model(pixels)
    return dict(got)


def optimise_pixels(start: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor],
                    style: StyleConfig, desc: str) -> tuple[torch.Tensor, np.ndarray]:
    """Minimise ``loss_fn(pixels)`` from ``start`` for ``style.steps`` steps, pixels kept in 0..1.

    Returns the pixels and the (steps,) loss before each step.
    """
    pixels = start.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)

    def make_optimiser():
        if style.optimiser == "lbfgs":
            return torch.optim.LBFGS([pixels], lr=1, max_iter=1, line_search_fn="strong_wolfe")
        return torch.optim.Adam([pixels], lr=style.learning_rate)

    optimiser = make_optimiser()
    curve = np.zeros(style.steps)

    def closure():
        optimiser.zero_grad()
        loss = loss_fn(pixels)
        loss.backward()
        return loss.detach()

    restarted = True
    for step in tqdm(range(style.steps), desc=desc, mininterval=5):
        curve[step] = float(optimiser.step(closure))  # the loss before this step
        stalled = step > 0 and curve[step] == curve[step - 1] and not restarted
        restarted = style.optimiser == "lbfgs" and stalled
        if restarted:
            optimiser = make_optimiser()  # restart without the curvature history
        with torch.no_grad():
            pixels.clamp_(0, 1)
    return pixels.detach(), curve


def _style_loss(model, layers, targets, pixels):
    feats = layer_features(model, layers, pixels, "synthesis.style.style_layers")
    return sum(torch.mean((gram_matrix(feats[n]) - targets[n]) ** 2) for n in layers)


def _gram_targets(model, style_layers, example) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        feats = layer_features(model, style_layers, example, "synthesis.style.style_layers")
        return {n: gram_matrix(feats[n]) for n in style_layers}


def texture_noise(example: torch.Tensor, seed: int) -> torch.Tensor:
    """The seeded uniform noise a texture starts from, shaped and placed like ``example``."""
    noise = torch.rand(example.shape, generator=torch.Generator().manual_seed(seed))
    return noise.to(example.device)


@torch.no_grad()
def texture_quality(model: PixelModel, example: torch.Tensor, texture_uint8: np.ndarray,
                    style_layers: Sequence[str], style: StyleConfig, seed: int) -> Verdict:
    """The texture's verdict (rule ``texture``): the weighted Gram loss of the stored (8-bit)
    texture against that of the starting noise (stored as 8 bits too)."""
    targets = _gram_targets(model, style_layers, example)
    noise = torch.round(texture_noise(example, seed) * 255) / 255
    stored = stored01(texture_uint8[None], example.shape[1]).to(example.device)
    losses = [float(style.style_weight * _style_loss(model, style_layers, targets, x))
              for x in (stored, noise)]
    return judge(["texture"], losses[0], losses[1], higher_is_better=False,
                 factor=1 / TEXTURE_FACTOR)[0]


def synthesize_texture(model: PixelModel, example: torch.Tensor, style_layers: Sequence[str],
                       style: StyleConfig, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """A texture like the (1, C, H, W) ``example``, from seeded noise: pixels and loss curve."""
    targets = _gram_targets(model, style_layers, example)
    noise = texture_noise(example, seed)
    return optimise_pixels(noise.to(example.device),
                           lambda x: style.style_weight * _style_loss(model, style_layers,
                                                                      targets, x),
                           style, "texture synthesis")


def style_transfer(model: PixelModel, content: torch.Tensor, style_image: torch.Tensor,
                   content_layers: Sequence[str], style_layers: Sequence[str],
                   style: StyleConfig) -> tuple[torch.Tensor, np.ndarray]:
    """The (1, C, H, W) ``content`` painted in the style of ``style_image``: pixels and
    loss curve (starts from the content image, so no randomness)."""
    with torch.no_grad():
        feats = layer_features(model, style_layers, style_image, "synthesis.style.style_layers")
        targets = {n: gram_matrix(feats[n]) for n in style_layers}
        keep = layer_features(model, content_layers, content, "synthesis.style.content_layers")

    def loss_fn(pixels):
        feats = layer_features(model, content_layers, pixels, "synthesis.style.content_layers")
        content_loss = sum(torch.mean((feats[n] - keep[n]) ** 2) for n in content_layers)
        return (style.content_weight * content_loss
                + style.style_weight * _style_loss(model, style_layers, targets, pixels))

    return optimise_pixels(content, loss_fn, style, "style transfer")


def _choose_rows(manifest: pd.DataFrame, style: StyleConfig, seed: int) -> dict[str, int]:
    """Manifest rows of the texture example, content and style image (seeded where null)."""
    drawn = list(sample_rows(manifest, 3, seed))
    drawn = drawn + drawn[:1] * (3 - len(drawn))
    rng = np.random.default_rng(seed)
    drawn = [int(r) for r in rng.permutation(drawn)]
    rows = {"texture_row": style.texture_row, "content_row": style.content_row,
            "style_row": style.style_row}
    for (key, row), fallback in zip(rows.items(), drawn):
        rows[key] = fallback if row is None else int(row)
        check_rows(manifest, [rows[key]], f"synthesis.style.{key}")
    return rows


def _loss_figure(path, curves: dict[str, np.ndarray]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from convscope.analysis.common import save_figure

    fig = Figure(figsize=(6, 3), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, curve in curves.items():
        ax.semilogy(np.arange(1, len(curve) + 1), np.maximum(curve, 1e-12), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def run_style(model_cfg: ModelConfig, weights_file: str | os.PathLike | None,
              preprocess: PreprocessConfig, style: StyleConfig, layers: Sequence[str],
              manifest_csv: str | os.PathLike, *, device: str, seed: int,
              texture_png: str | os.PathLike,
              transfer_png: str | os.PathLike, losses_png: str | os.PathLike,
              losses_csv: str | os.PathLike, h5_path: str | os.PathLike,
              summary_json: str | os.PathLike) -> dict[str, np.ndarray]:
    """The texture-and-style stage: texture from the example row, transfer of the style row
    onto the content row; writes the pictures, loss curves (PNG, CSV), HDF5 and summary.
    ``device`` and ``seed`` are ``synthesis.device`` and ``synthesis.seed``."""
    model, manifest, _ = open_stage(model_cfg, weights_file, preprocess, device, manifest_csv)
    style_layers = list(style.style_layers or layers)
    content_layers = list(style.content_layers or [middle_layer(layers)])
    rows = _choose_rows(manifest, style, seed)
    pixels = read_pixels(manifest, list(rows.values()), preprocess).to(model.scale.device)
    example, content, style_image = pixels[0:1], pixels[1:2], pixels[2:3]
    texture, texture_curve = synthesize_texture(model, example, style_layers, style, seed)
    transfer, transfer_curve = style_transfer(model, content, style_image, content_layers,
                                              style_layers, style)
    images = {"example": rgb_uint8(example)[0], "texture": rgb_uint8(texture)[0],
              "content": rgb_uint8(content)[0], "style": rgb_uint8(style_image)[0],
              "transfer": rgb_uint8(transfer)[0]}
    verdict = texture_quality(model, example, images["texture"], style_layers, style, seed)
    factor = display_factor(images["example"].shape[0])
    save_picture(texture_png, side_by_side([images["example"], images["texture"]]), factor)
    save_picture(transfer_png, side_by_side([images["content"], images["style"],
                                             images["transfer"]]), factor)
    curves = {"texture": texture_curve, "transfer": transfer_curve}
    _loss_figure(losses_png, curves)
    frame = pd.DataFrame({"step": np.arange(1, style.steps + 1), **curves})
    write_text(losses_csv, frame.to_csv(index=False))
    write_h5(h5_path, {**images, **{f"loss/{k}": v for k, v in curves.items()},
                       "rows": np.array(list(rows.values())), **h5_arrays([verdict])},
             {"rows_order": "texture_row, content_row, style_row", "optimiser": style.optimiser,
              "rule": RULES["texture"],
              "style_layers": style_layers, "content_layers": content_layers})
    print(f"texture loss {texture_curve[0]:.4g} -> {texture_curve[-1]:.4g}; "
          f"transfer loss {transfer_curve[0]:.4g} -> {transfer_curve[-1]:.4g}")
    _style_summary(summary_json, rows, style_layers, content_layers, style, texture_png,
                   transfer_png, losses_png, losses_csv, curves, verdict)
    return images


def _style_summary(summary_json, rows, style_layers, content_layers, style, texture_png,
                   transfer_png, losses_png, losses_csv, curves, verdict) -> None:
    folder = Path(summary_json).parent
    texture_title = "texture" if verdict.converged else \
        "texture: optimisation did not converge"
    write_summary(
        summary_json, "synthesis_style", "Texture and style (Gatys et al.)",
        f"A texture synthesised from noise to match the Gram matrices (which channels fire "
        f"together) of layers {', '.join(style_layers)} of an example image, and the style of "
        f"one image transferred onto the content (layers {', '.join(content_layers)}) of "
        f"another, by {style.optimiser} on the pixels. Crude on small models; good with a "
        f"VGG-like ImageNet model. The texture is judged on the stored 8-bit image: "
        f"{RULES['texture']}.",
        numbers={**{k.replace("_", " "): v for k, v in rows.items()},
                 "final texture loss": f"{curves['texture'][-1]:.4g}",
                 "final transfer loss": f"{curves['transfer'][-1]:.4g}",
                 "texture Gram loss (stored image) vs starting noise":
                     f"{verdict.achieved:.4g} vs {verdict.reference:.4g}: {verdict.status}"},
        quality=[summary_entry("texture", [verdict], "Gram loss of the stored texture",
                               "Gram loss of the starting noise")],
        figures=[figure_entry(texture_png, folder, texture_title,
                              "example (left), synthesised"),
                 figure_entry(transfer_png, folder, "style transfer",
                              "content, style, result"),
                 figure_entry(losses_png, folder, "loss curves")],
        tables=[figure_entry(losses_csv, folder, "loss per step")])
