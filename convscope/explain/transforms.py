"""Changes made to an ORIGINAL image before the run's preprocessing, and point geometry.

The invariance and correspondence stages change the original image (translate,
scale, rotate it; paint a grey box over part of it) and then prepare it as
every stage does (`convscope.data.preprocess.to_model_input`), so the
transforms respect the configured resize and crop. The affine warps are
torchvision's (``transforms.v2.functional.affine``); the box painting and the
point mapping through the preprocessing are written here (no library holds
the preprocessing's geometry).

Coordinates are continuous with pixel i covering [i, i + 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from convscope.config.sections import PreprocessConfig
from convscope.data.preprocess import geometry

__all__ = [
    "TRANSFORMS",
    "IDENTITY",
    "transform_image",
    "occlude",
    "original_to_input",
    "input_to_original",
]

#: transform name -> unit of its amount
TRANSFORMS: dict[str, str] = {"vertical_translation": "px", "scale": "factor",
                              "rotation": "degrees"}
#: the amount at which each transform leaves the image unchanged
IDENTITY: dict[str, float] = {"vertical_translation": 0.0, "scale": 1.0, "rotation": 0.0}


def transform_image(image: np.ndarray, kind: str, amount: float) -> np.ndarray:
    """One transformed copy of an image, same size, areas left uncovered in its mean colour.

    Args:
        image: (H, W, 3) uint8 original image.
        kind: a key of `TRANSFORMS`: ``vertical_translation`` (``amount`` pixels, positive
            = down), ``scale`` (factor about the centre) or ``rotation`` (degrees about the
            centre, positive = counter-clockwise).
    Returns:
        (H, W, 3) uint8; the identity amount returns an identical copy.
    """
    if kind not in TRANSFORMS:
        raise ValueError(f"unknown transform {kind!r}; valid: {', '.join(TRANSFORMS)}")
    if float(amount) == IDENTITY[kind]:
        return image.copy()
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    fill = [float(v) for v in image.reshape(-1, image.shape[-1]).mean(axis=0)]
    angle, translate, scale = 0.0, [0, 0], 1.0
    if kind == "vertical_translation":
        translate = [0, float(amount)]
    elif kind == "scale":
        scale = float(amount)
    else:
        angle = -float(amount)  # affine turns clockwise; ours is counter-clockwise
    warped = TF.affine(tensor, angle=angle, translate=translate, scale=scale, shear=[0.0, 0.0],
                       interpolation=InterpolationMode.BILINEAR, fill=fill)
    return np.ascontiguousarray(warped.permute(1, 2, 0).numpy())


def occlude(image: np.ndarray, box_xyxy: Sequence[float], fill_rgb: Sequence[float]) -> np.ndarray:
    """A copy of ``image`` with the pixels whose centre lies in the box set to ``fill_rgb``.

    Args:
        image: (H, W, 3) uint8.
        box_xyxy: (x0, y0, x1, y1) in pixels of this image (may reach outside it).
        fill_rgb: 3 values 0..255.
    """
    height, width = image.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    # pixel i is inside when its centre i + 0.5 lies in [x0, x1)
    col0, col1 = (int(np.clip(np.ceil(v - 0.5), 0, width)) for v in (x0, x1))
    row0, row1 = (int(np.clip(np.ceil(v - 0.5), 0, height)) for v in (y0, y1))
    out = image.copy()
    out[row0:row1, col0:col1] = np.clip(np.round(np.asarray(fill_rgb, dtype=np.float64)), 0, 255)
    return out


def _map_points(points: np.ndarray, orig_wh: np.ndarray, preprocess, inverse: bool) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    out = np.empty_like(points)
    for i, (width, height) in enumerate(np.asarray(orig_wh).reshape(-1, 2)):
        sx, sy, left, top = geometry(int(width), int(height), preprocess)
        if inverse:
            out[i] = (points[i, 0] + left) / sx, (points[i, 1] + top) / sy
        else:
            out[i] = points[i, 0] * sx - left, points[i, 1] * sy - top
    return out


def original_to_input(points_xy: np.ndarray, orig_wh: np.ndarray,
                      preprocess: PreprocessConfig | Mapping) -> np.ndarray:
    """(n, 2) points in original-image pixels -> model-input pixels (``u = x * sx - left``).

    ``orig_wh``: (n, 2) each image's original width and height.
    """
    return _map_points(points_xy, orig_wh, preprocess, inverse=False)


def input_to_original(points_uv: np.ndarray, orig_wh: np.ndarray,
                      preprocess: PreprocessConfig | Mapping) -> np.ndarray:
    """(n, 2) points in model-input pixels -> original-image pixels (inverse of the above)."""
    return _map_points(points_uv, orig_wh, preprocess, inverse=True)
