"""Preprocessing from config, and its geometry.

The preprocessing is: optionally resize so the shorter side is ``resize``
pixels, then either centre-crop to ``input_size`` (``crop: center``) or, with
``crop: none``, resize the whole image to exactly ``input_size``. Pixels are
then converted to ``channels`` (1: Rec.601 luma, 3: RGB) and normalised with
``mean``/``std`` on the 0..1 scale.

Work is split so that the cheap, per-image part (`prepare_uint8`) runs in
data-loader workers on uint8 arrays and the arithmetic (`normalize`) runs on
the device on whole batches. `geometry` gives the affine map between model
input pixels and original-image pixels, used to map receptive fields back.

Coordinates are continuous with pixel i covering [i, i+1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

__all__ = [
    "input_hw",
    "geometry",
    "input_box_to_original",
    "prepare_uint8",
    "normalize",
    "to_model_input",
]


def input_hw(preprocess_cfg: dict) -> tuple[int, int]:
    """(height, width) of the model input."""
    size = preprocess_cfg["input_size"]
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


def _resized_wh(orig_w: int, orig_h: int, preprocess_cfg: dict) -> tuple[int, int]:
    in_h, in_w = input_hw(preprocess_cfg)
    if preprocess_cfg.get("crop", "center") == "none":
        return in_w, in_h
    resize = preprocess_cfg.get("resize")
    if not resize:
        return orig_w, orig_h
    scale = resize / min(orig_w, orig_h)
    if orig_w <= orig_h:
        return int(resize), max(1, int(round(orig_h * scale)))
    return max(1, int(round(orig_w * scale))), int(resize)


def geometry(orig_w: int, orig_h: int, preprocess_cfg: dict) -> tuple[float, float, int, int]:
    """Affine map from original to model-input pixels: ``u = x * sx - left``.

    Returns ``(sx, sy, left, top)``: the resize scale per axis and the crop
    offsets (negative when the crop pads a small image), in resized pixels.
    """
    new_w, new_h = _resized_wh(orig_w, orig_h, preprocess_cfg)
    in_h, in_w = input_hw(preprocess_cfg)
    left = int(round((new_w - in_w) / 2.0))
    top = int(round((new_h - in_h) / 2.0))
    return new_w / orig_w, new_h / orig_h, left, top


def input_box_to_original(
    boxes_xyxy: np.ndarray, orig_wh: np.ndarray, preprocess_cfg: dict
) -> np.ndarray:
    """Map boxes in model-input pixels to original-image pixels, clipped to the image.

    Args:
        boxes_xyxy: (n, 4) boxes (x0, y0, x1, y1) in model-input pixels, x1/y1 exclusive.
        orig_wh: (n, 2) original image width and height in pixels.
    Returns:
        (n, 4) float64 boxes in original-image pixels.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    orig_wh = np.asarray(orig_wh, dtype=np.int64).reshape(-1, 2)
    out = np.empty_like(boxes)
    for i, (w, h) in enumerate(orig_wh):
        sx, sy, left, top = geometry(int(w), int(h), preprocess_cfg)
        out[i, [0, 2]] = (boxes[i, [0, 2]] + left) / sx
        out[i, [1, 3]] = (boxes[i, [1, 3]] + top) / sy
        out[i, [0, 2]] = np.clip(out[i, [0, 2]], 0, w)
        out[i, [1, 3]] = np.clip(out[i, [1, 3]], 0, h)
    return out


def prepare_uint8(image: np.ndarray, preprocess_cfg: dict) -> np.ndarray:
    """Resize and crop one image, still as uint8.

    Args:
        image: (H, W, 3) uint8 RGB.
    Returns:
        (in_h, in_w, channels) uint8; areas a crop takes outside a small image are 0.
    """
    orig_h, orig_w = image.shape[:2]
    new_w, new_h = _resized_wh(orig_w, orig_h, preprocess_cfg)
    if (new_w, new_h) != (orig_w, orig_h):
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    in_h, in_w = input_hw(preprocess_cfg)
    _, _, left, top = geometry(orig_w, orig_h, preprocess_cfg)
    if (left, top, new_w, new_h) != (0, 0, in_w, in_h):
        canvas = np.zeros((in_h, in_w, 3), dtype=np.uint8)
        src_x0, src_y0 = max(left, 0), max(top, 0)
        src_x1, src_y1 = min(left + in_w, new_w), min(top + in_h, new_h)
        canvas[src_y0 - top:src_y1 - top, src_x0 - left:src_x1 - left] = \
            image[src_y0:src_y1, src_x0:src_x1]
        image = canvas
    if int(preprocess_cfg.get("channels", 3)) == 1:
        luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        image = np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]
    return np.ascontiguousarray(image)


def normalize(batch_uint8: torch.Tensor, preprocess_cfg: dict,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, C, H, W) normalised float, channels-last in memory.

    Runs wherever ``batch_uint8`` lives (do it on the GPU).
    """
    channels = batch_uint8.shape[-1]
    mean = torch.as_tensor(_per_channel(preprocess_cfg.get("mean"), channels, 0.0),
                           device=batch_uint8.device, dtype=torch.float32)
    std = torch.as_tensor(_per_channel(preprocess_cfg.get("std"), channels, 1.0),
                          device=batch_uint8.device, dtype=torch.float32)
    x = batch_uint8.to(torch.float32).div_(255.0).sub_(mean).div_(std)
    return x.permute(0, 3, 1, 2).to(dtype)


def _per_channel(values: Sequence[float] | float | None, channels: int, default: float):
    if values is None:
        return [default] * channels
    if isinstance(values, (int, float)):
        return [float(values)] * channels
    values = [float(v) for v in values]
    if len(values) == channels:
        return values
    if len(values) == 3 and channels == 1:  # an RGB mean given for a gray model
        return [float(np.mean(values))]
    if len(values) == 1:
        return values * channels
    raise ValueError(f"preprocess mean/std has {len(values)} values but the model takes "
                     f"{channels} channels")


def to_model_input(images: Sequence[np.ndarray], preprocess_cfg: dict) -> torch.Tensor:
    """Preprocess a list of (H, W, 3) uint8 images into one (N, C, h, w) float32 batch."""
    batch = np.stack([prepare_uint8(image, preprocess_cfg) for image in images])
    return normalize(torch.from_numpy(batch), preprocess_cfg).contiguous()
