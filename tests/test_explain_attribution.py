"""Attribution maps against independent computations (brute-force loops, torch.autograd, numpy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from convscope.explain.attribution import (FunctionalReluError, backprop_ready, deconvnet_map,
                                           gradcam_map, guided_backprop_map, occlusion_map,
                                           saliency_map, strongest_feature_maps, zf_occlusion_map)


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.relu2(self.conv2(self.pool1(self.relu1(self.conv1(x)))))
        return self.fc(x.mean((2, 3)))


def _tiny(seed=0):
    torch.manual_seed(seed)
    return TinyCNN().double().eval()


def _inputs(n=2, size=8, seed=1):
    return torch.randn(n, 2, size, size, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def _brute_occlusion(forward, x, target, size, stride, fill):
    """Mean drop of forward(x)[i, target[i]] over the occluder positions covering each pixel."""
    n, c, h, w = x.shape
    with torch.no_grad():
        base = forward(x)[torch.arange(n), target]
        total = torch.zeros(n, h, w, dtype=x.dtype)
        count = torch.zeros(h, w, dtype=x.dtype)
        for y in range(0, h - size + 1, stride):
            for x0 in range(0, w - size + 1, stride):
                occluded = x.clone()
                occluded[:, :, y:y + size, x0:x0 + size] = fill.reshape(1, c, 1, 1)
                drop = base - forward(occluded)[torch.arange(n), target]
                total[:, y:y + size, x0:x0 + size] += drop[:, None, None]
                count[y:y + size, x0:x0 + size] += 1
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))


def test_occlusion_equals_a_brute_force_loop_over_positions():
    model, x = _tiny(), _inputs(size=9)
    target, fill = torch.tensor([0, 2]), torch.tensor([0.3, -0.2], dtype=torch.float64)
    expected = _brute_occlusion(lambda v: torch.softmax(model(v), 1), x, target, 3, 2, fill)
    for per_pass in (1, 5):
        got = occlusion_map(model, x, target, size=3, stride=2, fill=fill,
                            positions_per_pass=per_pass)
        assert got.shape == (2, 9, 9)
        np.testing.assert_allclose(got.numpy(), expected.float().numpy(), atol=1e-6)


def test_zf_occlusion_follows_the_strongest_feature_map():
    model, x = _tiny(), _inputs(size=8)
    fill = torch.zeros(2, dtype=torch.float64)
    acts = {}
    model.conv2.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    with torch.no_grad():
        model(x)
    totals = acts["a"].sum((2, 3))
    channel = strongest_feature_maps(model, "conv2", x)
    assert channel.tolist() == totals.argmax(1).tolist()

    def conv2_totals(v):
        model(v)
        return acts["a"].sum((2, 3))

    expected = _brute_occlusion(conv2_totals, x, channel, 4, 2, fill)
    got = zf_occlusion_map(model, "conv2", x, channel, size=4, stride=2, fill=fill)
    np.testing.assert_allclose(got.numpy(), expected.float().numpy(), atol=1e-5)


def test_saliency_is_the_absolute_gradient_maximum_over_channels():
    model, x = _tiny(), _inputs()
    target = torch.tensor([1, 0])
    inputs = x.clone().requires_grad_()
    scores = model(inputs)[torch.arange(2), target].sum()
    (grad,) = torch.autograd.grad(scores, inputs)
    expected = grad.abs().amax(1)
    np.testing.assert_allclose(saliency_map(model, x, target).numpy(), expected.float().numpy(),
                               rtol=1e-6, atol=1e-9)


class TwoLayer(nn.Module):
    def __init__(self, w1, w2):
        super().__init__()
        self.fc1 = nn.Linear(w1.shape[1], w1.shape[0], bias=False)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(w2.shape[1], w2.shape[0], bias=False)
        self.fc1.weight.data, self.fc2.weight.data = w1, w2

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x.flatten(1))))


def test_guided_backprop_and_deconvnet_pass_only_positive_gradients_through_relus():
    rng = np.random.default_rng(3)
    w1, w2 = rng.normal(size=(16, 6)), rng.normal(size=(3, 16))
    x = rng.normal(size=(1, 1, 2, 3))
    model = backprop_ready(TwoLayer(torch.tensor(w1), torch.tensor(w2)).double())
    target = torch.tensor([2])
    h = w1 @ x.reshape(6)
    g2 = w2[2]
    guided = w1.T @ ((h > 0) * np.maximum(g2, 0))
    deconv = w1.T @ np.maximum(g2, 0)
    plain = w1.T @ ((h > 0) * g2)
    inputs = torch.tensor(x)
    got_guided = guided_backprop_map(model, inputs, target).numpy().reshape(6)
    got_deconv = deconvnet_map(model, inputs, target).numpy().reshape(6)
    np.testing.assert_allclose(got_guided, np.abs(guided), rtol=1e-5)
    np.testing.assert_allclose(got_deconv, np.abs(deconv), rtol=1e-5)
    assert not np.allclose(np.abs(guided), np.abs(plain))  # the rule made a difference


def test_gradcam_equals_the_hand_computation():
    model, x = _tiny(), _inputs(size=8)
    target = torch.tensor([2, 1])
    acts = {}
    handle = model.relu2.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    score = model(x)[torch.arange(2), target].sum()
    handle.remove()
    (grad,) = torch.autograd.grad(score, acts["a"])
    weights = grad.mean((2, 3), keepdim=True)
    cam = F.relu((weights * acts["a"]).sum(1, keepdim=True))
    expected = F.interpolate(cam, size=(8, 8), mode="bilinear")[:, 0].detach()
    got = gradcam_map(model, "relu2", x, target)
    np.testing.assert_allclose(got.numpy(), expected.float().numpy(), rtol=1e-5, atol=1e-7)


def test_backprop_ready_copies_and_refuses_functional_relu():
    model = _tiny()
    ready = backprop_ready(model)
    assert model.relu1.inplace and not ready.relu1.inplace

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3)

        def forward(self, x):
            return F.relu(self.conv(x)).mean((2, 3))

    with pytest.raises(FunctionalReluError, match="nn.ReLU"):
        backprop_ready(Functional())


def test_one_sweep_gives_every_occlusion_map_as_captum_does():
    from captum.attr import Occlusion

    from convscope.explain.attribution import occlusion_maps

    model, x = _tiny(), _inputs(n=3, size=10)
    fill = torch.tensor([0.5, 0.1], dtype=torch.float64)
    targets = {"true": torch.tensor([0, 1, 2]), "predicted": torch.tensor([2, 2, 0])}
    channels = strongest_feature_maps(model, "relu2", x)
    got = occlusion_maps(model, x, targets, "relu2", channels, size=4, stride=3, fill=fill,
                         positions_per_pass=3)
    assert set(got) == {"occlusion/true", "occlusion/predicted", "zf_occlusion"}
    baselines = fill.reshape(1, 2, 1, 1).expand_as(x).contiguous()
    for kind, target in targets.items():
        captum = Occlusion(lambda v: torch.softmax(model(v), 1)).attribute(
            x, sliding_window_shapes=(2, 4, 4), strides=(2, 3, 3), baselines=baselines,
            target=target, perturbations_per_eval=2)[:, 0]
        np.testing.assert_allclose(got[f"occlusion/{kind}"].numpy(), captum.float().numpy(),
                                   atol=1e-6)
    alone = zf_occlusion_map(model, "relu2", x, channels, size=4, stride=3, fill=fill)
    np.testing.assert_allclose(got["zf_occlusion"].numpy(), alone.numpy(), atol=1e-5)


def test_an_occluder_larger_than_the_input_is_refused():
    model, x = _tiny(), _inputs(size=8)
    with pytest.raises(ValueError, match="occlusion_size 9"):
        occlusion_map(model, x, torch.tensor([0, 1]), size=9, stride=1,
                      fill=torch.zeros(2, dtype=torch.float64))


class ReusedRelu(nn.Module):
    """One nn.ReLU module applied twice, as torchvision's ResNet blocks do."""

    def __init__(self, w1, w2, w3):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = (nn.Linear(w.shape[1], w.shape[0], bias=False)
                                        for w in (w1, w2, w3))
        self.relu = nn.ReLU(inplace=True)
        for layer, w in zip((self.fc1, self.fc2, self.fc3), (w1, w2, w3)):
            layer.weight.data = w

    def forward(self, x):
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x.flatten(1))))))


def test_guided_backprop_through_a_relu_module_used_twice():
    rng = np.random.default_rng(7)
    w1, w2, w3 = rng.normal(size=(12, 6)), rng.normal(size=(10, 12)), rng.normal(size=(3, 10))
    x = rng.normal(size=(1, 1, 2, 3))
    model = backprop_ready(ReusedRelu(*(torch.tensor(w) for w in (w1, w2, w3))).double())
    h1 = w1 @ x.reshape(6)
    h2 = w2 @ np.maximum(h1, 0)
    g = np.maximum(w3[1], 0) * (h2 > 0)
    g = np.maximum(w2.T @ g, 0) * (h1 > 0)
    expected = np.abs(w1.T @ g)
    got = guided_backprop_map(model, torch.tensor(x), torch.tensor([1])).numpy().reshape(6)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-12)


def test_attribution_batch_reads_only_its_section_and_the_batch_size_changes_no_number():
    from convscope.config import validate_config
    from convscope.config.sections import ExplainAttributionConfig
    from convscope.explain.attribution_stage import attribution_batch

    section = validate_config({"explain": {"attribution": {
        "methods": ["saliency", "gradcam", "integrated_gradients", "smoothgrad", "lrp",
                    "occlusion", "zf_occlusion"], "targets": ["true"],
        "occlusion_size": 3, "occlusion_stride": 2, "ig_steps": 8, "smoothgrad_samples": 4,
        "samples_per_pass": 3}}})["explain"]["attribution"]
    attribution = ExplainAttributionConfig.from_dict(section)
    model, x = _tiny(), _inputs(n=3)
    target, fill = torch.tensor([0, 2, 1]), torch.tensor([0.1, -0.1], dtype=torch.float64)
    whole = attribution_batch(model, model, x, {"true": target}, attribution, ("relu2", "relu2"), fill)
    assert set(whole) == {"saliency/true", "gradcam/true", "integrated_gradients/true",
                          "smoothgrad/true", "lrp/true", "occlusion/true", "zf_occlusion",
                          "zf_channel"}
    inputs = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(model(inputs)[torch.arange(3), target].sum(), inputs)
    np.testing.assert_allclose(whole["saliency/true"].numpy(), grad.abs().amax(1).float().numpy(),
                               rtol=1e-6, atol=1e-9)
    expected = _brute_occlusion(lambda v: torch.softmax(model(v), 1), x, target, 3, 2, fill)
    np.testing.assert_allclose(whole["occlusion/true"].numpy(), expected.float().numpy(), atol=1e-5)
    for i in range(3):  # batches of one image give the same maps
        one = attribution_batch(model, model, x[i:i + 1], {"true": target[i:i + 1]}, attribution,
                                ("relu2", "relu2"), fill)
        for name, values in one.items():
            np.testing.assert_allclose(values.numpy(), whole[name][i:i + 1].numpy(), atol=1e-6)
