"""Receptive fields: hand-derived values, agreement with gradient measurement, fallback."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from convscope.nn.layers import LayerNameError
from convscope.nn.receptive_field import (
    ReceptiveField,
    analytic_receptive_fields,
    measured_receptive_field,
    receptive_fields,
)


def _clip(box, height, width):
    x0, y0, x1, y1 = box
    return (max(x0, 0), max(y0, 0), min(x1, width), min(y1, height))


def _demo_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 8 * 8, 10),
    )


def _vgg_like() -> nn.Module:
    def block(c_in, c_out):
        return nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
        )

    return nn.Sequential(block(3, 4), block(4, 8))


@pytest.fixture(scope="module")
def alexnet():
    torch.manual_seed(0)
    return torchvision.models.alexnet(weights=None)


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None)


# ---------------------------------------------------------------------------- the object


def test_box_and_boxes_agree_and_round_trip_json():
    rf = ReceptiveField(size=(11, 13), stride=(4, 2), start=(-2, -3))
    assert rf.box_xyxy(0, 0) == (-3, -2, 10, 9)
    assert rf.box_xyxy(2, 5) == (-3 + 10, -2 + 8, 10 + 10, 9 + 8)
    ys, xs = np.array([0, 2, 7]), np.array([0, 5, 1])
    boxes = rf.boxes_xyxy(ys, xs)
    assert boxes.shape == (3, 4) and np.issubdtype(boxes.dtype, np.integer)
    assert [tuple(b) for b in boxes] == [rf.box_xyxy(y, x) for y, x in zip(ys, xs)]
    again = ReceptiveField.from_dict(json.loads(json.dumps(rf.to_dict())))
    assert again == rf
    with pytest.raises(ValueError, match="stride"):
        ReceptiveField.from_dict({"size": [1, 1], "start": [0, 0]})


# ---------------------------------------------------------------- hand-derived geometry


def test_alexnet_by_hand(alexnet):
    # conv1 k11 s4 p2; pool k3 s2; conv2 k5 p2; pool k3 s2; conv3-5 k3 p1; pool k3 s2
    expected = {
        "features.0": (11, 4, -2),
        "features.1": (11, 4, -2),  # relu
        "features.2": (19, 8, -2),
        "features.3": (51, 8, -18),
        "features.5": (67, 16, -18),
        "features.6": (99, 16, -34),
        "features.8": (131, 16, -50),
        "features.10": (163, 16, -66),
        "features.12": (195, 32, -66),  # pool5: 195 px, the literature value
        "features": (195, 32, -66),  # container: its last node
        "avgpool": (195, 32, -66),  # adaptive 6x6 on a 6x6 map is the identity
    }
    fields = analytic_receptive_fields(alexnet, list(expected), (224, 224))
    for name, (size, stride, start) in expected.items():
        assert fields[name] == ReceptiveField((size, size), (stride, stride), (start, start)), name
    # flatten + linear: every output sees the union of all pool5 positions (6 x 6)
    classifier = analytic_receptive_fields(alexnet, ["classifier.6"], (224, 224))["classifier.6"]
    assert classifier.stride == (0, 0)
    assert classifier.start == (-66, -66) and classifier.size == (195 + 5 * 32,) * 2


def test_resnet18_by_hand(resnet18):
    # conv1 k7 s2 p3 -> (7, 2, -3); maxpool k3 s2 p1 -> (11, 4, -5);
    # each 3x3 conv adds 2 * stride_in; a stride-2 conv doubles the stride and moves start
    # by -1 * stride_in; the 1x1 downsample branch lies inside the main branch.
    expected = {
        "conv1": (7, 2, -3),
        "maxpool": (11, 4, -5),
        "layer1": (11 + 4 * 8, 4, -5 - 4 * 4),  # 43
        "layer2.0.downsample": (43, 8, -21),
        "layer2": (43 + 8 + 3 * 16, 8, -21 - 4 - 3 * 8),  # 99, -49
        "layer3": (99 + 16 + 3 * 32, 16, -49 - 8 - 3 * 16),  # 211, -105
        "layer4": (211 + 32 + 3 * 64, 32, -105 - 16 - 3 * 32),  # 435, -217
    }
    fields = analytic_receptive_fields(resnet18, list(expected), (224, 224))
    for name, (size, stride, start) in expected.items():
        assert fields[name] == ReceptiveField((size, size), (stride, stride), (start, start)), name
    assert fields["layer4"].size == (435, 435)
    # centred: position p of layer4 is centred on pixel 32 p (+0.5)
    x0, _, x1, _ = fields["layer4"].box_xyxy(0, 3)
    assert (x0 + x1) / 2 == 3 * 32 + 0.5


def test_vgg_like_and_demo_cnn_by_hand():
    vgg = analytic_receptive_fields(
        _vgg_like(), ["0.0", "0.3", "0", "1.0", "1.3", "1"], (32, 32)
    )
    assert {name: (rf.size[0], rf.stride[0], rf.start[0]) for name, rf in vgg.items()} == {
        "0.0": (3, 1, -1), "0.3": (5, 1, -2), "0": (6, 2, -2),
        "1.0": (10, 2, -4), "1.3": (14, 2, -6), "1": (16, 4, -6),
    }
    demo = analytic_receptive_fields(_demo_cnn(), ["0", "2", "3", "5", "7"], (32, 32))
    assert {name: (rf.size[1], rf.stride[1], rf.start[1]) for name, rf in demo.items()} == {
        "0": (5, 1, -2), "2": (6, 2, -2), "3": (10, 2, -4), "5": (12, 4, -4),
        "7": (12 + 7 * 4, 0, -4),  # linear on the flattened 8x8 map: all of it
    }


def test_functional_calls_and_odd_geometry():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, (3, 5), stride=(1, 2), padding=(1, 2), dilation=(2, 1))
            self.side = nn.Conv2d(4, 4, 1, stride=2)

        def forward(self, x):
            x = torch.relu(self.conv(x))  # y: k3 d2 p1 -> (5, 1, -1); x: k5 s2 p2 -> (5, 2, -2)
            x = nn.functional.pad(x, (1, 0, 0, 0))  # x: start -2 - 1 * 2
            x = nn.functional.max_pool2d(x, 3, stride=2, padding=1)
            y = self.side(x)
            z = nn.functional.avg_pool2d(x, 2)
            context = x.mean(dim=(2, 3), keepdim=True).sum(dim=1, keepdim=True)
            s = torch.cat([y, z], dim=1) * context
            return torch.flatten(nn.functional.adaptive_avg_pool2d(s, 1), 1)

    model = Functional()
    fields = analytic_receptive_fields(model, ["conv", "side", ""], (33, 38))
    assert fields["conv"] == ReceptiveField((5, 5), (1, 2), (-1, -2))
    # pad then pool k3 s2 p1: y (5 + 2, 2, -1 - 1); x (5 + 4, 4, -4 - 2); side 1x1 s2: stride x2
    assert fields["side"] == ReceptiveField((7, 9), (4, 8), (-2, -6))
    assert fields[""].stride == (0, 0)


class _ModernBlocks(nn.Module):
    """Channel shuffle (view/transpose), chunk + cat, channels-last LayerNorm/Linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=2, padding=1)
        self.branch = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        self.dw = nn.Conv2d(8, 8, 7, padding=3, groups=8)
        self.norm = nn.LayerNorm(8)
        self.mlp = nn.Linear(8, 8)
        self.down = nn.Conv2d(8, 8, 2, stride=2)

    def forward(self, x):
        x = self.stem(x)
        left, right = x.chunk(2, dim=1)
        x = torch.cat([left, self.branch(right)], dim=1)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.mlp(nn.functional.gelu(self.norm(y))).permute(0, 3, 1, 2)
        return self.down(x + y)


def test_modern_blocks_by_hand_and_measured():
    model = _ModernBlocks()
    fields = analytic_receptive_fields(model, ["stem", "branch", "mlp", ""], (40, 36))
    assert fields["stem"] == ReceptiveField((4, 4), (2, 2), (-1, -1))
    assert fields["branch"] == ReceptiveField((4 + 8, 4 + 8), (2, 2), (-1 - 4, -1 - 4))
    # dw 7x7 p3 on the union (12, 2, -5): +12, start -6; the linear mixes channels only
    assert fields["mlp"] == ReceptiveField((24, 24), (2, 2), (-11, -11))
    assert fields[""] == ReceptiveField((26, 26), (4, 4), (-11, -11))
    _assert_agrees(model, "", (40, 36), [(5, 4), (0, 0), (9, 8)])


# -------------------------------------------------------- analytic agrees with measured


def _assert_agrees(model, layer, input_size, positions):
    height, width = input_size
    rf = analytic_receptive_fields(model, [layer], input_size)[layer]
    for y, x in positions:
        measured = measured_receptive_field(model, layer, input_size, position=(y, x))
        assert measured == _clip(rf.box_xyxy(y, x), height, width), (layer, y, x)


def test_demo_cnn_analytic_matches_measured():
    model = _demo_cnn()
    _assert_agrees(model, "3", (32, 32), [(8, 9), (0, 0), (15, 15), (0, 15)])
    _assert_agrees(model, "5", (32, 32), [(4, 3), (0, 0), (7, 7)])
    # the linear layer sees every pixel
    assert measured_receptive_field(model, "7", (32, 32)) == (0, 0, 32, 32)


def test_alexnet_analytic_matches_measured(alexnet):
    _assert_agrees(alexnet, "features.0", (224, 224), [(27, 20), (0, 0), (54, 54)])
    _assert_agrees(alexnet, "features.5", (224, 224), [(6, 7), (12, 0)])
    _assert_agrees(alexnet, "features", (224, 224), [(3, 2), (0, 0), (5, 5)])


def test_resnet18_analytic_matches_measured(resnet18):
    _assert_agrees(resnet18, "layer1", (128, 128), [(16, 15), (0, 0), (31, 31)])
    _assert_agrees(resnet18, "layer2", (128, 128), [(8, 8), (15, 0)])
    _assert_agrees(resnet18, "layer4", (128, 128), [(0, 3)])  # 435 px: the whole image


@settings(max_examples=20, deadline=None)
@given(
    layers=st.lists(
        st.tuples(
            st.sampled_from(["conv", "max", "avg"]),
            st.integers(1, 4),  # kernel
            st.integers(1, 3),  # stride
            st.integers(1, 2),  # dilation (conv and max only)
            st.integers(0, 2),  # padding (clamped below)
        ),
        min_size=1,
        max_size=4,
    ),
    size=st.integers(24, 40),
)
def test_random_stacks_agree_with_measurement(layers, size):
    modules, channels, length = [], 2, size
    for kind, k, s, d, p in layers:
        d = 1 if kind == "avg" else d
        p = min(p, k // 2)
        out = (length + 2 * p - d * (k - 1) - 1) // s + 1
        if out < 1:
            break
        length = out
        if kind == "conv":
            modules.append(nn.Conv2d(channels, 3, k, stride=s, padding=p, dilation=d))
            channels = 3
            modules.append(nn.ReLU())
        elif kind == "max":
            modules.append(nn.MaxPool2d(k, stride=s, padding=p, dilation=d))
        else:
            modules.append(nn.AvgPool2d(k, stride=s, padding=p))
    if not modules:
        return
    model = nn.Sequential(*modules)
    layer = str(len(modules) - 1)
    rf = analytic_receptive_fields(model, [layer], (size, size), in_channels=2)[layer]
    for y in sorted({0, 1, length // 2, length - 2, length - 1} & set(range(length))):
        x = length - 1 - y
        measured = measured_receptive_field(model, layer, (size, size), 2, position=(y, x))
        box = rf.box_xyxy(y, x)
        expected = _clip(box, size, size)
        if expected == box:  # the whole field lies inside the image: exact
            assert measured == expected, (y, x)
        else:
            # near the border the measured box is inside the clipped one: dilation gaps
            # and padded positions beyond the real map see no real pixel
            assert expected[0] <= measured[0] and expected[1] <= measured[1], (y, x)
            assert measured[2] <= expected[2] and measured[3] <= expected[3], (y, x)


# ------------------------------------------------------------------ fallback and errors


class _Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 4, 5, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        if x.sum() > 0:  # depends on the data
            x = x * 2
        return self.bn(self.conv2(x)).relu()


def test_untraceable_model_falls_back_to_measurement():
    model = _Untraceable().train()
    with pytest.raises(RuntimeError, match="cannot trace"):
        analytic_receptive_fields(model, ["conv2"], (40, 40))
    with pytest.warns(UserWarning, match="measured by gradient"):
        fields = receptive_fields(model, ["conv1", "pool", "conv2", "bn"], (40, 40))
    # by hand: conv1 (3, 1, -1); pool (4, 2, -1); conv2 k5 s2 p1 -> (4 + 4*2, 4, -1 - 2)
    assert fields["conv1"] == ReceptiveField((3, 3), (1, 1), (-1, -1))
    assert fields["pool"] == ReceptiveField((4, 4), (2, 2), (-1, -1))
    assert fields["conv2"] == ReceptiveField((12, 12), (4, 4), (-3, -3))
    assert fields["bn"] == fields["conv2"]
    assert model.training and all(m.training for m in model.modules())


def test_fallback_reads_large_fields_from_larger_images():
    class Deep(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(*[nn.Conv2d(2, 2, 3, padding=1) for _ in range(6)],
                                      nn.MaxPool2d(2), nn.Conv2d(2, 2, 5, padding=2))

        def forward(self, x):
            return self.body(x) if x.shape[-1] > 0 else x  # untraceable (shape branch)

    model = Deep()
    # the field (13 + 4 * 2 = 21 px) is larger than the 12 px input: no unclipped edge
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        measured = receptive_fields(model, ["body"], (12, 12), in_channels=2)["body"]
    expected = ReceptiveField((13 + 1 + 8, 13 + 1 + 8), (2, 2), (-6 - 4, -6 - 4))
    assert measured == expected
    # same as the analytic value of the same stack without the untraceable branch
    analytic = analytic_receptive_fields(model.body, [""], (12, 12), in_channels=2)[""]
    assert analytic == expected


def test_wrong_layer_name_is_a_clear_error(resnet18):
    with pytest.raises(LayerNameError, match=r"'layer5'.*did you mean 'layer4'"):
        receptive_fields(resnet18, ["layer5"], (64, 64))
    with pytest.raises(ValueError, match="layer1"):
        analytic_receptive_fields(resnet18, ["layer1.0.conv9"], (64, 64))
    with pytest.raises(ValueError, match="conv1"):
        measured_receptive_field(resnet18, "conv_1", (64, 64))


def test_model_is_left_unchanged(resnet18):
    model = resnet18.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    handle = model.layer1.register_forward_hook(lambda *args: calls.append(1))
    try:
        analytic_receptive_fields(model, ["layer1", "fc"], (64, 64))
        measured_receptive_field(model, "layer1", (64, 64))
        receptive_fields(model, ["layer2"], (64, 64))
    finally:
        handle.remove()
    assert calls == []  # hooks never fired
    assert all(m.training for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    model.eval()
