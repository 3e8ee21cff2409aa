"""Preprocessing geometry: resize + crop, and mapping boxes back to the original."""

import numpy as np
import pytest
import torch

from convscope.config import PreprocessConfig, validate_config
from convscope.data.preprocess import (as_preprocess_config, crop_or_pad, geometry,
                                       input_box_to_original, normalize, prepare_uint8,
                                       to_channels, to_model_input)

IMAGENET = {"input_size": 224, "resize": 256, "crop": "center", "channels": 3,
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def test_resize_then_centre_crop_geometry():
    sx, sy, left, top = geometry(512, 384, IMAGENET)  # shorter side 384 -> 256
    assert sx == pytest.approx(341 / 512) and sy == pytest.approx(256 / 384)
    assert (left, top) == (58, 16)
    image = np.zeros((384, 512, 3), np.uint8)
    assert prepare_uint8(image, IMAGENET).shape == (224, 224, 3)


def test_small_inputs_are_kept_as_they_are():
    cfg = {"input_size": 28, "resize": None, "crop": "center", "channels": 1}
    image = np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    out = prepare_uint8(image, cfg)
    assert out.shape == (28, 28, 1)
    luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_array_equal(out[..., 0], np.clip(np.rint(luma), 0, 255).astype(np.uint8))
    assert geometry(28, 28, cfg) == (1.0, 1.0, 0, 0)


def test_crop_none_squashes_to_input_size():
    cfg = {"input_size": [32, 48], "crop": "none"}
    out = prepare_uint8(np.zeros((100, 50, 3), np.uint8), cfg)
    assert out.shape == (32, 48, 3)
    sx, sy, left, top = geometry(50, 100, cfg)
    assert (sx, sy, left, top) == (48 / 50, 32 / 100, 0, 0)


def test_box_round_trip_finds_the_marked_pixels():
    """A bright square in the original lands where the forward map says, and maps back."""
    image = np.zeros((300, 400, 3), np.uint8)
    image[100:160, 200:260] = 255  # x 200..260, y 100..160 in original pixels
    model_input = prepare_uint8(image, IMAGENET)
    ys, xs = np.nonzero(model_input[..., 0] > 128)
    box_input = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]])
    box_orig = input_box_to_original(box_input, np.array([[400, 300]]), IMAGENET)[0]
    np.testing.assert_allclose(box_orig, [200, 100, 260, 160], atol=2.0)


def test_boxes_are_clipped_to_the_image():
    box = input_box_to_original(np.array([[-50, -50, 300, 300]]), np.array([[256, 256]]), IMAGENET)
    np.testing.assert_allclose(box[0], [0, 0, 256, 256])


def test_crop_larger_than_image_pads_with_zeros():
    cfg = {"input_size": 8, "resize": None, "crop": "center"}
    image = np.full((4, 4, 3), 200, np.uint8)
    out = prepare_uint8(image, cfg)
    assert out.shape == (8, 8, 3)
    assert (out[2:6, 2:6] == 200).all() and out[0, 0, 0] == 0


def test_normalize_matches_manual_and_is_channels_last():
    batch = torch.randint(0, 256, (2, 5, 6, 3), dtype=torch.uint8)
    out = normalize(batch, IMAGENET)
    assert out.shape == (2, 3, 5, 6)
    assert out.is_contiguous(memory_format=torch.channels_last)
    expected = (batch.permute(0, 3, 1, 2).float() / 255 - torch.tensor(IMAGENET["mean"])[:, None, None]) \
        / torch.tensor(IMAGENET["std"])[:, None, None]
    torch.testing.assert_close(out, expected)


def test_to_model_input_shapes():
    images = [np.zeros((40, 60, 3), np.uint8), np.zeros((70, 30, 3), np.uint8)]
    x = to_model_input(images, {"input_size": 32, "resize": 32, "crop": "center"})
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32


# --------------------------------------------------------------------------
# the steps shared by the CPU and the GPU path


#: How far a float32 luma may be from the exact one: values below 256 have a float32
#: spacing of at most 2^-16 (1.5e-5), and three products and two sums round at most five
#: times (fewer with FMA), each by at most half a spacing: under 4e-5 in any order.
LUMA_TOLERANCE = 1e-4


def test_to_channels_luma_rounds_the_exact_luma_for_every_colour():
    """All 2^24 colours: the luma rounds to the nearest integer of the exact luma (float64,
    exact here: uint8 times float32 weights needs at most 36 bits), and either neighbour
    where the exact luma is within float32 error of a half, which numpy's or torch's
    float32 sum, in whatever order or with FMA, may round either way."""
    values = np.arange(256, dtype=np.uint8)
    red, green, blue = np.meshgrid(values, values, values, indexing="ij")
    rgb = np.stack([red.ravel(), green.ravel(), blue.ravel()], axis=-1).reshape(1, 4096, 4096, 3)
    weights = np.array([0.299, 0.587, 0.114], np.float32).astype(np.float64)
    exact = (rgb[0, ..., 0] * weights[0] + rgb[0, ..., 1] * weights[1]
             + rgb[0, ..., 2] * weights[2])
    got = to_channels(torch.from_numpy(rgb), 1).numpy()
    assert got.shape == (1, 4096, 4096, 1) and got.dtype == np.uint8
    got = got[0, ..., 0].astype(np.int64)
    near_half = np.abs(exact - np.floor(exact) - 0.5) <= LUMA_TOLERANCE
    nearest = np.clip(np.rint(exact), 0, 255).astype(np.int64)
    np.testing.assert_array_equal(got[~near_half], nearest[~near_half])
    assert np.isin(got[near_half] - np.floor(exact[near_half]), [0, 1]).all()
    assert near_half.sum() < 0.01 * near_half.size  # the exception stays an exception
    same = torch.from_numpy(rgb[:, :2])
    assert to_channels(same, 3) is same


@pytest.mark.parametrize("left,top", [(0, 0), (2, 1), (-3, -2), (5, -1), (40, 0)])
def test_crop_or_pad_is_a_window_with_zeros_outside(left, top):
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, size=(2, 6, 8, 3), dtype=np.uint8)
    got = crop_or_pad(torch.from_numpy(images), left, top, 5, 7).numpy()
    want = np.zeros((2, 5, 7, 3), np.uint8)
    for y in range(5):  # brute force, pixel by pixel
        for x in range(7):
            if 0 <= y + top < 6 and 0 <= x + left < 8:
                want[:, y, x] = images[:, y + top, x + left]
    np.testing.assert_array_equal(got, want)


def test_dict_and_typed_section_give_the_same_result():
    section = PreprocessConfig.from_dict(validate_config({"preprocess": IMAGENET})["preprocess"])
    image = np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    np.testing.assert_array_equal(prepare_uint8(image, section), prepare_uint8(image, IMAGENET))
    assert geometry(400, 300, section) == geometry(400, 300, IMAGENET)
    assert as_preprocess_config({"input_size": 16}) == PreprocessConfig.from_dict(
        validate_config({"preprocess": {"input_size": 16}})["preprocess"])  # schema defaults
