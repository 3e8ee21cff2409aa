"""Robustness transforms and the Yosinski et al. (2015) regularisers.

- `random_affine`: each image of a batch gets its own random jitter (shift in pixels),
  scale and rotation (Olah et al. 2017's transformation robustness), applied in one
  batched ``affine_grid`` / ``grid_sample`` call with reflected borders, so the images
  the model sees vary each step and high-frequency patterns that only work at one exact
  position do not pay off. The random numbers come from a ``torch.Generator``
  (reproducible).
- `blur`: Gaussian blur of the raw image tensor every few steps
  (torchvision's ``gaussian_blur``).
- `clip_small_norm`, `clip_small_contribution`: set to 0 (mid grey after the sigmoid of
  `convscope.synthesis.param`) the pixels whose norm over channels, or whose
  contribution ``|sum_c x * grad|`` to the objective, is below a percentile of the image's
  pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

__all__ = ["TransformSettings", "affine_matrices", "random_affine", "blur", "clip_small_norm",
           "clip_small_contribution"]


@dataclass(frozen=True)
class TransformSettings:
    """Ranges of the random transforms: shift up to ``jitter_px`` pixels each way, a scale
    drawn from ``scales``, a rotation uniform in +-``rotate_degrees``."""

    jitter_px: int
    scales: Sequence[float]
    rotate_degrees: float


def affine_matrices(shift_xy_px: torch.Tensor, scale: torch.Tensor, angle_deg: torch.Tensor,
                    height: int, width: int) -> torch.Tensor:
    """(n, 2, 3) ``affine_grid`` matrices (output -> input sampling, normalised coordinates).

    The output image is the input scaled by ``scale`` (n,), rotated by ``angle_deg`` (n,)
    counter-clockwise about the centre and shifted by ``shift_xy_px`` (n, 2) pixels.
    """
    theta = torch.deg2rad(angle_deg)
    cos, sin = torch.cos(theta) / scale, torch.sin(theta) / scale
    tx = -2.0 * shift_xy_px[:, 0] / width
    ty = -2.0 * shift_xy_px[:, 1] / height
    row0 = torch.stack([cos, sin, cos * tx + sin * ty], dim=1)
    row1 = torch.stack([-sin, cos, -sin * tx + cos * ty], dim=1)
    return torch.stack([row0, row1], dim=1)


def random_affine(images: torch.Tensor, settings: TransformSettings,
                  generator: torch.Generator) -> torch.Tensor:
    """(n, C, H, W) -> (n, C, H, W): each image jittered, scaled and rotated at random."""
    n, _, height, width = images.shape
    jitter = int(settings.jitter_px)
    shift = torch.randint(-jitter, jitter + 1, (n, 2), generator=generator).to(torch.float32)
    scales = torch.as_tensor(list(settings.scales) or [1.0], dtype=torch.float32)
    scale = scales[torch.randint(0, len(scales), (n,), generator=generator)]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * float(settings.rotate_degrees)
    matrices = affine_matrices(shift, scale, angle, height, width).to(images)
    grid = F.affine_grid(matrices, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


def blur(raw: torch.Tensor, sigma: float) -> torch.Tensor:
    """(n, C, H, W) Gaussian-blurred with ``sigma`` pixels (kernel of about 4 sigma + 1)."""
    size = 2 * max(1, math.ceil(2 * sigma)) + 1
    return TF.gaussian_blur(raw, kernel_size=[size, size], sigma=[sigma, sigma])


def _below_percentile(score: torch.Tensor, percentile: float) -> torch.Tensor:
    """(n, H, W) bool: pixels whose ``score`` is below the image's ``percentile`` (0..100)."""
    flat = score.flatten(1)
    threshold = torch.quantile(flat, percentile / 100.0, dim=1)
    return score < threshold[:, None, None]


def clip_small_norm(raw: torch.Tensor, percentile: float) -> torch.Tensor:
    """(n, C, H, W) with pixels of channel norm below the ``percentile`` set to 0."""
    if percentile <= 0:
        return raw
    mask = _below_percentile(raw.norm(dim=1), percentile)
    return raw.masked_fill(mask[:, None], 0.0)


def clip_small_contribution(raw: torch.Tensor, grad: torch.Tensor,
                            percentile: float) -> torch.Tensor:
    """(n, C, H, W) with pixels whose contribution ``|sum_c raw * grad|`` (the linear
    estimate of what setting the pixel to 0 changes) is below the ``percentile`` set to 0."""
    if percentile <= 0:
        return raw
    mask = _below_percentile((raw * grad).sum(dim=1).abs(), percentile)
    return raw.masked_fill(mask[:, None], 0.0)
