"""Deep dream: amplify what a layer sees in an image (Mordvintsev et al. 2015).

Gradient ascent on ``0.5 * ||A||^2``, the squared L2 norm of the layer's
activations ``A`` for each image, over the model's input pixels on the 0..1
scale (`convscope.synthesis.images.PixelModel`). As in the original
notebook: the image is processed at ``octaves`` scales, coarsest first, each
``octave_scale`` times smaller than the next (at least 8 px), carrying the
detail added at one scale to the next; each step shifts the image by a random
jitter of up to ``jitter`` px (seeded) and moves by ``lr`` times the gradient
divided by its mean absolute value per image. Pixels stay in 0..1. A whole
batch of images is dreamed at once. The octave loop is written by hand here
(no maintained library provides it for arbitrary torch models).
"""

from __future__ import annotations

import os
from dataclasses import replace
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from convscope.config.counts import clip_count
from convscope.config.sections import DreamConfig, ModelConfig, PreprocessConfig
from convscope.nn.hooks import capture_tensors
from convscope.nn.layers import check_layer_names
from convscope.render.grids import upscale_nearest
from convscope.store.h5 import write_h5
from convscope.store.summary import figure_entry, write_summary
from convscope.synthesis.images import (PixelModel, middle_layer, open_stage, read_pixels,
                                        rgb_uint8, sample_rows)
from convscope.synthesis.outputs import display_factor, save_grid, save_picture, side_by_side
from convscope.synthesis.quality import (RULES, count_line, h5_arrays, judge, ordered, stored01,
                                         summary_entry)

__all__ = ["layer_l2", "octave_sizes", "deep_dream", "usable_octaves", "run_dream"]


def layer_l2(model: PixelModel, layer: str, pixels: torch.Tensor) -> torch.Tensor:
    """(N,) L2 norm of ``layer``'s output for each of the (N, C, H, W) pixel images."""
    with torch.no_grad(), capture_tensors(model.inner, [layer], key="synthesis.dream.layer",
                                             stop=True) as got:
        model(pixels)
    return got[layer].flatten(1).norm(dim=1)


def octave_sizes(height: int, width: int, octaves: int, scale: float) -> list[tuple[int, int]]:
    """(h, w) of each octave, coarsest first, the last the image's own size; sides >= 8 px."""
    return [(max(8, int(round(height / scale ** k))), max(8, int(round(width / scale ** k))))
            for k in reversed(range(octaves))]


def _resize(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(pixels.shape[-2:]) == tuple(size):
        return pixels
    return F.interpolate(pixels, size=size, mode="bilinear", align_corners=False)


def _ascent_step(model: PixelModel, layer: str, pixels: torch.Tensor, shift: tuple[int, int],
                 lr: float) -> torch.Tensor:
    """One jittered, normalised gradient-ascent step on the layer's squared L2 norm."""
    rolled = torch.roll(pixels, shifts=shift, dims=(2, 3)).requires_grad_(True)
    with capture_tensors(model.inner, [layer], detach=False, key="synthesis.dream.layer",
                         stop=True) as got:
        model(rolled)
    objective = 0.5 * got[layer].pow(2).sum()
    (grad,) = torch.autograd.grad(objective, rolled)
    grad = torch.roll(grad, shifts=(-shift[0], -shift[1]), dims=(2, 3))
    grad = grad / (grad.abs().mean(dim=(1, 2, 3), keepdim=True) + 1e-8)
    return (pixels + lr * grad).clamp_(0, 1).detach()


def deep_dream(model: PixelModel, layer: str, pixels: torch.Tensor, dream: DreamConfig,
               seed: int) -> torch.Tensor:
    """Dreamed versions of (N, C, H, W) pixel images in 0..1, same shape (module docstring)."""
    check_layer_names(model.inner, [layer], key="synthesis.dream.layer")
    generator = torch.Generator().manual_seed(seed)
    base = pixels.detach()
    sizes = octave_sizes(base.shape[2], base.shape[3], dream.octaves, dream.octave_scale)
    detail = torch.zeros_like(_resize(base, sizes[0]))
    progress = tqdm(total=len(sizes) * dream.steps, desc=f"deep dream ({layer})", mininterval=5)
    for size in sizes:
        base_at = _resize(base, size)
        current = (base_at + _resize(detail, size)).clamp(0, 1)
        for _ in range(dream.steps):
            shift = tuple(int(v) for v in torch.randint(-dream.jitter_px, dream.jitter_px + 1, (2,),
                                                        generator=generator))
            current = _ascent_step(model, layer, current, shift, dream.learning_rate)
            progress.update()
        detail = current - base_at
    progress.close()
    return current


def usable_octaves(model: PixelModel, layer: str, pixels: torch.Tensor,
                   dream: DreamConfig) -> tuple[DreamConfig, str | None]:
    """``dream``, or with one octave when ``layer`` cannot be reached at the smallest
    octave's size (a fixed-size layer before it), and the reason to record (else None).
    The forward stops at ``layer``, so the layers after it never limit the sizes."""
    sizes = octave_sizes(pixels.shape[2], pixels.shape[3], dream.octaves, dream.octave_scale)
    if dream.octaves <= 1:
        return dream, None
    try:
        layer_l2(model, layer, _resize(pixels[:1], sizes[0]))
    except RuntimeError as exc:
        reason = (f"{dream.octaves} octaves asked, 1 used: layer {layer} cannot be reached with "
                  f"{sizes[0][0]}x{sizes[0][1]} inputs ({str(exc).splitlines()[0]})")
        print(reason)
        return replace(dream, octaves=1), reason
    return dream, None


def run_dream(model_cfg: ModelConfig, weights_file: str | os.PathLike | None,
              preprocess: PreprocessConfig, dream: DreamConfig, layers: Sequence[str],
              manifest_csv: str | os.PathLike, *, device: str, seed: int,
              images_dir: str | os.PathLike,
              grid_png: str | os.PathLike, h5_path: str | os.PathLike,
              summary_json: str | os.PathLike) -> np.ndarray:
    """The deep-dream stage: dream a seeded sample of images; write one PNG per image
    (original | dreamed) in ``images_dir``, the grid, the HDF5 file and ``summary.json``.
    ``device`` and ``seed`` are ``synthesis.device`` and ``synthesis.seed``. Returns the
    (n, H, W, 3) uint8 dreamed images."""
    model, manifest, _ = open_stage(model_cfg, weights_file, preprocess, device, manifest_csv)
    layer = dream.layer or middle_layer(layers)
    rows = sample_rows(manifest, dream.n_images, seed)
    clip_count("synthesis.dream.n_images", dream.n_images, len(rows), "readable images")
    pixels = read_pixels(manifest, rows, preprocess).to(model.scale.device)
    dream, octave_note = usable_octaves(model, layer, pixels, dream)
    dreamed = deep_dream(model, layer, pixels, dream, seed)
    originals, results = rgb_uint8(pixels), rgb_uint8(dreamed)
    stored = stored01(results, int(preprocess.channels)).to(pixels.device)
    before, after = layer_l2(model, layer, pixels).cpu(), layer_l2(model, layer, stored).cpu()
    verdicts = judge([f"manifest row {int(r)}" for r in rows], after.numpy(), before.numpy())
    factor = display_factor(originals.shape[1])
    Path(images_dir).mkdir(parents=True, exist_ok=True)
    pairs, figures = [], []
    for row, original, result in zip(rows, originals, results):
        pair = side_by_side([original, result])
        pairs.append(pair)
        png = Path(images_dir) / f"row-{int(row):05d}.png"
        save_picture(png, pair, factor)
        figures.append(figure_entry(png, Path(summary_json).parent, f"manifest row {int(row)}",
                                    "original (left) and dreamed (right)"))
    save_grid(grid_png, [upscale_nearest(pair, factor) for pair in pairs], ncols=2)
    write_h5(h5_path, {"rows": rows, "original": originals, "dreamed": results,
                       "layer_l2_before": before.numpy(), "layer_l2_after": after.numpy(),
                       **h5_arrays(verdicts)},
             {"layer": layer, "seed": seed, "pixel_scale": "0..1 before mean/std",
              "rule": RULES["dream"]})
    ratio = float((after / before.clamp_min(1e-12)).mean())
    print(f"{len(rows)} images dreamed at {layer}; layer L2 norm x{ratio:.2f} on average")
    write_summary(summary_json, "synthesis_dream", "Deep dream",
                  f"Each image beside its 'dream': the input pixels changed by gradient ascent on "
                  f"the L2 norm of layer {layer}'s activations, at {dream.octaves} scales with "
                  "random jitter, so that patterns the layer responds to are amplified.",
                  numbers={"layer": layer, "images": len(rows),
                           "mean layer L2 norm, after / before": f"{ratio:.2f}",
                           "dreams": count_line(verdicts),
                           **({"octaves": octave_note} if octave_note else {})},
                  quality=[summary_entry("dream", ordered(verdicts),
                                         f"L2 norm of {layer} on the stored dreamed image",
                                         "the same on the original image")],
                  figures=[figure_entry(grid_png, Path(summary_json).parent, "all images")]
                  + figures)
    return results
