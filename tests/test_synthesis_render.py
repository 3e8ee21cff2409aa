"""Feature visualisation pieces: objectives, parametrisations, transforms and the render loop.

Expected values come from numpy (FFT, colour matrix, TV, percentiles) and from
torch.autograd on tiny networks, never from the code under test.
"""

import numpy as np
import pytest
import torch
from torch import nn

from convscope.data.preprocess import as_preprocess_config
from convscope.synthesis.objectives import (IMAGE, LOGITS, channel, class_logit, l2,
                                            total_variation)
from convscope.synthesis.param import (COLOR_CORRELATION, FourierImage, correlate_colour,
                                       decorrelate_colour, spectrum_scale)
from convscope.synthesis.render import RenderSettings, render, to_model_space
from convscope.synthesis.transforms import (TransformSettings, clip_small_contribution,
                                            clip_small_norm, random_affine)

PREPROCESS = as_preprocess_config({"input_size": 16, "channels": 3, "resize": 16,
                                   "mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.3]})


class TinyNet(nn.Module):
    """conv(3->4) - relu - pool - linear(4 -> 3): a unit layer ``conv`` and class logits."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


def tiny_net():
    return TinyNet().eval().requires_grad_(False)


def _scores(model, objective, x01):
    acts = {}
    handle = model.conv.register_forward_hook(lambda m, i, o: acts.__setitem__("conv", o))
    logits = model(to_model_space(x01, PREPROCESS))
    handle.remove()
    return objective({**acts, LOGITS: logits, IMAGE: x01})


@pytest.mark.parametrize("kind", ["pixels", "fourier"])
def test_class_ascent_raises_each_class_logit(kind):
    model = tiny_net()
    settings = RenderSettings(steps=60, learning_rate=0.1, parametrisation=kind,
                              transforms=TransformSettings(1, (0.95, 1.0, 1.05), 5))
    result = render(model, class_logit([0, 1, 2]) - 1e-3 * l2(), 3, settings,
                    preprocess=PREPROCESS, seed=0)
    assert result.images.shape == (3, 16, 16, 3) and result.curves.shape == (3, 60)
    assert 0 <= result.images.min() and result.images.max() <= 1
    x = torch.from_numpy(result.images).permute(0, 3, 1, 2)
    grey = torch.full_like(x, 0.5)
    with torch.no_grad():
        final = model(to_model_space(x, PREPROCESS))[torch.arange(3), torch.arange(3)]
        start = model(to_model_space(grey, PREPROCESS))[torch.arange(3), torch.arange(3)]
    assert torch.all(final > start + 0.02), (start, final)
    assert np.all(result.curves[:, -5:].mean(1) > result.curves[:, :5].mean(1))


@pytest.mark.parametrize("kind", ["pixels", "fourier"])
@pytest.mark.parametrize("where", ["mean", "centre"])
def test_unit_ascent_raises_each_units_activation(kind, where):
    model = tiny_net()
    settings = RenderSettings(steps=30, learning_rate=0.1, parametrisation=kind)
    result = render(model, channel("conv", [0, 1, 2, 3], where), 4, settings,
                    preprocess=PREPROCESS, seed=1)
    x = torch.from_numpy(result.images).permute(0, 3, 1, 2)
    with torch.no_grad():
        conv = model.conv(to_model_space(x, PREPROCESS))
        conv_grey = model.conv(to_model_space(torch.full_like(x, 0.5), PREPROCESS))
    idx = torch.arange(4)
    if where == "mean":
        final, start = conv[idx, idx].mean((1, 2)), conv_grey[idx, idx].mean((1, 2))
    else:
        final, start = conv[idx, idx, 8, 8], conv_grey[idx, idx, 8, 8]
    assert torch.all(final > start + 0.1), (start, final)
    # the curve is the score computed by hand (no transforms), one update before the end
    assert np.allclose(result.curves[:, -1], final.numpy(), rtol=0.05)


def test_batched_objective_gives_each_image_only_its_own_units_gradient():
    model = tiny_net()
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(3), requires_grad=True)
    scores = _scores(model, channel("conv", [2, 0, 3, 1]), x)
    for i, unit in enumerate([2, 0, 3, 1]):
        (grad,) = torch.autograd.grad(scores[i], x, retain_graph=True)
        others = [j for j in range(4) if j != i]
        assert torch.count_nonzero(grad[others]) == 0
        # image i alone, asked for its own unit, gets the same gradient
        single = x[i:i + 1].detach().clone().requires_grad_(True)
        (own,) = torch.autograd.grad(_scores(model, channel("conv", unit), single)[0], single)
        assert torch.allclose(grad[i], own[0], atol=1e-7)
        assert torch.count_nonzero(own) > 0


def test_channel_and_class_objectives_pick_per_image_targets():
    acts = {"layer": torch.arange(2 * 3 * 3 * 3, dtype=torch.float32).reshape(2, 3, 3, 3),
            LOGITS: torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])}
    mean = channel("layer", [2, 0])(acts).numpy()
    arr = acts["layer"].numpy()
    assert np.allclose(mean, [arr[0, 2].mean(), arr[1, 0].mean()])
    assert np.allclose(channel("layer", [1, 1], "centre")(acts).numpy(), [arr[0, 1, 1, 1],
                                                                          arr[1, 1, 1, 1]])
    assert class_logit([2, 0])(acts).tolist() == [3.0, 4.0]
    combined = class_logit([2, 0]) - 2 * class_logit(1)
    assert combined(acts).tolist() == [3.0 - 4.0, 4.0 - 10.0]
    with pytest.raises(ValueError, match="3 targets for a batch of 2"):
        class_logit([0, 1, 2])(acts)


def test_total_variation_equals_a_numpy_loop():
    x = np.random.default_rng(0).random((2, 3, 5, 6))
    for beta in (1.0, 2.0, 3.5):
        expected = np.zeros(2)
        for n in range(2):
            terms = [((x[n, c, i, j + 1] - x[n, c, i, j]) ** 2
                      + (x[n, c, i + 1, j] - x[n, c, i, j]) ** 2) ** (beta / 2)
                     for c in range(3) for i in range(4) for j in range(5)]
            expected[n] = np.mean(terms)
        got = total_variation(beta)({IMAGE: torch.from_numpy(x)}).numpy()
        assert np.allclose(got, expected, rtol=1e-9, atol=1e-9)


def test_fourier_image_is_numpys_inverse_fft_and_set_raw_inverts_it():
    for height, width in ((8, 8), (7, 10)):
        param = FourierImage(2, 3, height, width, decorrelate=False,
                             generator=torch.Generator().manual_seed(0))
        spectrum = param.spectrum.detach().numpy()
        fy = np.fft.fftfreq(height)[:, None]
        fx = np.fft.rfftfreq(width)[None, :]
        scale = np.zeros((height, width // 2 + 1))
        for i in range(height):
            for j in range(width // 2 + 1):
                scale[i, j] = 1.0 / max(np.hypot(fy[i, 0], fx[0, j]), 1.0 / max(height, width))
        assert np.allclose(spectrum_scale(height, width), scale, rtol=1e-6)
        complex_spectrum = (spectrum[..., 0] + 1j * spectrum[..., 1]) * scale
        expected = np.fft.irfft2(complex_spectrum, s=(height, width), norm="ortho") / 4.0
        assert np.allclose(param.raw().detach().numpy(), expected, atol=1e-6)
        target = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(1))
        param.set_raw(target)
        assert torch.allclose(param.raw().detach(), target, atol=1e-5)


def test_colour_decorrelation_is_the_matrix_and_invertible():
    t = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    expected = np.einsum("rc,nchw->nrhw", COLOR_CORRELATION, t.numpy())
    assert np.allclose(decorrelate_colour(t).numpy(), expected, atol=1e-6)
    assert torch.allclose(correlate_colour(decorrelate_colour(t)), t, atol=1e-5)
    assert np.isclose(np.linalg.norm(COLOR_CORRELATION, axis=0).max(), 1.0)


def test_affine_transform_shifts_by_whole_pixels_and_is_identity_without_change():
    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    still = random_affine(x, TransformSettings(0, (1.0,), 0.0), torch.Generator())
    assert torch.allclose(still, x, atol=1e-5)
    shifted = random_affine(x, TransformSettings(2, (1.0,), 0.0),
                            torch.Generator().manual_seed(4))
    # every output is the input moved by whole pixels: find the shift by brute force
    for n in range(3):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if np.allclose(np.roll(x[n, 0].numpy(), (dy, dx), (0, 1))[3:-3, 3:-3],
                                shifted[n, 0].numpy()[3:-3, 3:-3], atol=1e-5)]
        assert len(found) == 1


def test_yosinski_clipping_matches_numpy_percentiles():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(2, 3, 6, 6)).astype(np.float32)
    grad = rng.normal(size=(2, 3, 6, 6)).astype(np.float32)
    for percentile in (10.0, 50.0):
        got = clip_small_norm(torch.from_numpy(raw), percentile).numpy()
        norms = np.linalg.norm(raw, axis=1)
        expected = raw.copy()
        for n in range(2):
            expected[n][:, norms[n] < np.percentile(norms[n], percentile)] = 0.0
        assert np.allclose(got, expected, atol=1e-6)
        got = clip_small_contribution(torch.from_numpy(raw), torch.from_numpy(grad),
                                      percentile).numpy()
        contribution = np.abs((raw * grad).sum(1))
        expected = raw.copy()
        for n in range(2):
            expected[n][:, contribution[n] < np.percentile(contribution[n], percentile)] = 0.0
        assert np.allclose(got, expected, atol=1e-6)


def test_render_is_reproducible_with_its_seed_and_regularisers_run():
    model = tiny_net()
    settings = RenderSettings(steps=6, learning_rate=0.1, parametrisation="pixels",
                              transforms=TransformSettings(2, (0.9, 1.1), 10), blur_every=2,
                              clip_norm_percentile=10, clip_contribution_percentile=10)
    runs = [render(model, channel("conv", [0, 1]), 2, settings, preprocess=PREPROCESS, seed=s)
            for s in (5, 5, 6)]
    assert np.array_equal(runs[0].images, runs[1].images)
    assert np.array_equal(runs[0].curves, runs[1].curves)
    assert not np.array_equal(runs[0].images, runs[2].images)


def test_yosinski_regularisers_refuse_the_fourier_image():
    settings = RenderSettings(steps=2, learning_rate=0.1, parametrisation="fourier", blur_every=2)
    with pytest.raises(ValueError, match="set parametrisation to pixels"):
        render(tiny_net(), channel("conv", 0), 1, settings, preprocess=PREPROCESS, seed=0)


def test_leaky_relu_gradient_leaves_values_and_leaks_only_where_off():
    from convscope.synthesis.render import leaky_relu_gradient

    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU(inplace=True))
    x = torch.tensor([[1.0, -2.0, 0.5]], requires_grad=True)
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(3))
        model[0].bias.zero_()
    with leaky_relu_gradient(model, 0.1):
        out = model(x)
    assert torch.equal(out.detach(), torch.tensor([[1.0, 0.0, 0.5]]))
    out.sum().backward()
    # d relu / dx: 1 where on, the leak 0.1 where off (plain ReLU: 0)
    assert torch.allclose(x.grad, torch.tensor([[1.0, 0.1, 1.0]]))
    x.grad = None
    model(x).sum().backward()  # outside the block: the hooks are gone
    assert torch.allclose(x.grad, torch.tensor([[1.0, 0.0, 1.0]]))
