"""What the explanation stages share: image batches, the occluder, spatial layers."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence

import numpy as np
import torch

from convscope.config.sections import PreprocessConfig
from convscope.data.preprocess import normalize

__all__ = ["to_input", "occluder_fill", "spatial_layers",
           "display_rgb"]

logger = logging.getLogger(__name__)


def to_input(pixels: np.ndarray, preprocess: PreprocessConfig,
             device: torch.device) -> torch.Tensor:
    """(N, h, w, C) uint8 -> (N, C, h, w) normalised float32 on ``device`` (contiguous)."""
    return normalize(torch.from_numpy(np.ascontiguousarray(pixels)).to(device),
                     preprocess).contiguous()


def occluder_fill(fill: float, preprocess: PreprocessConfig) -> torch.Tensor:
    """(C,) the grey level ``fill`` (0..1 pixel scale) normalised like the images."""
    grey = np.full((1, 1, 1, preprocess.channels), round(fill * 255), dtype=np.uint8)
    return normalize(torch.from_numpy(grey), preprocess)[0, :, 0, 0]


def spatial_layers(model_info_json: str | os.PathLike, layers: Sequence[str]) -> list[str]:
    """The analysed ``layers`` whose output is a feature map (C, H, W), from ``model_info.json``."""
    with open(model_info_json) as fh:
        info = json.load(fh)
    shapes = {name: entry.get("shape", []) for name, entry in info.get("layers", {}).items()}
    return [layer for layer in layers if len(shapes.get(layer, [])) == 3]


def display_rgb(pixels: np.ndarray) -> np.ndarray:
    """(..., h, w, C) uint8 with C in {1, 3} -> (..., h, w, 3) uint8 (grey replicated)."""
    return np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels
