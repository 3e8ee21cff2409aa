"""Decode a chunk of images at once: the CPU path of extraction, with little work per image.

A data-loader worker gets a chunk of manifest rows (`convscope.extract.loader`) and
`decode_chunk` returns, for each row, the model-input pixels, the thumbnail and the
pixel attributes (or the reason it failed). Two things keep this cheap:

- **JPEG draft mode.** When the model input and the thumbnail are much smaller than
  a JPEG file, Pillow decodes it at 1/2, 1/4 or 1/8 scale (DCT scaling) to the
  smallest scale whose sides stay >= `draft_side` pixels (`DRAFT_MARGIN` times what
  the resize and the thumbnail need). The prepared image, the thumbnail and the
  pixel attributes then come from that smaller image; ``width``, ``height`` and
  ``aspect`` stay those of the file, and the resize and crop follow the file's
  geometry (`convscope.data.preprocess.geometry`), so boxes mapped back to the
  original are unchanged. The results agree with decoding the whole file within
  the tolerances in benchmarks/README.md (tests/test_bulk_decode.py). Off with
  ``extract.jpeg_draft: false``; never used with ``crop: center`` and no
  ``resize`` (the crop then takes original pixels).
- **Bulk arrays.** Rows of one array file (``.npz`` / ``.h5``) in a chunk are read in
  one call (`convscope.data.images.load_array_rows`); images of one shape in a chunk
  (all of them in a dataset of small images of one size) are cropped and converted as
  one array, and small ones (<= 64 x 64 pixels) described as one array
  (`pixel_attributes_batch`); numpy describes larger ones faster one by one.

Without draft mode every value equals the single-image functions of
`convscope.data.images` and `convscope.data.preprocess` (pixel attributes to float64
rounding: numpy sums per image along axes instead of over a flat array).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from convscope.config.sections import PreprocessConfig
from convscope.data.images import (PIXEL_ATTRIBUTE_NAMES, ImageReadError, load_array_rows,
                                   load_image_scaled, make_thumbnail, pixel_attributes)
from convscope.data.preprocess import (REC601, as_preprocess_config, crop_or_pad, geometry,
                                       input_hw, resized_wh, to_channels)

__all__ = ["DRAFT_MARGIN", "draft_side", "pixel_attributes_batch", "describe_batch",
           "prepare_batch", "decode_chunk"]

#: A drafted JPEG keeps at least this many times the pixels the resize and thumbnail need.
DRAFT_MARGIN: int = 2

#: Pixels (images x height x width) prepared in one array: bounds a worker's memory.
_PIXELS_PER_GROUP = 1 << 18
#: Images up to this many pixels are described together (`pixel_attributes_batch`); larger
#: ones one by one, which numpy reduces faster (measured: benchmarks/README.md).
_BATCH_ATTRS_MAX_PIXELS = 64 * 64
_REC601 = np.array(REC601, dtype=np.float32)


def draft_side(preprocess: PreprocessConfig | Mapping, thumb_px: int) -> int | None:
    """Smallest side a drafted JPEG may have, or None where draft mode must not be used."""
    cfg = as_preprocess_config(preprocess)
    if cfg.crop != "none" and not cfg.resize:
        return None  # the crop takes pixels of the file as they are
    in_h, in_w = input_hw(cfg)
    need = max(in_h, in_w, int(thumb_px), int(cfg.resize or 0))
    return DRAFT_MARGIN * need


def pixel_attributes_batch(images: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """`convscope.data.images.pixel_attributes` of (n, H, W, 3) uint8 images at once.

    ``sizes`` (n, 2) are the files' (width, height). Returns (n, 7) float32 in the
    order of `convscope.data.images.PIXEL_ATTRIBUTE_NAMES`.
    """
    images = images.reshape(len(images), -1, 3)  # reductions along one contiguous axis
    rgb = images.astype(np.float32)
    axes = 1
    luma = (rgb @ _REC601) / 255.0
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg = red - green
    yb = 0.5 * (red + green) - blue
    sigma = np.hypot(rg.std(axis=axes, dtype=np.float64), yb.std(axis=axes, dtype=np.float64))
    mu = np.hypot(rg.mean(axis=axes, dtype=np.float64), yb.mean(axis=axes, dtype=np.float64))
    planes = images[..., 0], images[..., 1], images[..., 2]
    top = np.maximum(np.maximum(planes[0], planes[1]), planes[2]).astype(np.float32)
    spread = top - np.minimum(np.minimum(planes[0], planes[1]), planes[2]).astype(np.float32)
    saturation = np.divide(spread, top, out=np.zeros_like(top), where=top > 0)
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    return np.stack([luma.mean(axis=axes, dtype=np.float64),
                     luma.std(axis=axes, dtype=np.float64),
                     sigma + 0.3 * mu,
                     saturation.mean(axis=axes, dtype=np.float64),
                     sizes[:, 0], sizes[:, 1], sizes[:, 0] / sizes[:, 1]], axis=1).astype(np.float32)


def prepare_batch(images: np.ndarray, size: tuple[int, int],
                  preprocess: PreprocessConfig | Mapping) -> np.ndarray:
    """`convscope.data.preprocess.prepare_uint8` of (n, H, W, 3) images of one file size.

    ``size`` is the files' (width, height): the resize goes to the size the file would be
    resized to, and the crop falls where it would fall in the file (H, W may be smaller:
    drafted JPEGs).
    """
    cfg = as_preprocess_config(preprocess)
    new_w, new_h = resized_wh(size[0], size[1], cfg)
    if images.shape[1:3] != (new_h, new_w):
        images = np.stack([np.asarray(Image.fromarray(image).resize((new_w, new_h),
                                                                    Image.BILINEAR))
                           for image in images])
    in_h, in_w = input_hw(cfg)
    _, _, left, top = geometry(size[0], size[1], cfg)
    batch = torch.from_numpy(np.ascontiguousarray(images))
    return to_channels(crop_or_pad(batch, left, top, in_h, in_w), cfg.channels).numpy()


def describe_batch(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(n, 7) pixel attributes of images of one file ``size`` (width, height)."""
    if images.shape[1] * images.shape[2] <= _BATCH_ATTRS_MAX_PIXELS:
        return pixel_attributes_batch(images, np.array([size] * len(images)))
    width, height = float(size[0]), float(size[1])  # the file's, not the drafted image's
    rows = []
    for image in images:
        named = dict(pixel_attributes(image), width=width, height=height, aspect=width / height)
        rows.append([named[k] for k in PIXEL_ATTRIBUTE_NAMES])
    return np.array(rows, np.float32)


def _load_arrays(paths: Sequence[str], slots: Sequence[int]) -> dict:
    """Array rows read file by file at once (positions -> (image, size)); a file with any
    unreadable row is left to `load_image_scaled`, row by row."""
    by_file: dict[str, list[int]] = {}
    for i, (path, slot) in enumerate(zip(paths, slots)):
        if int(slot) >= 0:
            by_file.setdefault(path, []).append(i)
    loaded = {}
    for path, members in by_file.items():
        try:
            rows = load_array_rows(path, [int(slots[i]) for i in members])
        except ImageReadError:
            continue
        size = (rows.shape[2], rows.shape[1])
        loaded.update((i, (row, size)) for i, row in zip(members, rows))
    return loaded


def _load(paths: Sequence[str], slots: Sequence[int], side: int | None):
    loaded, failed = _load_arrays(paths, slots), {}
    for i, (path, slot) in enumerate(zip(paths, slots)):
        if i in loaded:
            continue
        try:
            loaded[i] = load_image_scaled(path, int(slot), side)
        except ImageReadError as exc:
            failed[i] = str(exc) or type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - a bad image must never crash a shard
            failed[i] = f"{type(exc).__name__}: {exc}"
    return loaded, failed


def _groups(loaded: dict) -> list[list[int]]:
    """Positions of images with the same array shape and file size, in bounded groups."""
    by_key: dict[tuple, list[int]] = {}
    for i, (image, size) in loaded.items():
        by_key.setdefault((image.shape, size), []).append(i)
    groups = []
    for (shape, _), members in by_key.items():
        step = max(1, _PIXELS_PER_GROUP // (shape[0] * shape[1]))
        groups += [members[s:s + step] for s in range(0, len(members), step)]
    return groups


def decode_chunk(paths: Sequence[str], slots: Sequence[int],
                 preprocess: PreprocessConfig | Mapping, thumb_px: int,
                 jpeg_draft: bool = True) -> list[dict]:
    """Each image as ``image`` (in_h, in_w, C), ``thumb`` (t, t, 3) uint8 and ``attrs`` (7,)
    float32, or ``failed`` with the reason (never raises for a bad image)."""
    cfg = as_preprocess_config(preprocess)
    side = draft_side(cfg, thumb_px) if jpeg_draft else None
    loaded, failed = _load(paths, slots, side)
    out: list[dict] = [{} for _ in paths]  # every position is filled below
    for i, reason in failed.items():
        out[i] = {"failed": reason}
    for members in _groups(loaded):
        images = np.stack([loaded[i][0] for i in members])
        size = loaded[members[0]][1]
        try:
            prepared = prepare_batch(images, size, cfg)
            attrs = describe_batch(images, size)
            for k, i in enumerate(members):
                out[i] = {"image": prepared[k], "thumb": make_thumbnail(images[k], thumb_px),
                          "attrs": attrs[k]}
        except Exception as exc:  # noqa: BLE001 - e.g. a crop the image cannot give
            for i in members:
                out[i] = {"failed": f"{type(exc).__name__}: {exc}"}
    return out
