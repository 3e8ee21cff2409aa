"""Tests for convscope.data.images: robust reading, conversions, pixel attributes, thumbnails."""

from __future__ import annotations

import colorsys
import io

import h5py
import numpy as np
import pytest
from PIL import Image

from convscope.data import images as images
from convscope.data.images import (
    PIXEL_ATTRIBUTE_NAMES,
    ImageReadError,
    load_image,
    make_thumbnail,
    pixel_attributes,
)


def _save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


# --------------------------------------------------------------------------
# conversions


def test_rgb_png_roundtrip(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (7, 11, 3), dtype=np.uint8)
    path = _save(Image.fromarray(rgb), tmp_path / "a.png")
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (7, 11, 3)
    np.testing.assert_array_equal(out, rgb)


def test_grayscale_and_bilevel_become_grey_rgb(tmp_path):
    grey = np.arange(60, dtype=np.uint8).reshape(6, 10) * 4
    out = load_image(_save(Image.fromarray(grey), tmp_path / "g.png"))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))

    bits = np.zeros((4, 8), dtype=bool)
    bits[:, 4:] = True
    out = load_image(_save(Image.fromarray(bits), tmp_path / "b.png"))
    assert out.shape == (4, 8, 3)
    assert (out[:, :4] == 0).all() and (out[:, 4:] == 255).all()


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.array([[[255, 0, 0, 255], [255, 0, 0, 128], [0, 0, 255, 0], [0, 200, 0, 64]]], dtype=np.uint8)
    out = load_image(_save(Image.fromarray(rgba), tmp_path / "a.png"))
    alpha = rgba[..., 3:4] / 255.0
    expected = np.rint(rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    assert tuple(out[0, 2]) == (255, 255, 255)  # fully transparent -> white


def test_grey_alpha_is_composited(tmp_path):
    la = Image.fromarray(np.array([[[0, 0], [0, 255]]], dtype=np.uint8), mode="LA")
    out = load_image(_save(la, tmp_path / "la.png"))
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[0, 1]) == (0, 0, 0)


def test_palette_with_transparency(tmp_path):
    pal = Image.new("P", (3, 1))
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (3 * 253))
    pal.putdata([0, 1, 2])
    path = _save(pal, tmp_path / "p.png", transparency=0)
    out = load_image(path)
    np.testing.assert_array_equal(out[0], [[255, 255, 255], [255, 0, 0], [0, 0, 255]])

    # GIF keeps its palette transparency too
    out = load_image(_save(pal, tmp_path / "p.gif", transparency=0))
    np.testing.assert_array_equal(out[0], [[255, 255, 255], [255, 0, 0], [0, 0, 255]])


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 257 * 100, 1000, 65535, 32768]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    out = load_image(_save(image, tmp_path / "d.png"))
    expected = np.rint(values / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 0], expected)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    assert list(expected[0]) == [0, 1, 100, 4, 255, 128]


def test_32bit_int_and_float_images(tmp_path):
    ints = Image.fromarray(np.array([[0, 65535, 70000, -5]], dtype=np.int32))
    assert ints.mode == "I"
    out = load_image(_save(ints, tmp_path / "i.tif"))
    assert list(out[0, :, 0]) == [0, 255, 255, 0]

    unit = np.array([[0.0, 0.5, 1.0, -0.2]], dtype=np.float32)
    out = load_image(_save(Image.fromarray(unit), tmp_path / "f.tif"))
    assert list(out[0, :, 0]) == [0, 128, 255, 0]

    counts = np.array([[0.0, 100.0, 400.0]], dtype=np.float32)  # not 0..1: scaled by max
    out = load_image(_save(Image.fromarray(counts), tmp_path / "c.tif"))
    assert list(out[0, :, 0]) == [0, 64, 255]


def test_cmyk_jpeg(tmp_path):
    cmyk = Image.new("CMYK", (16, 16), (255, 0, 0, 0))  # pure cyan
    out = load_image(_save(cmyk, tmp_path / "c.jpg", quality=100))
    assert out.shape == (16, 16, 3)
    np.testing.assert_allclose(out.reshape(-1, 3).mean(0), [0, 255, 255], atol=3)


def test_exif_orientation_is_applied(tmp_path):
    # Stored 40 wide x 20 high, red left half, blue right half.
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :20] = (255, 0, 0)
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(Image.fromarray(stored), tmp_path / "r.jpg", exif=exif, quality=95)
    out = load_image(path)
    assert out.shape == (40, 20, 3)
    top, bottom = out[:15].reshape(-1, 3).mean(0), out[25:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 50  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 50


@pytest.mark.parametrize("suffix", [".bmp", ".webp", ".tiff", ".gif"])
def test_other_formats(tmp_path, suffix):
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[:4] = (250, 10, 10)
    out = load_image(_save(Image.fromarray(rgb), tmp_path / f"x{suffix}"))
    assert out.shape == (8, 8, 3)
    assert out[1, 1, 0] > 200 and out[6, 6, 0] < 60


# --------------------------------------------------------------------------
# array files


def test_npz_gray_rows(tmp_path):
    stack = np.random.default_rng(1).integers(0, 256, (5, 6, 7), dtype=np.uint8)
    path = tmp_path / "a.npz"
    np.savez(path, images=stack)
    for slot in (0, 4):
        out = load_image(path, slot)
        np.testing.assert_array_equal(out, np.repeat(stack[slot][..., None], 3, axis=2))


def test_h5_rgba_rows_and_cache(tmp_path):
    stack = np.random.default_rng(2).integers(0, 256, (4, 5, 6, 4), dtype=np.uint8)
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f["images"] = stack
    alpha = stack[..., 3:4] / 255.0
    expected = np.rint(stack[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    for slot in (3, 0, 2):
        np.testing.assert_array_equal(load_image(str(path), slot), expected[slot])
    assert any(key[1] == str(path) for key in images._array_cache)


def test_h5_one_and_three_channels(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    path = tmp_path / "b.hdf5"
    with h5py.File(path, "w") as f:
        f["images"] = rgb
    np.testing.assert_array_equal(load_image(path, 1), rgb[1])
    one = rgb[..., :1]
    np.savez(tmp_path / "c.npz", images=one)
    np.testing.assert_array_equal(load_image(tmp_path / "c.npz", 0), np.repeat(one[0], 3, axis=2))


def test_array_errors(tmp_path):
    np.savez(tmp_path / "a.npz", images=np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(ImageReadError, match="slot 5 out of range"):
        load_image(tmp_path / "a.npz", 5)
    np.savez(tmp_path / "b.npz", pixels=np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(ImageReadError, match="no 'images'.*pixels"):
        load_image(tmp_path / "b.npz", 0)
    with pytest.raises(ImageReadError, match="file not found"):
        load_image(tmp_path / "missing.h5", 0)
    (tmp_path / "bad.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(ImageReadError):
        load_image(tmp_path / "bad.h5", 0)


# --------------------------------------------------------------------------
# failures


def _png_bytes(size=(32, 32)) -> bytes:
    buffer = io.BytesIO()
    rgb = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="file not found") as info:
        load_image(tmp_path / "nope.png")
    assert info.value.path == str(tmp_path / "nope.png")


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="zero-byte file"):
        load_image(tmp_path / "empty.png")


def test_not_an_image(tmp_path):
    (tmp_path / "text.jpg").write_text("hello, I am not a JPEG\n" * 10)
    with pytest.raises(ImageReadError, match="cannot identify image file"):
        load_image(tmp_path / "text.jpg")


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_truncated_file(tmp_path, fmt, suffix):
    buffer = io.BytesIO()
    rgb = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(buffer, format=fmt)
    data = buffer.getvalue()
    (tmp_path / f"t{suffix}").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated image"):
        load_image(tmp_path / f"t{suffix}")


def test_decompression_bomb(tmp_path, monkeypatch):
    (tmp_path / "big.png").write_bytes(_png_bytes((30, 40)))
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageReadError, match=r"image too large: 40 x 30 pixels > 1000"):
        load_image(tmp_path / "big.png")
    np.savez(tmp_path / "big.npz", images=np.zeros((1, 40, 30), np.uint8))
    with pytest.raises(ImageReadError, match="image too large"):
        load_image(tmp_path / "big.npz", 0)


def test_real_decompression_bomb(tmp_path):
    # 200 M pixels of 1-bit PNG compress to a few kB; Pillow refuses it while
    # reading the header, so nothing is allocated.
    Image.new("1", (20000, 10000)).save(tmp_path / "bomb.png")
    with pytest.raises(ImageReadError, match=r"image too large: 200000000 pixels > \d+"):
        load_image(tmp_path / "bomb.png")


def test_any_decoder_exception_becomes_image_read_error(tmp_path, monkeypatch):
    (tmp_path / "ok.png").write_bytes(_png_bytes())

    def explode(*args, **kwargs):
        raise RuntimeError("decoder bug")

    monkeypatch.setattr(images.Image, "open", explode)
    with pytest.raises(ImageReadError, match="RuntimeError: decoder bug"):
        load_image(tmp_path / "ok.png")


def test_error_pickles_with_path_and_slot(tmp_path):
    import pickle

    with pytest.raises(ImageReadError) as info:
        load_image(tmp_path / "gone.npz", 3)
    again = pickle.loads(pickle.dumps(info.value))
    assert (str(again), again.path, again.slot) == ("file not found", str(tmp_path / "gone.npz"), 3)


def test_directory_is_not_an_image(tmp_path):
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageReadError):
        load_image(tmp_path / "dir.png")


# --------------------------------------------------------------------------
# pixel attributes


def test_pixel_attributes_hand_computed():
    image = np.array([[[255, 0, 0], [0, 0, 0]]], dtype=np.uint8)  # red, black; 2 wide, 1 high
    attrs = pixel_attributes(image)
    assert tuple(attrs) == PIXEL_ATTRIBUTE_NAMES
    assert attrs["brightness"] == pytest.approx(0.299 / 2)
    assert attrs["contrast"] == pytest.approx(0.299 / 2)
    # rg = [255, 0], yb = [127.5, 0]: std = mean = (127.5, 63.75)
    spread = np.hypot(127.5, 63.75)
    assert attrs["colourfulness"] == pytest.approx(spread + 0.3 * spread)
    assert attrs["saturation"] == pytest.approx(0.5)
    assert (attrs["width"], attrs["height"], attrs["aspect"]) == (2.0, 1.0, 2.0)


def test_pixel_attributes_grey_is_colourless():
    attrs = pixel_attributes(np.full((3, 5, 3), 128, dtype=np.uint8))
    assert attrs["brightness"] == pytest.approx(128 / 255, abs=1e-6)
    assert attrs["contrast"] == pytest.approx(0.0, abs=1e-6)
    assert attrs["colourfulness"] == pytest.approx(0.0, abs=1e-6)
    assert attrs["saturation"] == 0.0
    assert attrs["aspect"] == pytest.approx(5 / 3)


def test_pixel_attributes_match_brute_force():
    image = np.random.default_rng(4).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    attrs = pixel_attributes(image)
    pixels = image.reshape(-1, 3).astype(float)
    luma = [(0.299 * r + 0.587 * g + 0.114 * b) / 255 for r, g, b in pixels]
    saturation = [colorsys.rgb_to_hsv(*(p / 255))[1] for p in pixels]
    rg = pixels[:, 0] - pixels[:, 1]
    yb = 0.5 * (pixels[:, 0] + pixels[:, 1]) - pixels[:, 2]
    colourfulness = np.sqrt(np.var(rg) + np.var(yb)) + 0.3 * np.sqrt(np.mean(rg) ** 2 + np.mean(yb) ** 2)
    assert attrs["brightness"] == pytest.approx(np.mean(luma), rel=1e-5)
    assert attrs["contrast"] == pytest.approx(np.std(luma), rel=1e-5)
    assert attrs["saturation"] == pytest.approx(np.mean(saturation), rel=1e-5)
    assert attrs["colourfulness"] == pytest.approx(colourfulness, rel=1e-5)


def test_pixel_attributes_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        pixel_attributes(np.zeros((4, 4), np.uint8))


# --------------------------------------------------------------------------
# thumbnails


def test_thumbnail_centre_crop_and_size():
    image = np.zeros((30, 50, 3), dtype=np.uint8)
    image[:, :10] = (255, 0, 0)  # outside the central 30x30 square
    image[:, 40:] = (0, 0, 255)
    image[:, 10:40] = (0, 200, 0)
    thumb = make_thumbnail(image, 8)
    assert thumb.shape == (8, 8, 3) and thumb.dtype == np.uint8
    np.testing.assert_array_equal(thumb, np.broadcast_to([0, 200, 0], (8, 8, 3)))


def test_thumbnail_antialiases_and_upsamples():
    checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    thumb = make_thumbnail(np.repeat(checker[..., None], 3, axis=2), 8)
    # A 1-pixel checkerboard averages to mid grey; naive subsampling would give 0 or 255.
    assert np.all(np.abs(thumb.astype(int) - 128) <= 3)
    small = np.random.default_rng(5).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    assert make_thumbnail(small, 16).shape == (16, 16, 3)
    np.testing.assert_array_equal(make_thumbnail(small[:4], 4), small[:4])
    with pytest.raises(ValueError):
        make_thumbnail(small, 0)
