"""Fooling images from noise reach the confidence goal on a trained tiny model, seeded."""

import dataclasses

import torch

from convscope.config.sections import FoolingConfig
from convscope.synthesis.fooling import fooling_images
from synthesis_image_helpers import trained_pixel_model

FOOLING = FoolingConfig(classes="all", confidence=0.99, steps=200, learning_rate=0.05)


def test_every_class_reaches_the_confidence_and_is_reproducible():
    model = trained_pixel_model()
    images, steps = fooling_images(model, torch.arange(3), (3, 12, 12), FOOLING, seed=0)
    assert torch.all(steps >= 0)
    with torch.no_grad():
        probs = torch.softmax(model.inner((images - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1))
                                          / torch.tensor([0.25, 0.2, 0.3]).view(1, 3, 1, 1)), 1)
    assert torch.all(probs[torch.arange(3), torch.arange(3)] >= 0.99)
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    again, steps_again = fooling_images(model, torch.arange(3), (3, 12, 12), FOOLING, seed=0)
    assert torch.equal(images, again) and torch.equal(steps, steps_again)


def test_a_class_not_reached_is_reported_so():
    model = trained_pixel_model()
    few = dataclasses.replace(FOOLING, confidence=0.999999, steps=1, learning_rate=1e-4)
    _, steps = fooling_images(model, torch.arange(3), (3, 12, 12), few, seed=1)
    noise = torch.rand((3, 3, 12, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        start = torch.softmax(model(noise), 1)[torch.arange(3), torch.arange(3)]
    assert torch.equal(steps < 0, start < 0.999999)  # one tiny step moves nothing across
