"""Ops without a rule fail only the layers whose field depends on them; those are measured."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convscope.nn.receptive_field import (
    ReceptiveField,
    analytic_receptive_fields,
    measured_receptive_field,
    receptive_fields,
)
from convscope.nn.receptive_field.analytic import analyse


def _square(size, stride, start) -> ReceptiveField:
    return ReceptiveField((size, size), (stride, stride), (start, start))


class _UnknownAfterLast(nn.Module):
    """Analysed convs, then pixel_unshuffle (no rule: it changes the shape) before the head."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(16 * 8 * 8, 5)

    def forward(self, x):
        x = self.conv2(torch.relu(self.conv1(x)))
        return self.fc(F.pixel_unshuffle(x, 2).flatten(1))


class _UnknownBetween(nn.Module):
    """conv1 -> pixel_unshuffle -> conv2: the op sits between two analysed layers."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 4, 3, padding=1)
        self.side = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        h = self.conv1(x)
        return self.conv2(F.pixel_unshuffle(h, 2)), self.side(h)


def test_unknown_op_after_the_last_analysed_layer_changes_nothing():
    model = _UnknownAfterLast()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "measured by gradient" warning
        fields = receptive_fields(model, ["conv1", "conv2"], (16, 16))
    assert fields == {"conv1": _square(3, 1, -1), "conv2": _square(5, 1, -2)}
    assert analytic_receptive_fields(model, ["conv2"], (16, 16)) == {"conv2": _square(5, 1, -2)}
    with pytest.raises(RuntimeError, match=r"\['fc'\].*pixel_unshuffle"):
        analytic_receptive_fields(model, ["conv1", "fc"], (16, 16))


def test_unknown_op_between_layers_measures_only_the_layers_after_it():
    model = _UnknownBetween()
    with pytest.warns(UserWarning, match=r"\['conv2'\] measured by gradient.*pixel_unshuffle") as record:
        fields = receptive_fields(model, ["conv1", "side", "conv2"], (24, 24))
    assert len(record) == 1 and "conv1" not in str(record[0].message)
    # by hand: conv1 (3, 1, -1); pixel_unshuffle 2 is a 2x2 window of stride 2 -> (4, 2, -1);
    # conv2 3x3 padding 1 -> (4 + 2 * 2, 2, -1 - 2)
    assert fields == {"conv1": _square(3, 1, -1), "side": _square(3, 1, -1),
                      "conv2": _square(8, 2, -3)}
    assert list(fields) == ["conv1", "side", "conv2"]
    # the measured geometry reproduces the gradient boxes position by position
    for y, x in [(0, 0), (5, 7), (11, 11)]:
        x0, y0, x1, y1 = fields["conv2"].box_xyxy(y, x)
        expected = (max(x0, 0), max(y0, 0), min(x1, 24), min(y1, 24))
        assert measured_receptive_field(model, "conv2", (24, 24), position=(y, x)) == expected
    result = analyse(model, ["conv1", "conv2"], (24, 24))
    assert list(result.fields) == ["conv1"] and list(result.failures) == ["conv2"]


def _stem_then(op):
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.circular = nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular")

        def forward(self, x):
            return op(self.stem(x), self)

    return Model()


@pytest.mark.parametrize("op, reason", [
    (lambda h, m: torch.cat([h, h], dim=3), "concatenation along a spatial axis"),
    (lambda h, m: torch.chunk(h, 2, dim=2)[0], "along a spatial axis"),
    (lambda h, m: h[:, :, torch.tensor([0, 2])], "advanced"),
    (lambda h, m: h[:, :, 3], "integer indexing"),
    (lambda h, m: F.pad(h, (1, 1, 1, 1), mode="circular"), "circular"),
    (lambda h, m: m.circular(h), "circular"),
    (lambda h, m: F.glu(h), "along a spatial axis"),  # dim=-1: pairs x with x + w / 2
    (lambda h, m: F.max_pool2d(h.transpose(2, 3), 2), "not \\(h, w\\)"),
    (lambda h, m: F.interpolate(h, scale_factor=2), "no receptive-field rule"),
], ids=["cat-x", "chunk-y", "tensor-index", "int-index", "circular-pad", "circular-conv", "glu-x",
        "pool-transposed", "interpolate"])
def test_ops_without_an_exact_field_fail_only_their_dependants(op, reason):
    model = _stem_then(op)
    result = analyse(model, ["stem", ""], (12, 12))
    assert result.fields == {"stem": _square(3, 1, -1)}
    assert list(result.failures) == [""]
    assert pytest.raises(RuntimeError, analytic_receptive_fields, model, [""], (12, 12)).match(reason)
