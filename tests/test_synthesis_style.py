"""Gram matrices by hand, texture synthesis and style transfer on a tiny CNN."""

import dataclasses

import numpy as np
import torch

from convscope.config.sections import StyleConfig
from convscope.synthesis.style import gram_matrix, style_transfer, synthesize_texture
from synthesis_image_helpers import colour_images, random_pixel_model

STYLE = StyleConfig(texture_row=None, content_row=None, style_row=None, content_layers=None,
                    style_layers=None, content_weight=1.0, style_weight=100.0, steps=15,
                    optimiser="lbfgs", learning_rate=0.05)


def test_gram_matrix_equals_a_hand_computation():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 4, 3, 5)).astype(np.float32)
    expected = np.zeros((2, 4, 4))
    for n in range(2):
        for i in range(4):
            for j in range(4):
                expected[n, i, j] = sum(features[n, i, y, x] * features[n, j, y, x]
                                        for y in range(3) for x in range(5)) / 15
    np.testing.assert_allclose(gram_matrix(torch.from_numpy(features)).numpy(), expected,
                               rtol=1e-5, atol=1e-6)


def _gram_distance(model, a, b, layer="relu1"):
    with torch.no_grad():
        inner = model.inner
        feats = [inner.relu1(inner.conv1(x * model.scale + model.offset)) for x in (a, b)]
    ga, gb = (f.flatten(2) @ f.flatten(2).transpose(1, 2) / f[0, 0].numel() for f in feats)
    return float(((ga - gb) ** 2).mean())


def test_texture_matches_the_examples_grams_better_than_noise_and_is_seeded():
    model = random_pixel_model()
    example = colour_images(1)[0]
    for optimiser in ("lbfgs", "adam"):
        cfg = dataclasses.replace(STYLE, optimiser=optimiser, steps=30)
        texture, curve = synthesize_texture(model, example, ["relu1"], cfg, seed=0)
        noise = torch.rand(example.shape, generator=torch.Generator().manual_seed(0))
        assert _gram_distance(model, texture, example) < 0.2 * _gram_distance(model, noise, example)
        assert curve[-1] < curve[0]
        assert float(texture.min()) >= 0 and float(texture.max()) <= 1
        again, _ = synthesize_texture(model, example, ["relu1"], cfg, seed=0)
        assert torch.equal(texture, again)


def test_style_transfer_lowers_its_loss_and_moves_toward_the_style():
    model = random_pixel_model()
    images, _ = colour_images(2)
    content, style_image = images[0:1], images[1:2]
    result, curve = style_transfer(model, content, style_image, ["relu2"], ["relu1", "relu2"],
                                   STYLE)
    assert curve[-1] < curve[0]
    assert _gram_distance(model, result, style_image) < _gram_distance(model, content, style_image)
    again, _ = style_transfer(model, content, style_image, ["relu2"], ["relu1", "relu2"], STYLE)
    assert torch.equal(result, again)
