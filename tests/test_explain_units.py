"""Unit reconstructions: zero outside the receptive field, the box algebra, the unit choice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from convscope.config import validate_config
from convscope.config.sections import ExplainReconstructionsConfig
from convscope.explain.attribution import backprop_ready
from convscope.explain.reconstruct import crop_box, reconstruct_units
from convscope.explain.units_stage import choose_units
from convscope.nn.receptive_field import ReceptiveField


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 2)).double().eval()


# by hand: conv3 (size 3, start -1) -> pool2 (size 4, stride 2, start -1) -> conv3 pad 1
# (size 4 + 2 * 2 = 8, stride 2, start -1 - 2 = -3)
FIELD = ReceptiveField(size=(8, 8), stride=(2, 2), start=(-3, -3))


@pytest.mark.parametrize("method", ["deconvnet", "guided_backprop"])
def test_a_reconstruction_is_zero_outside_the_receptive_field(method):
    model = backprop_ready(_net())
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        acts = model[:5](x)
    fy, fx = torch.tensor([2, 0, 5]), torch.tensor([3, 0, 1])
    channel = acts[torch.arange(3), :, fy, fx].argmax(1)  # a channel that fires there
    recon = reconstruct_units(model, "4", x, channel, fy, fx, method).numpy()
    assert recon.shape == (3, 3, 12, 12)
    for i in range(3):
        x0, y0, x1, y1 = crop_box(FIELD, int(fy[i]), int(fx[i]), 12, 12)
        inside = np.zeros((12, 12), bool)
        inside[y0:y1, x0:x1] = True
        assert np.all(recon[i][:, ~inside] == 0)
        assert np.abs(recon[i][:, inside]).max() > 0


def test_crop_box_clips_the_hand_computed_box():
    assert crop_box(FIELD, 2, 3, 12, 12) == (3, 1, 11, 9)
    assert crop_box(FIELD, 0, 0, 12, 12) == (0, 0, 5, 5)
    assert crop_box(None, 1, 1, 12, 10) == (0, 0, 10, 12)


def test_guided_reconstruction_of_a_first_layer_unit_is_its_filter_times_the_relu_gate():
    model = backprop_ready(_net())
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with torch.no_grad():
        pre = model[0](x)
    channel = int(pre[0, :, 4, 6].argmax())
    assert pre[0, channel, 4, 6] > 0
    recon = reconstruct_units(model, "1", x, torch.tensor([channel]), torch.tensor([4]),
                              torch.tensor([6]), "guided_backprop").numpy()[0]
    expected = np.zeros((3, 12, 12))
    expected[:, 3:6, 5:8] = model[0].weight[channel].detach().numpy()  # d act / d pixel
    np.testing.assert_allclose(recon, expected, atol=1e-12)


def _explain(**reconstructions):
    return ExplainReconstructionsConfig.from_dict(validate_config(
        {"explain": {"reconstructions": reconstructions}})["explain"]["reconstructions"])


def test_choose_units_takes_the_strongest_units_that_fire():
    rows = []
    for channel, top in enumerate([1.0, 5.0, 3.0, 0.0]):
        for rank in range(3):
            rows.append({"layer": "relu2", "channel": channel, "rank": rank,
                         "index": 10 * channel + rank, "value": top - rank, "fy": 0, "fx": 0})
    topk = pd.DataFrame(rows)
    chosen = choose_units(_explain(units_per_layer=2, top_k=2), topk, ["relu2"])
    expected = topk[topk["channel"].isin([1, 2]) & (topk["rank"] < 2)].sort_values(["channel", "rank"])
    assert chosen[["channel", "rank"]].values.tolist() == expected[["channel", "rank"]].values.tolist()
    picked = choose_units(_explain(channels=[0, 3], top_k=3), topk, ["relu2"])
    assert picked[["channel", "rank"]].values.tolist() == [[0, 0]]  # 0 fires once, 3 never
    with pytest.raises(ValueError, match="explain.reconstructions.layers"):
        choose_units(_explain(layers=["fc"]), topk, ["relu2"])
