"""Batched ablation against a brute-force loop: one forward pass per ablated unit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convscope.dissect.ablation import LayerAblator, class_curves, unit_effects
from convscope.nn.models import DemoCNN

K = 10  # classes of the demo model


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = DemoCNN(num_classes=K).eval().requires_grad_(False)
    inputs = torch.randn(14, 3, 32, 32)
    labels = torch.randint(0, 4, (14,))  # classes 4..9 have no image: NaN
    return model, inputs, labels


def _brute(model, inputs, labels, layer, keep_vectors, n_classes=K):
    """Plain torch: per keep-vector, one hook that multiplies the layer's output, one forward."""
    module = model.get_submodule(layer)
    base = model(inputs).numpy()
    delta_acc, delta_logit = [], []

    def score(logits):
        pred = logits.argmax(1)
        acc = []
        for c in range(n_classes):
            pos = labels.numpy() == c
            acc.append(np.nan if not pos.any() else
                       ((pred[pos] == c).mean() + (pred[~pos] != c).mean()) / 2)
        return np.array(acc)

    for keep in keep_vectors:
        handle = module.register_forward_hook(
            lambda m, i, o, keep=keep: o * keep.view(1, -1, 1, 1))
        logits = model(inputs).numpy()
        handle.remove()
        delta_acc.append(score(logits) - score(base))
        delta_logit.append([np.nan if not (labels == c).any() else
                            (logits - base)[labels.numpy() == c, c].mean() for c in range(n_classes)])
    return np.array(delta_acc), np.array(delta_logit)


@pytest.mark.parametrize("layer,method", [("relu2", "forward passes"), ("relu4", "closed form")])
def test_unit_table_equals_one_forward_per_unit(setup, layer, method):
    model, inputs, labels = setup
    ablator = LayerAblator(model, layer, inputs, batch_size=20, device=torch.device("cpu"))
    assert ablator.method.startswith(method)
    units = list(range(0, ablator.channels, 7))
    delta_acc, delta_logit = unit_effects(ablator, units, labels, K)
    keeps = []
    for u in units:
        keep = torch.ones(ablator.channels)
        keep[u] = 0
        keeps.append(keep)
    expected_acc, expected_logit = _brute(model, inputs, labels, layer, keeps)
    np.testing.assert_allclose(delta_logit, expected_logit, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(delta_acc, expected_acc, atol=1e-12)
    if ablator.closed_form:  # the closed form equals the forward pass
        keep = torch.stack(keeps)
        np.testing.assert_allclose(ablator.logits(keep), ablator.logits(keep, forward=True),
                                   rtol=1e-4, atol=1e-5)


def test_uncut_model_gives_the_same_logits(setup):
    model, inputs, labels = setup
    cut = LayerAblator(model, "relu3", inputs, batch_size=9, device=torch.device("cpu"))
    whole = LayerAblator(model, "relu3", inputs, batch_size=9, device=torch.device("cpu"))
    whole.split = None
    whole.cache = [(inputs[i:i + 9],) for i in range(0, len(inputs), 9)]
    keep = (torch.rand(5, cut.channels) > 0.5).float()
    np.testing.assert_allclose(cut.logits(keep), whole.logits(keep), rtol=1e-4, atol=1e-5)


def test_curves_equal_brute_force(setup):
    model, inputs, labels = setup
    ablator = LayerAblator(model, "relu3", inputs, batch_size=224, device=torch.device("cpu"))
    units = list(range(0, ablator.channels, 4))
    _, delta_logit = unit_effects(ablator, units, labels, K)
    rows = class_curves(ablator, units, delta_logit, labels, K, [2, 99])  # 99: dropped
    assert {r[0] for r in rows} == {0, 1, 2, 3} and {r[2] for r in rows} == {2}
    pred = model(inputs).argmax(1).numpy()
    for c, mode, n, accuracy in rows:
        row_of = {u: i for i, u in enumerate(units)}  # rows of delta_logit follow `units`
        order = sorted(units, key=lambda u: (delta_logit[row_of[u], c], u))[:n]
        keep = torch.ones(ablator.channels) if mode == "remove" else torch.zeros(ablator.channels)
        keep[order] = 0.0 if mode == "remove" else 1.0
        change, _ = _brute(model, inputs, labels, "relu3", [keep])
        pos = labels.numpy() == c  # _brute gives the change: add the baseline back
        base = ((pred[pos] == c).mean() + (pred[~pos] != c).mean()) / 2
        assert accuracy == pytest.approx(change[0, c] + base, abs=1e-12)


def test_model_without_final_linear_layer_uses_forward_passes():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU(),
                                torch.nn.Conv2d(6, 4, 1), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten()).eval().requires_grad_(False)
    inputs, labels = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    ablator = LayerAblator(model, "1", inputs, batch_size=12, device=torch.device("cpu"))
    assert not ablator.closed_form and ablator.method.startswith("forward passes")
    _, delta_logit = unit_effects(ablator, [2], labels, 4)
    keep = torch.ones(6)
    keep[2] = 0
    _, expected = _brute(model, inputs, labels, "1", [keep], n_classes=4)
    np.testing.assert_allclose(delta_logit, expected, rtol=1e-4, atol=1e-6)
