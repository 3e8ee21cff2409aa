"""Preprocessing from the ``preprocess`` config section, and its geometry.

The preprocessing is: optionally resize so the shorter side is ``resize``
pixels, then either centre-crop to ``input_size`` (``crop: center``) or, with
``crop: none``, resize the whole image to exactly ``input_size``. Pixels are
then converted to ``channels`` (1: Rec.601 luma, 3: RGB) and normalised with
``mean``/``std`` on the 0..1 scale.

One transform path for the CPU and the GPU, in the spirit of
``torchvision.transforms.v2.functional``: the steps after the resize are plain
functions over ``(N, H, W, C) uint8`` tensors on any device, used by the CPU
path (`prepare_uint8`, on one image in a data-loader worker) and by the GPU
path (`convscope.data.gpu_decode.prepare_images`, on batches on the device):

- `geometry`: where the crop falls (both paths);
- `crop_or_pad`: the centre crop, zero padding around a small image (exact);
- `to_channels`: RGB -> Rec.601 luma for a grey model (exact: the float32
  arithmetic is the same on every device);
- `normalize`: uint8 -> normalised float (on the device, whole batches).

The resize itself is not shared: the CPU path keeps Pillow's bilinear filter
(the reference, whose fixed-point arithmetic no tensor op reproduces bit for
bit, and changing it would change every shard), the GPU path uses
``F.interpolate(..., antialias=True)``, which agrees within a few grey levels
(see benchmarks/README.md).

Every public function takes a `PreprocessConfig`; a plain dict of the section
is accepted as well (keys it lacks take the schema's defaults).

Coordinates are continuous with pixel i covering [i, i+1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

from convscope.config.sections import PreprocessConfig

__all__ = [
    "REC601",
    "as_preprocess_config",
    "input_hw",
    "resized_wh",
    "geometry",
    "input_box_to_original",
    "crop_or_pad",
    "to_channels",
    "prepare_uint8",
    "normalize",
    "to_model_input",
]

#: Rec.601 luma weights of R, G, B (float32 in every computation).
REC601: tuple[float, float, float] = (0.299, 0.587, 0.114)


@lru_cache(maxsize=1)
def _schema_defaults() -> dict:
    from convscope.config.validate import load_schema

    properties = load_schema()["properties"]["preprocess"]["properties"]
    return {key: sub["default"] for key, sub in properties.items() if "default" in sub}


def as_preprocess_config(preprocess: PreprocessConfig | Mapping) -> PreprocessConfig:
    """The section as a `PreprocessConfig`; a dict's missing keys take the schema's defaults."""
    if isinstance(preprocess, PreprocessConfig):
        return preprocess
    return PreprocessConfig.from_dict({**_schema_defaults(), **dict(preprocess)})


def input_hw(preprocess: PreprocessConfig | Mapping) -> tuple[int, int]:
    """(height, width) of the model input in pixels."""
    size = as_preprocess_config(preprocess).input_size
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


def resized_wh(orig_w: int, orig_h: int, preprocess: PreprocessConfig | Mapping) -> tuple[int, int]:
    """(width, height) in pixels of an ``orig_w`` x ``orig_h`` image after the resize step."""
    cfg = as_preprocess_config(preprocess)
    in_h, in_w = input_hw(cfg)
    if cfg.crop == "none":
        return in_w, in_h
    if not cfg.resize:
        return orig_w, orig_h
    scale = cfg.resize / min(orig_w, orig_h)
    if orig_w <= orig_h:
        return int(cfg.resize), max(1, int(round(orig_h * scale)))
    return max(1, int(round(orig_w * scale))), int(cfg.resize)


def geometry(orig_w: int, orig_h: int,
             preprocess: PreprocessConfig | Mapping) -> tuple[float, float, int, int]:
    """Affine map from original to model-input pixels: ``u = x * sx - left``.

    Returns ``(sx, sy, left, top)``: the resize scale per axis and the crop
    offsets (negative when the crop pads a small image), in resized pixels.
    """
    cfg = as_preprocess_config(preprocess)
    new_w, new_h = resized_wh(orig_w, orig_h, cfg)
    in_h, in_w = input_hw(cfg)
    left = int(round((new_w - in_w) / 2.0))
    top = int(round((new_h - in_h) / 2.0))
    return new_w / orig_w, new_h / orig_h, left, top


def input_box_to_original(
    boxes_xyxy: np.ndarray, orig_wh: np.ndarray, preprocess: PreprocessConfig | Mapping
) -> np.ndarray:
    """Map boxes in model-input pixels to original-image pixels, clipped to the image.

    Args:
        boxes_xyxy: (n, 4) boxes (x0, y0, x1, y1) in model-input pixels, x1/y1 exclusive.
        orig_wh: (n, 2) original image width and height in pixels.
    Returns:
        (n, 4) float64 boxes in original-image pixels.
    """
    cfg = as_preprocess_config(preprocess)
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    orig_wh = np.asarray(orig_wh, dtype=np.int64).reshape(-1, 2)
    out = np.empty_like(boxes)
    for i, (w, h) in enumerate(orig_wh):
        sx, sy, left, top = geometry(int(w), int(h), cfg)
        out[i, [0, 2]] = (boxes[i, [0, 2]] + left) / sx
        out[i, [1, 3]] = (boxes[i, [1, 3]] + top) / sy
        out[i, [0, 2]] = np.clip(out[i, [0, 2]], 0, w)
        out[i, [1, 3]] = np.clip(out[i, [1, 3]], 0, h)
    return out


def crop_or_pad(images: torch.Tensor, left: int, top: int, height: int, width: int) -> torch.Tensor:
    """Window ``[top, top + height) x [left, left + width)`` of each image, zero outside it.

    Args:
        images: (N, H, W, C) uint8 on any device.
        left, top: the window's offset in pixels (negative: the window pads the image).
    Returns:
        (N, height, width, C) uint8 on the images' device (``images`` itself when the
        window is the whole image).
    """
    n, img_h, img_w, channels = images.shape
    if (left, top, img_w, img_h) == (0, 0, width, height):
        return images
    canvas = torch.zeros(n, height, width, channels, dtype=images.dtype, device=images.device)
    src_x0, src_y0 = max(left, 0), max(top, 0)
    src_x1, src_y1 = min(left + width, img_w), min(top + height, img_h)
    if src_x1 > src_x0 and src_y1 > src_y0:
        canvas[:, src_y0 - top:src_y1 - top, src_x0 - left:src_x1 - left] = \
            images[:, src_y0:src_y1, src_x0:src_x1]
    return canvas


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, H, W, ``channels``) uint8 (1: rounded Rec.601 luma).

    The luma is ``0.299 R + 0.587 G + 0.114 B`` in float32, summed left to right,
    rounded half to even and clipped to 0..255: the nearest integer of the exact luma,
    except where that is within float32 error (1e-4) of a half, where another float32
    sum order (numpy's ``rgb @ weights`` on some CPUs) may round the other way.
    """
    if int(channels) == 3:
        return images
    rgb = images.to(torch.float32)
    luma = rgb[..., 0] * REC601[0] + rgb[..., 1] * REC601[1] + rgb[..., 2] * REC601[2]
    return luma.round_().clamp_(0, 255).to(torch.uint8)[..., None]


def prepare_uint8(image: np.ndarray, preprocess: PreprocessConfig | Mapping) -> np.ndarray:
    """Resize (Pillow, bilinear), crop and convert one image, still as uint8 (the CPU path).

    Args:
        image: (H, W, 3) uint8 RGB.
    Returns:
        (in_h, in_w, channels) uint8; areas a crop takes outside a small image are 0.
    """
    cfg = as_preprocess_config(preprocess)
    orig_h, orig_w = image.shape[:2]
    new_w, new_h = resized_wh(orig_w, orig_h, cfg)
    if (new_w, new_h) != (orig_w, orig_h):
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    in_h, in_w = input_hw(cfg)
    _, _, left, top = geometry(orig_w, orig_h, cfg)
    if not image.flags.writeable:  # Pillow's arrays are read-only; torch wants writable memory
        image = image.copy()
    batch = torch.from_numpy(np.ascontiguousarray(image))[None]
    batch = to_channels(crop_or_pad(batch, left, top, in_h, in_w), cfg.channels)
    return np.ascontiguousarray(batch[0].numpy())


def normalize(batch_uint8: torch.Tensor, preprocess: PreprocessConfig | Mapping,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, C, H, W) normalised float, channels-last in memory.

    Runs wherever ``batch_uint8`` lives (do it on the GPU).
    """
    cfg = as_preprocess_config(preprocess)
    channels = batch_uint8.shape[-1]
    mean = torch.as_tensor(_per_channel(cfg.mean, channels, 0.0),
                           device=batch_uint8.device, dtype=torch.float32)
    std = torch.as_tensor(_per_channel(cfg.std, channels, 1.0),
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


def to_model_input(images: Sequence[np.ndarray],
                   preprocess: PreprocessConfig | Mapping) -> torch.Tensor:
    """Preprocess a list of (H, W, 3) uint8 images into one (N, C, h, w) float32 batch."""
    cfg = as_preprocess_config(preprocess)
    batch = np.stack([prepare_uint8(image, cfg) for image in images])
    return normalize(torch.from_numpy(batch), cfg).contiguous()
