"""Faithfulness metrics and the new attribution methods against plain references:
one image and one perturbed copy at a time, scipy / pandas for ranks, completeness of
integrated gradients, the flat LRP rule worked out by hand."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from convscope.explain import attribution_paths as paths
from convscope.explain.faithfulness import (blurred, cascade_layers, deletion_insertion, mprt,
                                            randomise_module, road_scores)
from convscope.explain.road import noisy_linear_impute


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc(self.relu2(self.conv2(self.relu1(self.conv1(x)))).mean((2, 3)))


def _model():
    torch.manual_seed(0)
    return Tiny().double().eval().requires_grad_(False)


def _x(n=3, size=6):
    return torch.randn(n, 2, size, size, generator=torch.Generator().manual_seed(2),
                       dtype=torch.float64)


def _prob(model, x, t):
    return float(torch.softmax(model(x[None]), 1)[0, t])


def test_deletion_and_insertion_equal_a_one_copy_at_a_time_loop():
    model, x = _model(), _x()
    target = torch.tensor([0, 2, 1])
    maps = torch.randn(3, 6, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    maps[0, 0, :3] = maps[0, 0, 3]  # ties: the earlier pixel goes first
    fill, steps, sigma = torch.tensor([0.1, -0.3], dtype=torch.float64), 5, 1.0
    deletion, insertion = deletion_insertion(model, x, target, maps, steps=steps, fill=fill,
                                             sigma=sigma, batch_size=7)
    start = blurred(x, sigma)
    for i in range(3):
        order = np.argsort(-maps[i].numpy().ravel(), kind="stable")
        for k in range(steps + 1):
            chosen = order[: k * 36 // steps]
            removed, added = x[i].clone().view(2, -1), start[i].clone().view(2, -1)
            removed[:, chosen] = fill[:, None]
            added[:, chosen] = x[i].view(2, -1)[:, chosen]
            assert deletion[i, k] == pytest.approx(_prob(model, removed.view(2, 6, 6), target[i]))
            assert insertion[i, k] == pytest.approx(_prob(model, added.view(2, 6, 6), target[i]))


def test_imputation_solves_the_neighbour_mean_equations():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 5, 6))
    mask = rng.random((5, 6)) < 0.4
    out = noisy_linear_impute(image, mask, 0.0, rng)
    assert np.array_equal(out[:, ~mask], image[:, ~mask])
    for y, x in zip(*np.nonzero(mask)):  # every removed pixel is the weighted mean of its neighbours
        total, weights = 0.0, 0.0
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if (dy or dx) and 0 <= y + dy < 5 and 0 <= x + dx < 6:
                    weight = 1 / 6 if dy == 0 or dx == 0 else 1 / 12
                    total, weights = total + weight * out[:, y + dy, x + dx], weights + weight
        np.testing.assert_allclose(out[:, y, x], total / weights, atol=1e-10)


def test_road_equals_a_one_image_loop():
    model, x = _model(), _x()
    target, keys = torch.tensor([1, 0, 2]), [10, 11, 12]
    maps = torch.randn(3, 6, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    fractions = [0.2, 0.5]
    scores = road_scores(model, x, target, maps, fractions=fractions, noise=0.05, keys=keys,
                         seed=7, batch_size=4)
    for i in range(3):
        order = np.argsort(-maps[i].numpy().ravel(), kind="stable")
        for o, name in enumerate(("morf", "lerf")):
            for j, p in enumerate(fractions):
                count = round(p * 36)
                chosen = order[:count] if name == "morf" else order[36 - count:]
                mask = np.zeros(36, bool)
                mask[chosen] = True
                rng = np.random.default_rng([7, keys[i], j, o])
                imputed = noisy_linear_impute(x[i].numpy(), mask.reshape(6, 6), 0.05, rng)
                expected = _prob(model, torch.from_numpy(imputed), target[i])
                assert scores[name][i, j] == pytest.approx(expected)


def test_mprt_equals_a_plain_cascade():
    model, x = _model(), _x(n=2)
    target = torch.tensor([0, 1])

    def explain(m):
        return paths.integrated_gradients_map(m, x, target, baseline=torch.zeros(2).double(),
                                              steps=8, internal_batch_size=8)

    layers = cascade_layers(model)
    assert layers == ["fc", "conv2", "conv1"]
    table = mprt(model, explain, layers=layers, seed=5)
    reference = explain(model).numpy()
    plain = copy.deepcopy(model)
    for j, name in enumerate(layers):
        randomise_module(dict(plain.named_modules())[name], 5 + j)
        maps = explain(plain).numpy()
        for i in range(2):
            rho = pd.Series(np.abs(reference[i]).ravel()).corr(
                pd.Series(np.abs(maps[i]).ravel()), method="spearman")
            assert table[j, i] == pytest.approx(rho)
    assert not torch.equal(plain.fc.weight, model.fc.weight)  # the trained model is left alone


def test_integrated_gradients_are_complete_and_smoothgrad_ignores_batching():
    model, x = _model(), _x()
    target = torch.tensor([0, 1, 2])
    base = torch.tensor([0.2, -0.1], dtype=torch.float64)
    ig = paths.integrated_gradients_map(model, x, target, baseline=base, steps=200,
                                        internal_batch_size=50)
    start = model(base.view(1, 2, 1, 1).expand(1, 2, 6, 6))[0, target]
    change = model(x).gather(1, target[:, None])[:, 0] - start
    np.testing.assert_allclose(ig.flatten(1).sum(1), change, rtol=2e-2, atol=1e-4)  # ReLU kinks
    together = paths.smoothgrad_map(model, x, target, samples=6, noise=0.1, samples_per_pass=6)
    alone = paths.smoothgrad_map(model, x[2:], target[2:], samples=6, noise=0.1,
                                 samples_per_pass=2)
    np.testing.assert_allclose(together[2], alone[0], rtol=1e-10)


def test_lrp_flat_rule_of_a_single_dense_layer_spreads_the_score_evenly():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval().requires_grad_(False)
    x = torch.randn(2, 2, 4, 4)
    target = torch.tensor([2, 0])
    maps = paths.lrp_map(model, x, target)
    score = model(x).gather(1, target[:, None])[:, 0]
    # the first layer gets the flat rule: every input gets score / inputs, summed over 2 channels
    np.testing.assert_allclose(maps, (2 * score / 32)[:, None, None].expand(2, 4, 4), rtol=1e-5)


def test_lrp_runs_on_a_resnet_with_in_place_relus_and_leaves_it_unchanged():
    from torchvision.models.resnet import BasicBlock, ResNet

    torch.manual_seed(0)  # a torchvision ResNet with one BasicBlock per stage
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=3).eval().requires_grad_(False)
    assert paths.is_resnet(model) and model.relu.inplace
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 32, 32)
    maps = paths.lrp_map(model, x, torch.tensor([0, 2]))
    assert maps.shape == (2, 32, 32) and torch.isfinite(maps).all() and maps.abs().sum() > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.relu.inplace
