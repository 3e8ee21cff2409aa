"""Are the attribution maps faithful? Deletion / insertion, ROAD and the randomisation test.

All by hand here (no library computes them batched):

- deletion and insertion (Petsiuk et al. 2018, RISE): pixels are taken in the
  order of the map (largest first, ties by position); after ``k`` of ``steps``
  steps the first ``k * H*W // steps`` pixels (all channels) are replaced by the
  grey fill (deletion) or, starting from a Gaussian-blurred copy, put back from
  the image (insertion). The curve is the softmax probability of the explained
  class; its AUC the trapezoid over the fraction of pixels (0..1). Faithful
  maps: low deletion AUC, high insertion AUC.
- ROAD (Rong et al. 2022): the fraction ``p`` of most (MoRF) or least (LeRF)
  relevant pixels is removed and filled by noisy linear imputation
  (`convscope.explain.road`); the score is the probability of the explained
  class, averaged over the configured fractions. Faithful: low MoRF, high LeRF.
- model-parameter randomisation test (Adebayo et al. 2018): the layers with
  parameters are re-drawn from the top (the output) down, cumulatively; after
  each the maps are computed again and compared with the trained model's by
  Spearman's rank correlation of their absolute values, per image, then averaged.
  A map that depends on the model falls towards 0.

Everything is batched: all perturbed copies of several images go through the
model ``batch_size`` at a time. `tests/test_faithfulness.py` checks every number
against a one-image, one-copy-at-a-time loop.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.integrate import trapezoid
from scipy.stats import spearmanr
from torch import nn
from torchvision.transforms.functional import gaussian_blur

from convscope.explain.road import noisy_linear_impute
from convscope.nn.layers import get_module

__all__ = ["pixel_ranks", "step_counts", "blurred", "deletion_insertion", "curve_auc",
           "road_scores", "cascade_layers", "randomise_module", "mprt"]


def pixel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """(N, H, W) maps -> (N, H*W) int64: each pixel's place when sorted largest first
    (ties: the earlier pixel, in row-major order, first)."""
    flat = maps.flatten(1)
    order = torch.sort(-flat, dim=1, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks


def step_counts(n_pixels: int, steps: int) -> torch.Tensor:
    """(steps + 1,) pixels changed after each step: ``k * n_pixels // steps``, k = 0..steps."""
    return torch.arange(steps + 1, dtype=torch.int64) * n_pixels // steps


def blurred(inputs: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (N, C, H, W) with ``sigma`` px (kernel 2*ceil(3 sigma)+1, at most 2*min(H, W)-1)."""
    size = min(2 * math.ceil(3 * sigma) + 1, 2 * min(inputs.shape[-2:]) - 1)
    return gaussian_blur(inputs, [size, size], [sigma, sigma])


def _probabilities(model: nn.Module, copies: torch.Tensor, target: torch.Tensor,
                   batch_size: int) -> torch.Tensor:
    """Softmax probability of ``target[i]`` for each copy ``i``, ``batch_size`` copies per pass."""
    out = []
    with torch.no_grad():
        for start in range(0, len(copies), batch_size):
            logits = model(copies[start:start + batch_size])
            out.append(torch.softmax(logits.float(), 1).gather(
                1, target[start:start + batch_size, None])[:, 0])
    return torch.cat(out)


def deletion_insertion(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor,
                       maps: torch.Tensor, *, steps: int, fill: torch.Tensor, sigma: float,
                       batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deletion and insertion curves, each (N, steps + 1) on the CPU.

    Args:
        inputs: (N, C, H, W) normalised model input; target: (N,) class ids explained.
        maps: (N, H, W) attribution maps (larger = more important).
        fill: (C,) the grey that deleted pixels become (normalised like the inputs).
        sigma: blur of insertion's start image, in pixels.
        batch_size: copies per forward pass.
    """
    n, c, h, w = inputs.shape
    counts = step_counts(h * w, steps).to(inputs.device)
    masks = (pixel_ranks(maps)[:, None, :] < counts[None, :, None]).view(n, steps + 1, 1, h, w)
    grey = fill.view(1, 1, c, 1, 1).to(inputs)
    start = blurred(inputs, sigma)
    per_chunk = max(1, batch_size // (2 * (steps + 1)))
    deletion, insertion = [], []
    for i in range(0, n, per_chunk):
        x, m = inputs[i:i + per_chunk, None], masks[i:i + per_chunk]
        removed = torch.where(m, grey, x)
        added = torch.where(m, x, start[i:i + per_chunk, None])
        copies = torch.cat([removed, added], 1).flatten(0, 1)
        t = target[i:i + per_chunk].repeat_interleave(2 * (steps + 1))
        probs = _probabilities(model, copies, t, batch_size).view(-1, 2, steps + 1)
        deletion.append(probs[:, 0].cpu())
        insertion.append(probs[:, 1].cpu())
    return torch.cat(deletion), torch.cat(insertion)


def curve_auc(curves: torch.Tensor | np.ndarray, n_pixels: int, steps: int) -> np.ndarray:
    """(N,) trapezoid area under each (N, steps + 1) curve over the fraction of pixels changed."""
    x = step_counts(n_pixels, steps).numpy() / n_pixels
    return trapezoid(np.asarray(curves, dtype=np.float64), x, axis=1)


def road_scores(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor,
                maps: torch.Tensor, *, fractions: Sequence[float], noise: float,
                keys: Sequence[int], seed: int, batch_size: int) -> dict[str, torch.Tensor]:
    """ROAD: probability of the class after removing and imputing a fraction of the pixels.

    Returns ``{"morf": (N, F), "lerf": (N, F)}``: MoRF removes the ``round(p * H*W)``
    pixels ranked first by the map, LeRF the last ones. ``keys``: one integer per image
    (its manifest row) that, with ``seed``, the fraction and the order, seeds the imputation
    noise, so a score does not depend on the batch it was computed in.
    """
    n, _, h, w = inputs.shape
    ranks = pixel_ranks(maps).cpu().view(n, h, w).numpy()
    pixels = inputs.detach().cpu().numpy()
    copies, index = [], []
    for i in range(n):
        for order, name in enumerate(("morf", "lerf")):
            for j, fraction in enumerate(fractions):
                count = int(round(fraction * h * w))
                mask = ranks[i] < count if name == "morf" else ranks[i] >= h * w - count
                rng = np.random.default_rng([seed, int(keys[i]), j, order])
                copies.append(noisy_linear_impute(pixels[i], mask, noise, rng))
                index.append(i)
    stacked = torch.from_numpy(np.stack(copies)).to(inputs)
    probs = _probabilities(model, stacked, target[torch.tensor(index, device=target.device)],
                           batch_size).cpu().view(n, 2, len(fractions))
    return {"morf": probs[:, 0], "lerf": probs[:, 1]}


def cascade_layers(model: nn.Module) -> list[str]:
    """Names of the modules that hold parameters of their own, the last one (the output) first."""
    names = [name for name, module in model.named_modules()
             if name and any(True for _ in module.parameters(recurse=False))]
    return names[::-1]


def randomise_module(module: nn.Module, seed: int) -> None:
    """Re-draw every own parameter of ``module`` from N(0, std of its trained values), seeded."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters(recurse=False):
            scale = float(param.std()) if param.numel() > 1 else float(param.abs())
            scale = scale if math.isfinite(scale) and scale > 0 else 1.0
            drawn = torch.randn(param.shape, generator=generator) * scale
            param.copy_(drawn.to(param))


def _rank_correlations(reference: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """(N,) Spearman correlation of |reference[i]| and |maps[i]|; NaN where a map is constant."""
    out = np.full(len(reference), np.nan)
    for i, (a, b) in enumerate(zip(reference, maps)):
        a, b = np.abs(a).ravel(), np.abs(b).ravel()
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            out[i] = spearmanr(a, b).statistic
    return out


def mprt(model: nn.Module, explain: Callable[[nn.Module], torch.Tensor], *,
         layers: Sequence[str], seed: int) -> np.ndarray:
    """Cascading randomisation: (len(layers), N) Spearman correlations with the trained maps.

    ``explain(model) -> (N, H, W)`` computes the maps of the images with a given model;
    ``layers`` are randomised in order, cumulatively, layer ``j`` with seed ``seed + j``
    (`randomise_module`), on a copy of ``model``.
    """
    reference = explain(model).cpu().numpy()
    randomised = copy.deepcopy(model)
    rows = []
    for j, name in enumerate(layers):
        randomise_module(get_module(randomised, name, key="explain.faithfulness"), seed + j)
        rows.append(_rank_correlations(reference, explain(randomised).cpu().numpy()))
    return np.stack(rows) if rows else np.zeros((0, len(reference)))
