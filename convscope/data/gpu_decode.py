"""Decode JPEGs and prepare images on the device (the GPU path of extraction).

The CPU path (`convscope.data.images`, `convscope.data.preprocess`) decodes with Pillow
in data-loader workers. On a GPU node that caps extraction far below the
model's rate, so with ``extract.decode: gpu`` workers only read JPEG bytes and
this module does the rest on the device, batch by batch:

- `decode_jpegs`: nvJPEG through `torchvision.io.decode_jpeg` (one batched
  call; per image on failure);
- `prepare_images`: resize, then the CPU path's own `crop_or_pad` and
  `to_channels` (`convscope.data.preprocess`, one implementation for both);
- `make_thumbnails`: the CPU path's centre square (`square_crop_box`), then an
  antialiased resize;
- `pixel_attributes`: the definitions of `convscope.data.images.pixel_attributes`.

All functions take a list of ``(3, H, W) uint8`` tensors on any device (the
tests run them on the CPU) and group images of equal size into one batched
call. What is not shared, and why: Pillow's resampling filters (bilinear for
the input, Lanczos for thumbnails) use fixed-point arithmetic that no tensor
op reproduces bit for bit, and the CPU path must keep its exact bytes, so the
CPU path keeps Pillow (the reference) and this module resizes with
``F.interpolate`` (bilinear / bicubic, ``antialias=True``): a prepared pixel or
thumbnail pixel may differ by a few grey levels. The pixel attributes are
reduced here in float32 on the device, there in float64 with numpy's pairwise
sums (whose order torch cannot reproduce exactly), so they agree to float32
rounding. Results are deterministic within a path.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from convscope.config.sections import PreprocessConfig
from convscope.data.images import MAX_IMAGE_PIXELS, PIXEL_ATTRIBUTE_NAMES, square_crop_box
from convscope.data.preprocess import (REC601, as_preprocess_config, crop_or_pad, geometry,
                                       input_hw, resized_wh, to_channels)

__all__ = [
    "jpeg_decode_available",
    "read_jpeg_for_device",
    "decode_jpegs",
    "prepare_images",
    "make_thumbnails",
    "pixel_attributes",
]

_GROUP_SIZE = 64  # images per batched kernel call (bounds float32 temporaries)
_available: dict[str, bool] = {}


def jpeg_decode_available(device: torch.device | str) -> bool:
    """Whether `torchvision.io.decode_jpeg` decodes on ``device`` (checked once per device)."""
    device = torch.device(device)
    key = str(device)
    if key not in _available:
        try:
            from torchvision.io import encode_jpeg

            probe = encode_jpeg(torch.full((3, 16, 16), 128, dtype=torch.uint8))
            decoded = decode_jpegs([probe], device)[0]
            _available[key] = isinstance(decoded, torch.Tensor) and decoded.shape == (3, 16, 16)
        except Exception:  # noqa: BLE001 - no torchvision image ops, no nvJPEG, ...
            _available[key] = False
    return _available[key]


def read_jpeg_for_device(path: str) -> bytes | None:
    """The file's bytes if the device decoder can take it exactly as Pillow would, else None.

    Taken: baseline/progressive JPEG files in RGB or grey, within `MAX_IMAGE_PIXELS`,
    without an EXIF rotation (nvJPEG does not apply one), ending with the EOI
    marker (so truncated files go to Pillow, which reports them). Anything
    else, errors included, returns None: the caller decodes it on the CPU.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        if len(data) < 4 or data[:3] != b"\xff\xd8\xff" or data[-2:] != b"\xff\xd9":
            return None
        from PIL import Image

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if (image.format != "JPEG" or image.mode not in ("RGB", "L")
                        or width * height > MAX_IMAGE_PIXELS or width < 1 or height < 1):
                    return None
                if image.getexif().get(0x0112, 1) not in (None, 1):
                    return None
        return data
    except Exception:  # noqa: BLE001 - let the CPU path find and word the error
        return None


def decode_jpegs(data: list[torch.Tensor], device: torch.device | str) -> list[torch.Tensor | str]:
    """Decode JPEG byte tensors on ``device`` to ``(3, H, W) uint8`` RGB.

    One batched call; if it fails, one call per image. An image that fails
    alone is returned as a reason string instead of a tensor.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    device = torch.device(device)
    if not data:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            images = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
            return [_check_decoded(img) for img in images]
        except Exception:  # noqa: BLE001 - find the culprit(s) one by one
            pass
        out: list[torch.Tensor | str] = []
        for one in data:
            try:
                out.append(_check_decoded(decode_jpeg([one], mode=ImageReadMode.RGB,
                                                      device=device)[0]))
            except Exception as exc:  # noqa: BLE001
                out.append(f"cannot decode image on {device.type} ({type(exc).__name__}: {exc})")
        return out


def _check_decoded(image: torch.Tensor) -> torch.Tensor:
    if image.ndim != 3 or image.shape[0] != 3 or image.shape[1] < 1 or image.shape[2] < 1:
        raise ValueError(f"decoder returned shape {tuple(image.shape)}")
    return image


def _groups(images: list[torch.Tensor]):
    """Yield (positions, (n, 3, H, W) stack) for images of equal size, at most _GROUP_SIZE at once."""
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        by_shape.setdefault(tuple(image.shape[1:]), []).append(i)
    for positions in by_shape.values():
        for start in range(0, len(positions), _GROUP_SIZE):
            part = positions[start:start + _GROUP_SIZE]
            yield part, torch.stack([images[i] for i in part])


def _to_uint8(values: torch.Tensor) -> torch.Tensor:
    return values.round_().clamp_(0, 255).to(torch.uint8)


def _resize(stack: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    """(n, 3, H, W) uint8 -> (n, 3, height, width) uint8, antialiased."""
    if tuple(stack.shape[2:]) == (height, width):
        return stack
    resized = F.interpolate(stack.float(), size=(height, width), mode=mode, antialias=True,
                            align_corners=False)
    return _to_uint8(resized)


def prepare_images(images: list[torch.Tensor],
                   preprocess: PreprocessConfig | Mapping) -> torch.Tensor:
    """`convscope.data.preprocess.prepare_uint8` for a list of ``(3, H, W) uint8`` tensors.

    Returns:
        (N, in_h, in_w, channels) uint8 on the images' device; areas a crop takes
        outside a small image are 0.
    """
    cfg = as_preprocess_config(preprocess)
    in_h, in_w = input_hw(cfg)
    device = images[0].device
    out = torch.zeros(len(images), in_h, in_w, cfg.channels, dtype=torch.uint8, device=device)
    for positions, stack in _groups(images):
        orig_h, orig_w = stack.shape[2:]
        new_w, new_h = resized_wh(orig_w, orig_h, cfg)
        _, _, left, top = geometry(orig_w, orig_h, cfg)
        resized = _resize(stack, new_h, new_w, "bilinear").permute(0, 2, 3, 1)
        prepared = to_channels(crop_or_pad(resized, left, top, in_h, in_w), cfg.channels)
        out[torch.as_tensor(positions, device=device)] = prepared
    return out


def make_thumbnails(images: list[torch.Tensor], size: int) -> torch.Tensor:
    """(N, size, size, 3) uint8 thumbnails: centre square crop, then antialiased bicubic resize.

    The crop is that of `convscope.data.images.make_thumbnail` (`square_crop_box`);
    the resize is bicubic (Pillow's there is Lanczos), so pixels may differ by a few
    grey levels.
    """
    size = int(size)
    if size < 1:
        raise ValueError(f"thumbnail size must be >= 1, got {size}")
    device = images[0].device
    out = torch.empty(len(images), size, size, 3, dtype=torch.uint8, device=device)
    for positions, stack in _groups(images):
        top, left, side = square_crop_box(*stack.shape[2:])
        square = stack[:, :, top:top + side, left:left + side]
        out[torch.as_tensor(positions, device=device)] = \
            _resize(square, size, size, "bicubic").permute(0, 2, 3, 1)
    return out


def pixel_attributes(images: list[torch.Tensor]) -> torch.Tensor:
    """(N, 7) float32 attributes, columns in `PIXEL_ATTRIBUTE_NAMES` order.

    Same definitions as `convscope.data.images.pixel_attributes`: brightness and
    contrast (mean and std of Rec.601 luma, 0..1), colourfulness (Hasler &
    Suesstrunk on the 0..255 scale), mean HSV saturation, width, height (pixels),
    aspect (width / height).
    """
    device = images[0].device
    out = torch.empty(len(images), len(PIXEL_ATTRIBUTE_NAMES), dtype=torch.float32, device=device)
    for positions, stack in _groups(images):
        height, width = stack.shape[2:]
        rgb = stack.float()
        red, green, blue = rgb[:, 0], rgb[:, 1], rgb[:, 2]
        luma = (red * REC601[0] + green * REC601[1] + blue * REC601[2]) / 255.0
        contrast, brightness = torch.std_mean(luma.flatten(1), dim=1, correction=0)
        rg = (red - green).flatten(1)
        yb = (0.5 * (red + green) - blue).flatten(1)
        rg_std, rg_mean = torch.std_mean(rg, dim=1, correction=0)
        yb_std, yb_mean = torch.std_mean(yb, dim=1, correction=0)
        colourfulness = torch.hypot(rg_std, yb_std) + 0.3 * torch.hypot(rg_mean, yb_mean)
        top = stack.amax(dim=1).float()
        spread = top - stack.amin(dim=1).float()
        saturation = torch.where(top > 0, spread / top.clamp_min(1.0), 0.0).flatten(1).mean(dim=1)
        n = len(positions)
        sizes = torch.tensor([float(width), float(height), float(width) / float(height)],
                             dtype=torch.float32, device=device).expand(n, 3)
        out[torch.as_tensor(positions, device=device)] = torch.cat(
            [torch.stack([brightness, contrast, colourfulness, saturation], dim=1), sizes], dim=1)
    return out
