"""Bulk decoding of a chunk (convscope.data.bulk) against the one-image-at-a-time path.

Without draft mode the results must be the same; with JPEG draft mode within the
tolerances written in benchmarks/README.md ("Draft-mode tolerances").
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from convscope.data.bulk import decode_chunk, draft_side
from convscope.data.images import PIXEL_ATTRIBUTE_NAMES, load_image, make_thumbnail, pixel_attributes
from convscope.data.preprocess import as_preprocess_config, prepare_uint8

THUMB = 8
PRE = as_preprocess_config({"input_size": 24, "resize": 24, "crop": "center", "channels": 3})
PRE_GREY = as_preprocess_config({"input_size": 20, "crop": "none", "channels": 1})

# benchmarks/README.md, "Draft-mode tolerances"
TOL_IMAGE_MEAN, TOL_IMAGE_P99 = 1.5, 10
TOL_THUMB_MEAN, TOL_THUMB_P99 = 3.0, 20
TOL_ATTRS = {"brightness": 0.003, "contrast": 0.006, "colourfulness": 1.0, "saturation": 0.01}


def _photo(seed: int, height: int, width: int) -> np.ndarray:
    """Smooth colour field with a bright rectangle and grain (like the benchmark's images)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.int16)
    field[height // 4: height // 2, width // 3: width // 2] = rng.integers(0, 256, size=3)
    grain = rng.normal(0.0, 6.0, size=field.shape).astype(np.int16)
    return np.clip(field + grain, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bulk")
    paths = []
    for i in range(4):
        path = root / f"photo{i}.jpg"
        Image.fromarray(_photo(i, 192, 256)).save(path, quality=90)
        paths.append(str(path))
    turned = root / "turned.jpg"  # EXIF orientation 6: shown as 256 x 192 (H x W)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_photo(7, 192, 256)).save(turned, quality=90, exif=exif)
    grey = root / "grey.jpg"
    Image.fromarray(_photo(8, 200, 160)).convert("L").save(grey, quality=90)
    png = root / "small.png"
    Image.fromarray(_photo(9, 30, 40)).save(png)
    broken = root / "broken.jpg"
    broken.write_bytes(turned.read_bytes()[:200])
    return paths + [str(turned), str(grey), str(png), str(broken)]


def _reference(path: str, pre) -> dict:
    image = load_image(path)
    attrs = pixel_attributes(image)
    return {"image": prepare_uint8(image, pre), "thumb": make_thumbnail(image, THUMB),
            "attrs": np.array([attrs[k] for k in PIXEL_ATTRIBUTE_NAMES]), "hw": image.shape[:2]}


@pytest.mark.parametrize("pre", [PRE, PRE_GREY], ids=["center", "none-grey"])
def test_without_draft_equals_one_by_one(files, pre):
    got = decode_chunk(files, [-1] * len(files), pre, THUMB, jpeg_draft=False)
    assert "truncated" in got[-1]["failed"] or "cannot" in got[-1]["failed"]
    for path, item in zip(files[:-1], got[:-1]):
        ref = _reference(path, pre)
        np.testing.assert_array_equal(item["image"], ref["image"])
        np.testing.assert_array_equal(item["thumb"], ref["thumb"])
        np.testing.assert_allclose(item["attrs"], ref["attrs"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("pre", [PRE, PRE_GREY], ids=["center", "none-grey"])
def test_draft_within_tolerances(files, pre):
    got = decode_chunk(files, [-1] * len(files), pre, THUMB, jpeg_draft=True)
    assert "failed" in got[-1] and all("failed" not in item for item in got[:-1])
    image_diff, thumb_diff = [], []
    for path, item in zip(files[:-1], got[:-1]):
        ref = _reference(path, pre)
        assert item["image"].shape == ref["image"].shape
        image_diff.append(np.abs(item["image"].astype(int) - ref["image"].astype(int)).ravel())
        thumb_diff.append(np.abs(item["thumb"].astype(int) - ref["thumb"].astype(int)).ravel())
        named = dict(zip(PIXEL_ATTRIBUTE_NAMES, item["attrs"]))
        expected = dict(zip(PIXEL_ATTRIBUTE_NAMES, ref["attrs"]))
        height, width = ref["hw"]  # the file's size, after EXIF rotation
        assert (named["width"], named["height"]) == (width, height)
        assert named["aspect"] == pytest.approx(width / height)
        for key, tol in TOL_ATTRS.items():
            assert abs(named[key] - expected[key]) <= tol, (path, key, named[key], expected[key])
    image_diff, thumb_diff = np.concatenate(image_diff), np.concatenate(thumb_diff)
    assert image_diff.mean() <= TOL_IMAGE_MEAN and np.percentile(image_diff, 99) <= TOL_IMAGE_P99
    assert thumb_diff.mean() <= TOL_THUMB_MEAN and np.percentile(thumb_diff, 99) <= TOL_THUMB_P99


def test_draft_decodes_smaller_and_keeps_file_size(files):
    from convscope.data.images import load_image_scaled

    side = draft_side(PRE, THUMB)
    assert side == 48  # 2 x max(input 24, resize 24, thumbnail 8)
    image, size = load_image_scaled(files[0], -1, side)
    assert image.shape == (48, 64, 3) and size == (256, 192)  # 1/4 scale
    image, size = load_image_scaled(files[4], -1, side)  # EXIF-turned
    assert image.shape == (64, 48, 3) and size == (192, 256)
    assert draft_side(as_preprocess_config({"input_size": 24, "resize": None, "crop": "center"}), THUMB) is None


def test_array_rows_read_at_once_equal_row_by_row(tmp_path):
    import h5py

    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, size=(5, 12, 10), dtype=np.uint8)
    floats = rng.random((4, 12, 10, 3)).astype(np.float32) * 7.0  # scaled per image
    np.savez(tmp_path / "grey.npz", images=grey)
    with h5py.File(tmp_path / "floats.h5", "w") as f:
        f["images"] = floats
    paths = [str(tmp_path / "grey.npz")] * 3 + [str(tmp_path / "floats.h5")] * 3
    np.savez(tmp_path / "other.npz", images=grey)
    paths.append(str(tmp_path / "other.npz"))  # a file of its own: the others are read at once
    slots = [4, 0, 4, 3, 1, 2, 9]  # repeated, unordered, and one out of range
    got = decode_chunk(paths, slots, PRE_GREY, THUMB)
    assert "out of range" in got[-1]["failed"]
    for path, slot, item in zip(paths[:-1], slots[:-1], got[:-1]):
        image = load_image(path, slot)
        np.testing.assert_array_equal(item["image"], prepare_uint8(image, PRE_GREY))
        np.testing.assert_array_equal(item["thumb"], make_thumbnail(image, THUMB))
        expected = pixel_attributes(image)
        np.testing.assert_allclose(item["attrs"], [expected[k] for k in PIXEL_ATTRIBUTE_NAMES],
                                   rtol=1e-6, atol=1e-7)
