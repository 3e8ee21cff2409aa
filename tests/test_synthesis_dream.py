"""Deep dream on a tiny CNN: it raises the layer's L2 norm, stays valid, and is seeded."""

import numpy as np
import pandas as pd
from PIL import Image
import pytest
import torch

from convscope.config.sections import DreamConfig
from convscope.nn.layers import LayerNameError
from convscope.synthesis.dream import deep_dream, layer_l2, octave_sizes
from convscope.synthesis.images import check_rows, class_ids, rgb_uint8, sample_rows
from synthesis_image_helpers import colour_images, random_pixel_model

DREAM = DreamConfig(layer=None, n_images=2, octaves=2, octave_scale=1.4, steps=5,
                    learning_rate=0.02, jitter_px=1)


def test_dream_raises_the_layers_l2_norm_and_stays_in_range():
    model = random_pixel_model()
    pixels, _ = colour_images(4)
    dreamed = deep_dream(model, "relu2", pixels, DREAM, seed=0)
    assert dreamed.shape == pixels.shape
    assert float(dreamed.min()) >= 0 and float(dreamed.max()) <= 1
    # the norm by hand: the layer's output recomputed from the modules themselves
    with torch.no_grad():
        inner = model.inner
        def norm(x):
            x = x * model.scale + model.offset
            return inner.relu2(inner.conv2(inner.relu1(inner.conv1(x)))).flatten(1).norm(dim=1)
        before, after = norm(pixels), norm(dreamed)
    assert torch.all(after > before * 1.05)
    np.testing.assert_allclose(layer_l2(model, "relu2", dreamed), after, rtol=1e-5)


def test_dream_is_reproducible_with_its_seed():
    model = random_pixel_model()
    pixels, _ = colour_images(2)
    first = deep_dream(model, "relu1", pixels, DREAM, seed=3)
    again = deep_dream(model, "relu1", pixels, DREAM, seed=3)
    other = deep_dream(model, "relu1", pixels, DREAM, seed=4)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_octave_sizes_coarsest_first_and_at_least_8_px():
    assert octave_sizes(32, 32, 3, 2.0) == [(8, 8), (16, 16), (32, 32)]
    assert octave_sizes(12, 20, 3, 2.0) == [(8, 8), (8, 10), (12, 20)]


def test_unknown_layer_names_the_key():
    with pytest.raises(LayerNameError, match="synthesis.dream.layer"):
        deep_dream(random_pixel_model(), "relu9", colour_images(1)[0], DREAM, seed=0)


def test_pixel_model_gives_the_logits_of_the_normalised_input():
    model = random_pixel_model()
    pixels, _ = colour_images(2)
    uint8 = (pixels * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    by_hand = (uint8.float() / 255 - torch.tensor([0.5, 0.4, 0.3])) / torch.tensor([0.25, 0.2, 0.3])
    with torch.no_grad():
        expected = model.inner(by_hand.permute(0, 3, 1, 2))
        torch.testing.assert_close(model(uint8.permute(0, 3, 1, 2).float() / 255), expected,
                                   atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(rgb_uint8(uint8.permute(0, 3, 1, 2).float() / 255),
                                  uint8.numpy())


def test_sample_rows_is_seeded_prefers_the_test_split_and_skips_unreadable_images(tmp_path):
    paths = []
    for i in range(20):
        path = tmp_path / f"{i:02d}.png"
        if i == 13:
            path.write_bytes(b"not an image")  # unreadable: never sampled
        else:
            Image.fromarray(np.full((4, 4, 3), i, np.uint8)).save(path)
        paths.append(str(path))
    manifest = pd.DataFrame({"index": np.arange(20), "path": paths, "slot": -1,
                             "split": ["train"] * 12 + ["test"] * 8})
    first = sample_rows(manifest, 5, seed=1)
    assert np.array_equal(first, sample_rows(manifest, 5, seed=1))
    assert set(first) <= set(range(12, 20)) - {13} and len(set(first)) == 5
    assert np.array_equal(sample_rows(manifest, 50, seed=0), [12, *range(14, 20)])
    unsplit = manifest.assign(split="all")
    assert np.array_equal(sample_rows(unsplit, 30, seed=0), [*range(13), *range(14, 20)])


def test_bad_rows_and_classes_name_their_key():
    manifest = pd.DataFrame({"index": np.arange(4)})
    with pytest.raises(ValueError, match="synthesis.style.content_row.*0..3"):
        check_rows(manifest, [7], "synthesis.style.content_row")
    assert class_ids(["b", 0, "2"], ["a", "b", "c"], 3, "k") == [1, 0, 2]
    with pytest.raises(ValueError, match="synthesis.fooling.classes.*'d'.*a, b, c"):
        class_ids(["d"], ["a", "b", "c"], 3, "synthesis.fooling.classes")
    with pytest.raises(ValueError, match="class id 5"):
        class_ids([5], ["a", "b", "c"], 3, "k")
