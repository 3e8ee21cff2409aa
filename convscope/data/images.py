"""Read one image robustly, and describe it by its pixels.

`load_image` turns any image file Pillow can decode, or one row of an array
file (``.npz`` / ``.h5``), into an ``(H, W, 3) uint8`` RGB array. Every
failure -- missing, empty, corrupt, truncated or oversized files, or any
error inside the decoder -- is raised as `ImageReadError` with a short
reason, which extraction stores in the shard's ``failed`` table.

Conversion rules (Pillow mode -> RGB):

- ``1`` / ``L``: grey replicated to three channels.
- ``LA`` / ``RGBA`` / ``PA`` / ``La`` / ``RGBa`` and any image carrying a
  ``transparency`` key (palette or colour-keyed): alpha-composited over white.
- ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: Pillow's conversion to RGB.
- 16-bit (``I;16*``) and 32-bit integer ``I``: values 0..65535 are *scaled*
  to 0..255 (``round(v / 257)``); values outside 0..65535 are clipped first.
- 32-bit float ``F``: if every finite value lies in [0, 1] the image is taken
  as unit intensities (``round(v * 255)``); otherwise it is divided by its
  maximum (negative values and NaN become 0). This keeps both "0..1 float"
  images and "raw float counts" images visible.
- EXIF orientation is applied (`PIL.ImageOps.exif_transpose`).
- Animated/multi-page files: the first frame.

Array rows use the same rules by dtype: ``(H, W)`` or ``(H, W, 1)`` grey,
``(H, W, 3)`` RGB, ``(H, W, 4)`` RGBA composited over white.
"""

from __future__ import annotations

import io
import os
import re
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

from convscope.config.sections import PreprocessConfig
from convscope.data.preprocess import REC601, prepare_uint8

__all__ = [
    "ImageReadError",
    "MAX_IMAGE_PIXELS",
    "PIXEL_ATTRIBUTE_NAMES",
    "load_image",
    "load_image_scaled",
    "load_array_rows",
    "read_prepared",
    "pixel_attributes",
    "square_crop_box",
    "make_thumbnail",
]

# Array files are opened from many processes (DataLoader workers) on shared
# file systems; we only ever read them, so HDF5's POSIX locking is not needed.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

#: Decompression-bomb limit in pixels (width * height); Pillow's default x 2.
#: A larger image raises `ImageReadError` before any pixel is decoded.
#: Pillow's own limit (2 x ``PIL.Image.MAX_IMAGE_PIXELS``) applies as well,
#: so raising this value beyond Pillow's needs raising that one too.
MAX_IMAGE_PIXELS: int = 178_956_970

#: Keys returned by `pixel_attributes`, in order.
PIXEL_ATTRIBUTE_NAMES: tuple[str, ...] = (
    "brightness",
    "contrast",
    "colourfulness",
    "saturation",
    "width",
    "height",
    "aspect",
)

_ARRAY_SUFFIXES = (".npz", ".h5", ".hdf5")
_MEMBER_SUFFIXES = (".tar", ".arrow", ".parquet")  # images as bytes in a container, by slot
_ARRAY_CACHE_SIZE = 8
_REC601 = np.array(REC601, dtype=np.float32)


class ImageReadError(Exception):
    """An image could not be read; ``str(error)`` is the short reason.

    ``error.path`` holds the file (and ``error.slot`` the array row, -1 for
    image files).
    """

    def __init__(self, reason: str, path: str | os.PathLike | None = None, slot: int = -1):
        super().__init__(reason)
        self.reason = reason
        self.path = None if path is None else os.fspath(path)
        self.slot = slot

    def __reduce__(self):  # keep path and slot when sent from a DataLoader worker
        return (type(self), (self.reason, self.path, self.slot))


# --------------------------------------------------------------------------
# pixel conversion


def _composite_over_white(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 -> (H, W, 3) uint8, alpha-blended over a white background."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32)
    out = rgb * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Any-dtype array -> uint8 by the rules in the module docstring."""
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * 255
    if values.dtype.kind in "iu":
        if values.dtype.itemsize == 1:  # int8: negative values clip to 0
            return np.clip(values, 0, 255).astype(np.uint8)
        wide = np.clip(values.astype(np.int64), 0, 65535)
        return ((wide * 255 + 32767) // 65535).astype(np.uint8)
    if values.dtype.kind == "f":
        data = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        finite = values[np.isfinite(values)]
        top = float(finite.max()) if finite.size else 0.0
        if top > 1.0:
            data = data / top
        return np.rint(np.clip(data, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ImageReadError(f"unsupported pixel dtype {values.dtype}")


def _array_to_rgb(pixels: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array -> (H, W, 3) uint8 RGB."""
    pixels = np.asarray(pixels)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim == 2:
        grey = _scale_to_uint8(pixels)
        return np.repeat(grey[..., None], 3, axis=2)
    if pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        pixels = _scale_to_uint8(pixels)
        if pixels.shape[2] == 4:
            return _composite_over_white(pixels)
        return np.ascontiguousarray(pixels)
    raise ImageReadError(
        f"unsupported image array shape {pixels.shape}: expected (H, W) or (H, W, C) with C in 1, 3, 4"
    )


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    """Decoded Pillow image of any mode -> (H, W, 3) uint8 RGB."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return np.asarray(image, dtype=np.uint8).copy()
    if mode in ("1", "L") and "transparency" not in image.info:
        return _array_to_rgb(np.asarray(image.convert("L")))
    if mode.startswith("I;16") or mode in ("I", "F"):
        # np.asarray handles I;16 / I;16B / I;16L byte orders.
        return _array_to_rgb(np.asarray(image))
    if mode in ("LA", "La", "RGBA", "RGBa", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return _composite_over_white(np.asarray(rgba, dtype=np.uint8))
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


# --------------------------------------------------------------------------
# image files


def _check_size(width: int, height: int) -> None:
    if int(width) * int(height) > MAX_IMAGE_PIXELS:
        raise ImageReadError(
            f"image too large: {width} x {height} pixels > {MAX_IMAGE_PIXELS}"
        )


def _decoder_reason(error: BaseException) -> str:
    message = str(error).strip()
    if isinstance(error, Image.DecompressionBombError):
        # Pillow's own limit (2 x Image.MAX_IMAGE_PIXELS) fired while reading the header.
        found = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", message)
        if found:
            return f"image too large: {found[1]} pixels > {found[2]}"
        return f"image too large ({message})"
    if isinstance(error, Image.UnidentifiedImageError):
        return "cannot identify image file"
    if isinstance(error, EOFError) or "truncated" in message.lower():
        return "truncated image"
    if isinstance(error, MemoryError):
        return "out of memory while decoding"
    detail = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return f"cannot decode image ({detail})"


def _decode_file(path: str | io.BytesIO, draft_side: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode (inside `_load_image_file`'s error handling); JPEGs in draft mode when asked."""
    with warnings.catch_warnings():
        # We apply our own limit below; Pillow's warning would only be noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            _check_size(*image.size)
            size, drafted = image.size, False  # the file's size, before any draft
            if draft_side and image.format == "JPEG":
                drafted = image.draft(image.mode, (draft_side, draft_side)) is not None
            if drafted and image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # turned by 90 deg
                size = size[::-1]
            image.load()
            image = ImageOps.exif_transpose(image)
            if not drafted:
                size = image.size
            return _pil_to_rgb(image), (int(size[0]), int(size[1]))


def _load_image_file(path: str, draft_side: int | None = None
                     ) -> tuple[np.ndarray, tuple[int, int]]:
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise ImageReadError("file not found", path) from None
    except OSError as error:
        raise ImageReadError(f"cannot access file ({error.strerror})", path) from None
    if not os.path.isfile(path):
        raise ImageReadError("not a regular file", path)
    if size == 0:
        raise ImageReadError("zero-byte file", path)
    try:
        return _decode_file(path, draft_side)
    except ImageReadError as error:
        error.path = path
        raise
    except PermissionError:
        raise ImageReadError("permission denied", path) from None
    except Exception as error:  # anything the decoder raises is a read failure
        raise ImageReadError(_decoder_reason(error), path) from error


# --------------------------------------------------------------------------
# array files (.npz / .h5), cached per process


class _ArrayFile:
    """An open array file: ``images`` is indexable by row without loading all rows (h5)."""

    def __init__(self, path: str):
        self.path = path
        suffix = os.path.splitext(path)[1].lower()
        self._h5 = None
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                if "images" not in archive.files:
                    raise ImageReadError(
                        f"array file has no 'images' (keys: {', '.join(archive.files) or 'none'})"
                    )
                self.images = archive["images"]
        else:
            import h5py

            self._h5 = h5py.File(path, "r", locking=False)
            if "images" not in self._h5:
                keys = ", ".join(self._h5.keys()) or "none"
                self._h5.close()
                raise ImageReadError(f"array file has no 'images' (keys: {keys})")
            self.images = self._h5["images"]
        if len(self.images.shape) not in (3, 4):
            raise ImageReadError(
                f"'images' has shape {self.images.shape}; expected (N, H, W) or (N, H, W, C)"
            )

    def close(self) -> None:
        if self._h5 is not None:
            try:
                self._h5.close()
            except Exception:
                pass


_array_cache: OrderedDict[tuple[int, str], _ArrayFile] = OrderedDict()


def _open_array_file(path: str) -> _ArrayFile:
    # Keyed by pid so a forked DataLoader worker opens its own handle.
    key = (os.getpid(), os.path.abspath(path))
    handle = _array_cache.get(key)
    if handle is not None:
        _array_cache.move_to_end(key)
        return handle
    handle = _ArrayFile(path)
    _array_cache[key] = handle
    while len(_array_cache) > _ARRAY_CACHE_SIZE:
        old_key, old = _array_cache.popitem(last=False)
        if old_key[0] == os.getpid():
            old.close()
    return handle


def _load_member(path: str, slot: int) -> np.ndarray:
    """Image ``slot`` of a WebDataset tar or a Hugging Face data file (`_MEMBER_SUFFIXES`)."""
    from convscope.data.hfdata import read_row_bytes
    from convscope.data.tars import read_tar_member

    try:
        reader = read_tar_member if path.lower().endswith(".tar") else read_row_bytes
        return _decode_file(io.BytesIO(reader(path, slot)), None)[0]
    except ImageReadError as error:
        error.path, error.slot = path, slot
        raise
    except Exception as error:  # anything the reader or decoder raises is a read failure
        raise ImageReadError(_decoder_reason(error), path, slot) from error


def _load_array_row(path: str, slot: int) -> np.ndarray:
    if not os.path.exists(path):
        raise ImageReadError("file not found", path, slot)
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ImageReadError("zero-byte file", path, slot)
    suffix = os.path.splitext(path)[1].lower()
    if suffix in _MEMBER_SUFFIXES:
        return _load_member(path, slot)
    if suffix not in _ARRAY_SUFFIXES:
        raise ImageReadError(
            f"slot {slot} given for {suffix or 'a file without suffix'}; array files are "
            + ", ".join(_ARRAY_SUFFIXES),
            path,
            slot,
        )
    try:
        array_file = _open_array_file(path)
        count = array_file.images.shape[0]
        if not 0 <= slot < count:
            raise ImageReadError(f"slot {slot} out of range (file has {count} images)")
        height, width = array_file.images.shape[1:3]
        _check_size(width, height)
        return _array_to_rgb(np.asarray(array_file.images[slot]))
    except ImageReadError as error:
        error.path, error.slot = path, slot
        raise
    except (zipfile.BadZipFile, ValueError, OSError, KeyError) as error:
        raise ImageReadError(f"cannot read array file ({type(error).__name__}: {error})", path, slot) from error
    except Exception as error:
        raise ImageReadError(_decoder_reason(error), path, slot) from error


def load_array_rows(path: str | os.PathLike, slots: Sequence[int]) -> np.ndarray:
    """Rows ``slots`` of one ``.npz`` / ``.h5`` file read at once, as (n, H, W, 3) uint8 RGB
    (`load_image`'s rules, row by row). Raises `ImageReadError` when any of them cannot be
    read; `load_image` then tells which and why."""
    path, slots = os.fspath(path), np.asarray(slots, dtype=np.int64)
    if os.path.splitext(path)[1].lower() not in _ARRAY_SUFFIXES or not os.path.isfile(path):
        raise ImageReadError("not an array file", path)
    try:
        images = _open_array_file(path).images
        if slots.size == 0 or slots.min() < 0 or slots.max() >= images.shape[0]:
            raise ImageReadError("slot out of range", path)
        _check_size(images.shape[2], images.shape[1])
        unique, where = np.unique(slots, return_inverse=True)  # h5py reads increasing rows
        rows = np.asarray(images[unique])[where]
        return np.stack([_array_to_rgb(row) for row in rows])
    except ImageReadError:
        raise
    except Exception as error:  # noqa: BLE001 - reported row by row by the caller
        raise ImageReadError(f"cannot read array file ({type(error).__name__})", path) from error


def load_image(path: str | os.PathLike, slot: int = -1) -> np.ndarray:
    """Read one image as an ``(H, W, 3) uint8`` RGB array.

    ``slot >= 0``: ``path`` is an ``.npz`` / ``.h5`` / ``.hdf5`` file with an
    ``images`` array of shape (N, H, W) or (N, H, W, C), C in 1, 3, 4, and the
    image is row ``slot``; or a WebDataset ``.tar`` / Hugging Face ``.arrow`` / ``.parquet``
    file and the image is its image number ``slot`` (`convscope.data.tars`,
    `convscope.data.hfdata`). Otherwise ``path`` is an image file decoded with
    Pillow (see the module docstring for the conversion rules).

    Raises `ImageReadError` (never another exception type) with a short
    reason: "file not found", "zero-byte file", "cannot identify image file",
    "truncated image", "image too large: W x H pixels > limit", ...
    """
    return load_image_scaled(path, slot)[0]


def load_image_scaled(path: str | os.PathLike, slot: int = -1, draft_side: int | None = None
                      ) -> tuple[np.ndarray, tuple[int, int]]:
    """`load_image`, and the image's ``(width, height)`` in the file.

    ``draft_side``: a JPEG file is decoded at 1/2, 1/4 or 1/8 scale (Pillow's draft
    mode, DCT scaling) when both sides stay >= ``draft_side`` pixels; the array is
    then that smaller image and the size still the file's (after EXIF rotation).
    """
    path = os.fspath(path)
    if slot is not None and int(slot) >= 0:
        image = _load_array_row(path, int(slot))
        return image, (image.shape[1], image.shape[0])
    return _load_image_file(path, draft_side)


# --------------------------------------------------------------------------
# pixel statistics and thumbnails


def _check_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    return image


def read_prepared(paths: Sequence[str | os.PathLike], slots: Sequence[int],
                  preprocess: PreprocessConfig) -> np.ndarray:
    """(N, h, w, C) uint8 model-input pixels of the images (read, then resized, cropped and
    converted to the model's channels by `convscope.data.preprocess.prepare_uint8`; before
    the mean/std)."""
    return np.stack([prepare_uint8(load_image(str(path), int(slot)), preprocess)
                     for path, slot in zip(paths, slots)])


def pixel_attributes(image: np.ndarray) -> dict[str, float]:
    """Attributes computed from pixels of an ``(H, W, 3) uint8`` RGB image.

    The CPU reference: statistics in float64 with numpy's pairwise sums.
    `convscope.data.gpu_decode.pixel_attributes` computes the same definitions
    on the device in float32 (agreeing to float32 rounding); one tensor
    implementation for both would change these bytes, as torch sums in
    another order.

    - ``brightness``: mean Rec.601 luma ``0.299 R + 0.587 G + 0.114 B``, in 0..1.
    - ``contrast``: standard deviation (ddof=0) of that luma, in 0..1.
    - ``colourfulness``: Hasler & Suesstrunk (2003) ``M = sigma_rgyb + 0.3 mu_rgyb``
      with ``rg = R - G``, ``yb = (R + G) / 2 - B`` on the 0..255 scale.
    - ``saturation``: mean HSV saturation ``(max - min) / max`` (0 where max = 0), 0..1.
    - ``width``, ``height`` in pixels; ``aspect`` = width / height.
    """
    image = _check_rgb(image)
    height, width = image.shape[:2]
    rgb = image.astype(np.float32)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]

    luma = (rgb @ _REC601) / 255.0
    rg = red - green
    yb = 0.5 * (red + green) - blue
    sigma = np.hypot(rg.std(dtype=np.float64), yb.std(dtype=np.float64))
    mu = np.hypot(rg.mean(dtype=np.float64), yb.mean(dtype=np.float64))

    # elementwise over the colour planes: ~10x faster than image.max(axis=2)
    red, green, blue = image[..., 0], image[..., 1], image[..., 2]
    top = np.maximum(np.maximum(red, green), blue).astype(np.float32)
    spread = top - np.minimum(np.minimum(red, green), blue).astype(np.float32)
    saturation = np.divide(spread, top, out=np.zeros_like(top), where=top > 0)

    return {
        "brightness": float(luma.mean(dtype=np.float64)),
        "contrast": float(luma.std(dtype=np.float64)),
        "colourfulness": float(sigma + 0.3 * mu),
        "saturation": float(saturation.mean(dtype=np.float64)),
        "width": float(width),
        "height": float(height),
        "aspect": float(width) / float(height),
    }


def square_crop_box(height: int, width: int) -> tuple[int, int, int]:
    """``(top, left, side)`` of the central square of an image, in pixels.

    The square keeps ``min(height, width)`` pixels a side; the extra pixels are
    split as evenly as possible, the odd one going to the bottom/right. Used by
    both thumbnail paths (here and `convscope.data.gpu_decode.make_thumbnails`).
    """
    side = min(int(height), int(width))
    return (int(height) - side) // 2, (int(width) - side) // 2, side


def make_thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """``(size, size, 3) uint8`` thumbnail: centre square crop, then antialiased resize.

    The crop keeps the central square (`square_crop_box`); the resize uses
    Pillow's Lanczos filter, which low-pass filters when shrinking (the CPU
    reference: no tensor op reproduces Pillow's fixed-point filter bit for bit).
    """
    image = _check_rgb(image)
    size = int(size)
    if size < 1:
        raise ValueError(f"thumbnail size must be >= 1, got {size}")
    top, left, side = square_crop_box(*image.shape[:2])
    square = np.ascontiguousarray(image[top : top + side, left : left + side], dtype=np.uint8)
    if side == size:
        return square.copy()
    resized = Image.fromarray(square).resize(
        (size, size), Image.Resampling.LANCZOS, reducing_gap=3.0
    )
    return np.asarray(resized, dtype=np.uint8).copy()
