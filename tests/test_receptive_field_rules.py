"""Every analytic op rule on a tiny model: a hand-derived field, and the gradient-measured box.

Each case runs ``op`` on the output ``h`` (1, 4, 12, 12) of a 3x3 convolution with
padding 1, whose field is (size 3, stride 1, start -1) on both axes; the expected field
of ``op(h)`` is derived by hand. Where the op passes a gradient, the measured box of a
few positions (:func:`measured_receptive_field`, a different algorithm) must equal the
analytic box clipped to the 12 x 12 image. The last test checks that every entry of the
rule tables is exercised here.
"""

from __future__ import annotations

import operator

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from convscope.nn.receptive_field import (
    ReceptiveField,
    analytic_receptive_fields,
    measured_receptive_field,
)
from convscope.nn.receptive_field.rules import FUNCTION_RULES, METHOD_RULES, MODULE_RULES

SIZE = 12


def _rf(size, stride, start) -> ReceptiveField:
    pair = lambda v: v if isinstance(v, tuple) else (v, v)  # noqa: E731
    return ReceptiveField(pair(size), pair(stride), pair(start))


STEM = _rf(3, 1, -1)  # conv 3x3, padding 1; a pointwise op keeps it
GLOBAL = _rf(3 + 11, 0, -1)  # every position of the 12 x 12 stem map
POOLED = _rf(4, 2, -1)  # STEM then 2x2 max pooling: checks the (h, w) axes were tracked
WIDE_X = _rf((3, 14), (1, 0), (-1, -1))  # global along x only
WIDE_Y = _rf((14, 3), (0, 1), (-1, -1))  # global along y only
CENTRE, CORNER = (3, 3), (0, 0)
BOTH = (CENTRE, CORNER)


class _Probe(nn.Module):
    """stem conv -> ``op(h, self)``; ``self.mid`` holds a module the op may call."""

    def __init__(self, op, mid: nn.Module | None = None):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.mid = mid if mid is not None else nn.Sequential()
        self.op = op

    def forward(self, x):
        return self.op(self.stem(x), self)


def _case(name, op, expected, at=BOTH, mid=None):
    return pytest.param(op, expected, at, mid, id=name)


def _same(name, op, at=BOTH, mid=None):
    return _case(name, op, STEM, at, mid)


def _nchw_back(t):
    """(1, 12, 12, 4) channels-last -> (1, 4, 12, 12), then a 2x2 max pool."""
    return F.max_pool2d(t.permute(0, 3, 1, 2), 2)


def _kernel(h, *shape):
    """A constant weight (2, 4, 3, 3) by default, in the dtype of ``h`` (float64 when measured)."""
    return torch.ones(*(shape or (2, 4, 3, 3)), dtype=h.dtype)


def _module(name, module, expected=STEM, at=BOTH):
    return _case(name, lambda h, m: m.mid(h), expected, at, module)


_OPERATOR = [
    _same("op.add", lambda h, m: h + h),
    _same("op.sub", lambda h, m: h - 0.5 * h),
    _same("op.mul", lambda h, m: h * h),
    _same("op.truediv", lambda h, m: h / (h + 2)),
    _same("op.floordiv", lambda h, m: h // 2, at=()),
    _same("op.mod", lambda h, m: h % 3),
    _same("op.pow", lambda h, m: h ** 2),
    _same("op.neg", lambda h, m: -h),
    _same("op.pos", lambda h, m: +h),
    _same("op.abs", lambda h, m: abs(h)),
    _same("op.and_or_xor_invert", lambda h, m: (((h > 0) & (h < 5)) | ~(h >= 1) ^ (h <= 2)).float(),
          at=()),
    _same("op.eq_ne", lambda h, m: ((h == 1) != (h > 0.5)).double(), at=()),
    _case("op.broadcast_pooled", lambda h, m: h * h.mean(dim=(2, 3), keepdim=True), GLOBAL),
]

_TORCH = [
    _same(f"torch.{name}", lambda h, m, fn=getattr(torch, name): fn(h, h * h))
    for name in "add sub subtract mul multiply div divide true_divide maximum minimum".split()
] + [
    _same(f"torch.{name}", lambda h, m, fn=getattr(torch, name): fn(h))
    for name in ("neg abs exp log sqrt rsqrt sigmoid sigmoid_ tanh tanh_ relu relu_ erf sin cos "
                 "square reciprocal selu celu rrelu logit nan_to_num").split()
] + [
    _same(f"torch.{name}", lambda h, m, fn=getattr(torch, name): fn(h), at=())
    for name in "sign floor ceil round".split()  # no gradient
] + [
    _same("torch.pow", lambda h, m: torch.pow(h, 2)),
    _same("torch.hardshrink", lambda h, m: torch.hardshrink(h), at=(CENTRE,)),
    _same("torch.clamp", lambda h, m: torch.clamp(h, 0, 1)),
    _same("torch.clip", lambda h, m: torch.clip(h, min=0)),
    _same("torch.clamp_min", lambda h, m: torch.clamp_min(h, 0)),
    _same("torch.clamp_max", lambda h, m: torch.clamp_max(h, 1)),
    _same("torch.where", lambda h, m: torch.where(h > 0, h, 2 * h)),
    _same("torch.lerp", lambda h, m: torch.lerp(h, 2 * h, 0.5)),
    _same("torch.addcmul", lambda h, m: torch.addcmul(h, h, h)),
    _same("torch.addcdiv", lambda h, m: torch.addcdiv(h, h, h + 2)),
    _same("torch.dropout", lambda h, m: torch.dropout(h, 0.5, False)),
]

_ACTIVATIONS = "relu relu_ relu6 elu elu_ selu celu leaky_relu leaky_relu_ gelu silu mish " \
    "hardswish hardsigmoid hardtanh hardtanh_ softplus softsign tanhshrink logsigmoid sigmoid " \
    "rrelu instance_norm"
_DROPOUTS = "dropout dropout2d alpha_dropout feature_alpha_dropout"
_FUNCTIONAL = [
    _same(f"F.{name}", lambda h, m, fn=getattr(F, name): fn(h)) for name in _ACTIVATIONS.split()
] + [
    _same(f"F.{name}", lambda h, m, fn=getattr(F, name): fn(h, training=False))
    for name in _DROPOUTS.split()
] + [
    _same("F.hardshrink", lambda h, m: F.hardshrink(h), at=(CENTRE,)),
    _same("F.softshrink", lambda h, m: F.softshrink(h), at=(CENTRE,)),
    _same("F.threshold", lambda h, m: F.threshold(h, 0.1, 0.0)),
    _same("F.prelu", lambda h, m: F.prelu(h, torch.full((1,), 0.25))),
    _same("F.batch_norm", lambda h, m: F.batch_norm(h, torch.zeros(4), torch.ones(4))),
    _same("F.group_norm", lambda h, m: F.group_norm(h, 2)),
    _same("F.layer_norm", lambda h, m: F.layer_norm(h, (SIZE,))),
    _same("F.local_response_norm", lambda h, m: F.local_response_norm(h, 2)),
    _same("F.normalize", lambda h, m: F.normalize(h), at=()),  # equal channels: constant
    _same("F.glu.channels", lambda h, m: F.glu(h, dim=1)),
]

_WINDOWS = [
    # k3 d2 s2 p2 on STEM: size 3 + 2 * 2, stride 2, start -1 - 2
    _case("F.conv2d", lambda h, m: F.conv2d(h, _kernel(h), None, 2, 2, 2), _rf(7, 2, -3),
          at=(CORNER, (3, 2), (5, 5))),
    _case("torch.conv2d.same", lambda h, m: torch.conv2d(h, _kernel(h), padding="same"),
          _rf(5, 1, -2)),
    _case("F.conv2d.valid", lambda h, m: F.conv2d(h, _kernel(h), padding="valid"),
          _rf(5, 1, -1), at=((4, 4), CORNER)),
    # k3 s2 p1 d2: size 3 + 2 * 2, stride 2, start -1 - 1
    _case("F.max_pool2d", lambda h, m: F.max_pool2d(h, 3, 2, 1, 2), _rf(7, 2, -2), at=((2, 2), (4, 1))),
    _case("F.max_pool2d_with_indices", lambda h, m: F.max_pool2d(h, 2, return_indices=True)[0], POOLED),
    _case("torch.max_pool2d", lambda h, m: torch.max_pool2d(h, 2), POOLED),
    _case("F.avg_pool2d", lambda h, m: F.avg_pool2d(h, 3, 2, 1), _rf(5, 2, -2)),
    _case("F.lp_pool2d", lambda h, m: F.lp_pool2d(h, 2, 3, 2), _rf(5, 2, -1), at=((2, 2), CORNER)),
    # 12 -> 4 is a 3x3 window with stride 3; 12 -> 5 is not a window: global
    _case("F.adaptive_avg_pool2d", lambda h, m: F.adaptive_avg_pool2d(h, 4), _rf(5, 3, -1)),
    _case("F.adaptive_max_pool2d", lambda h, m: F.adaptive_max_pool2d(h, 5), GLOBAL, at=()),
    _case("F.adaptive_max_pool2d_with_indices",
          lambda h, m: F.adaptive_max_pool2d(h, 4, return_indices=True)[0], _rf(5, 3, -1)),
    _case("F.pad", lambda h, m: F.pad(h, (1, 2, 3, 0)), _rf(3, 1, (-4, -2)), at=(CENTRE, (4, 1))),
    _case("F.pad.reflect", lambda h, m: F.pad(h, (1, 1, 1, 1), mode="reflect"), _rf(3, 1, -2),
          at=(CENTRE,)),
]

_LAYOUT = [
    _case("torch.flatten", lambda h, m: torch.flatten(h, 1), GLOBAL, at=(CORNER,)),
    _same("torch.flatten.keeps_hw", lambda h, m: torch.flatten(h, 0, 1), at=()),
    _case("torch.reshape", lambda h, m: F.max_pool2d(torch.reshape(h, (-1, 2, 2, SIZE, SIZE)).view(
        -1, 4, SIZE, SIZE), 2), POOLED),
    _case("torch.unsqueeze.squeeze", lambda h, m: F.max_pool2d(torch.squeeze(torch.unsqueeze(h, 1), 1),
                                                               2), POOLED),
    _case("torch.permute", lambda h, m: _nchw_back(torch.permute(h, (0, 2, 3, 1))), POOLED),
    _case("torch.transpose", lambda h, m: F.max_pool2d(torch.transpose(h, 1, 3).transpose(1, 3), 2),
          POOLED),
    _case("torch.swapaxes", lambda h, m: F.max_pool2d(torch.swapaxes(h, 1, 2).swapaxes(1, 2), 2),
          POOLED),
    _case("view.unflatten.flatten", lambda h, m: F.max_pool2d(h.unflatten(1, (2, 2)).flatten(1, 2), 2),
          POOLED),
    _case("reshape.view_as.reshape_as", lambda h, m: F.max_pool2d(
        h.reshape(-1, 2, 2, SIZE, SIZE).view_as(h).reshape_as(h), 2), POOLED),
    _case("squeeze.unsqueeze", lambda h, m: F.max_pool2d(h.unsqueeze(0).squeeze(0), 2), POOLED),
    _case("permute.method", lambda h, m: _nchw_back(h.permute(0, 2, 3, 1)), POOLED),
    _case("swapaxes.method", lambda h, m: F.max_pool2d(h.swapaxes(1, 3).swapaxes(3, 1), 2), POOLED),
    _case("getitem.slices", lambda h, m: h[:, :, 2:, 1::2], _rf(3, (1, 2), (1, 0)), at=(CORNER, (3, 4))),
    _case("getitem.ellipsis_none", lambda h, m: h[..., None, ::2, :][:, :, 0], _rf(3, (2, 1), -1),
          at=(CORNER, (3, 3))),
    _same("getitem.channel", lambda h, m: h[:, 1].unsqueeze(1)),
]

_REDUCTIONS = [
    _case("torch.mean", lambda h, m: torch.mean(h, dim=(2, 3), keepdim=True), GLOBAL, at=(CORNER,)),
    _same("torch.sum.channels", lambda h, m: torch.sum(h, 1).unsqueeze(1)),
    _case("torch.amax", lambda h, m: torch.amax(h, dim=3, keepdim=True), WIDE_X, at=(CORNER, (6, 0))),
    _case("torch.amin", lambda h, m: torch.amin(h, dim=2, keepdim=True), WIDE_Y, at=()),
    _same("torch.max.dim", lambda h, m: torch.max(h, dim=1, keepdim=True)[0]),
    _same("torch.max.elementwise", lambda h, m: torch.max(h, 2 * h)),
    _case("torch.max.all", lambda h, m: torch.max(h), GLOBAL, at=()),
    _case("torch.min.dim", lambda h, m: torch.min(h, 2, True)[0], WIDE_Y, at=()),
    _case("torch.std", lambda h, m: torch.std(h, dim=(2, 3), keepdim=True), GLOBAL, at=()),
    # positional (dim, unbiased, keepdim): keepdim is the fourth argument
    _case("torch.std.unbiased", lambda h, m: F.max_pool2d(torch.std(h, 1, True, False).unsqueeze(1), 2),
          POOLED, at=()),
    _same("torch.var", lambda h, m: torch.var(h, dim=1, keepdim=True), at=()),
    _same("torch.logsumexp", lambda h, m: torch.logsumexp(h, dim=1, keepdim=True)),
    _case("mean.method", lambda h, m: h.mean((2, 3)), GLOBAL, at=(CORNER,)),
    _same("sum.method", lambda h, m: h.sum(1, keepdim=True)),
    _case("amax.method", lambda h, m: h.amax(dim=(2, 3)), GLOBAL, at=(CORNER,)),
    _case("amin.method", lambda h, m: h.amin(dim=2, keepdim=True), WIDE_Y, at=()),
    _same("max.method", lambda h, m: h.max(1)[0].unsqueeze(1)),
    _case("min.method", lambda h, m: h.min(dim=3, keepdim=True).values, WIDE_X, at=()),
    _case("std.var.method", lambda h, m: h.std(dim=3, keepdim=True) + h.var(3, keepdim=True), WIDE_X,
          at=()),
    _same("logsumexp.method", lambda h, m: h.logsumexp(1, keepdim=True)),
    # the linearised copy makes all channels equal: a softmax over them is constant
    _same("F.softmax.channels", lambda h, m: F.softmax(h, dim=1), at=()),
    _case("F.softmax.x", lambda h, m: F.softmax(h, dim=3), WIDE_X),
    _case("F.log_softmax.y", lambda h, m: F.log_softmax(h, dim=2), WIDE_Y),
    _same("torch.softmax", lambda h, m: torch.softmax(h, 1), at=()),
    _case("torch.log_softmax", lambda h, m: torch.log_softmax(h, -1), WIDE_X),
    _case("softmax.method", lambda h, m: h.softmax(-2), WIDE_Y),
    _same("log_softmax.method", lambda h, m: h.log_softmax(1), at=()),
]

_COMBINE = [
    # union of the stem (3, 1, -1) and a 3x3 average of it (5, 1, -2)
    _case("torch.cat", lambda h, m: torch.cat([h, F.avg_pool2d(h, 3, 1, 1)], dim=1), _rf(5, 1, -2)),
    _case("torch.concat", lambda h, m: torch.concat([F.avg_pool2d(h, 3, 1, 1), h], 1), _rf(5, 1, -2)),
    _same("torch.stack", lambda h, m: torch.stack([h, 2 * h], dim=1)),
    _same("torch.chunk", lambda h, m: torch.chunk(h, 2, 1)[1]),
    _same("torch.split", lambda h, m: torch.split(h, 2, dim=1)[0]),
    _same("chunk.split.method", lambda h, m: h.chunk(2, dim=1)[1] + h.split(2, 1)[0]),
    _case("F.linear.x", lambda h, m: F.linear(h, _kernel(h, 5, SIZE)), WIDE_X, at=(CORNER, (6, 4))),
]

_METHODS = [
    _same(f"{name}.method", lambda h, m, name=name: getattr(h, name)(h * h))
    for name in "add sub mul div maximum minimum".split()
] + [
    _same(f"{name}.method", lambda h, m, name=name: getattr(h, name)(2))  # in place: a scalar
    for name in "add_ sub_ mul_ div_".split()
] + [
    _same(f"{name}.method", lambda h, m, name=name: getattr(h, name)())
    for name in ("relu relu_ sigmoid sigmoid_ tanh tanh_ exp log sqrt rsqrt abs neg contiguous "
                 "clone float double half bfloat16 cpu square reciprocal").split()
] + [
    _same(f"{name}.method", lambda h, m, name=name: getattr(h, name)(), at=())
    for name in "detach sign floor ceil round".split()
] + [
    _same(f"{name}.method", lambda h, m, name=name: getattr(h, name)(0, 1))
    for name in "clamp clamp_ clip".split()
] + [
    _same(f"{name}.method", lambda h, m, name=name: getattr(h, name)(0.5))
    for name in "clamp_min clamp_min_ clamp_max clamp_max_".split()
] + [
    _same("pow.method", lambda h, m: h.pow(2)),
    _same("to.method", lambda h, m: h.to(torch.float32)),
    _same("type.method", lambda h, m: h.type(torch.float64)),
    _same("type_as.method", lambda h, m: h.type_as(h)),
    _same("expand.method", lambda h, m: h[:, :1].expand(-1, 4, -1, -1)),
    _same("expand_as.method", lambda h, m: h[:, :1].expand_as(h)),
    _same("masked_fill.method", lambda h, m: h.masked_fill(h > 100, 0.0)),
    _same("where.method", lambda h, m: h.where(h > 0, 2 * h)),
]

_MODULES = [
    _module(type(mod).__name__, mod, at=at)
    for mod, at in [
        (nn.ReLU(), BOTH), (nn.ReLU6(), BOTH), (nn.LeakyReLU(), BOTH), (nn.PReLU(), BOTH),
        (nn.RReLU(), BOTH), (nn.ELU(), BOTH), (nn.SELU(), BOTH), (nn.CELU(), BOTH),
        (nn.GELU(), BOTH), (nn.SiLU(), BOTH), (nn.Mish(), BOTH), (nn.Hardswish(), BOTH),
        (nn.Hardsigmoid(), BOTH), (nn.Hardtanh(), BOTH), (nn.Hardshrink(), (CENTRE,)),
        (nn.Sigmoid(), BOTH), (nn.Tanh(), BOTH), (nn.Softplus(), BOTH), (nn.Softsign(), BOTH),
        (nn.Softshrink(), (CENTRE,)), (nn.Tanhshrink(), BOTH), (nn.Threshold(0.1, 0.0), BOTH),
        (nn.LogSigmoid(), BOTH), (nn.Softmax2d(), ()), (nn.Identity(), BOTH),
        (nn.Dropout(), BOTH), (nn.Dropout2d(), BOTH), (nn.AlphaDropout(), BOTH),
        (nn.FeatureAlphaDropout(), BOTH), (nn.BatchNorm2d(4), BOTH), (nn.InstanceNorm2d(4), BOTH),
        (nn.GroupNorm(2, 4), BOTH), (nn.LayerNorm(SIZE), BOTH), (nn.LocalResponseNorm(2), BOTH),
        (nn.CrossMapLRN2d(3), BOTH), (nn.ChannelShuffle(2), BOTH), (nn.GLU(dim=1), BOTH),
        (nn.Softmax(dim=1), ()), (nn.LogSoftmax(dim=-3), ()),
    ]
] + [
    _module("Conv2d", nn.Conv2d(4, 2, (3, 5), stride=(2, 1), padding=(0, 2)),
            _rf((5, 7), (2, 1), (-1, -3)), at=(CORNER, (3, 6))),
    _module("MaxPool2d", nn.MaxPool2d(3, 2, 1), _rf(5, 2, -2)),
    _module("AvgPool2d", nn.AvgPool2d(2), POOLED),
    _module("LPPool2d", nn.LPPool2d(2, 2), POOLED),
    # 12 -> 5 is not a fixed window: the rule takes the whole axis (a bound; no measurement)
    _module("AdaptiveAvgPool2d", nn.AdaptiveAvgPool2d((6, 5)), _rf((4, 14), (2, 0), (-1, -1)), at=()),
    _module("AdaptiveMaxPool2d", nn.AdaptiveMaxPool2d(3), _rf(6, 4, -1), at=(CORNER, (1, 2))),
    _module("Flatten", nn.Flatten(), GLOBAL, at=(CORNER,)),
    _module("Unflatten", nn.Unflatten(1, (2, 2)), STEM),
    _module("Linear", nn.Linear(SIZE, 6), WIDE_X, at=(CORNER, (5, 5))),
    _module("ZeroPad2d", nn.ZeroPad2d((1, 2, 3, 0)), _rf(3, 1, (-4, -2)), at=(CENTRE, (4, 1))),
    _module("ConstantPad2d", nn.ConstantPad2d(2, 0.5), _rf(3, 1, -3), at=(CENTRE,)),
    _module("ReflectionPad2d", nn.ReflectionPad2d(1), _rf(3, 1, -2), at=(CENTRE,)),
    _module("ReplicationPad2d", nn.ReplicationPad2d(1), _rf(3, 1, -2), at=(CENTRE,)),
    _module("Softmax.x", nn.Softmax(dim=3), WIDE_X),
    _module("LogSoftmax.y", nn.LogSoftmax(dim=2), WIDE_Y),
    _module("Softmin.x", nn.Softmin(dim=-1), WIDE_X),
]

CASES = _OPERATOR + _TORCH + _FUNCTIONAL + _WINDOWS + _LAYOUT + _REDUCTIONS + _COMBINE + _METHODS \
    + _MODULES


def _clip(box):
    x0, y0, x1, y1 = box
    return max(x0, 0), max(y0, 0), min(x1, SIZE), min(y1, SIZE)


@pytest.mark.parametrize("op, expected, positions, mid", CASES)
def test_rule_gives_the_hand_field_and_agrees_with_measurement(op, expected, positions, mid):
    torch.manual_seed(0)
    model = _Probe(op, mid)
    fields = analytic_receptive_fields(model, ["stem", ""], (SIZE, SIZE))
    assert fields["stem"] == STEM
    assert fields[""] == expected
    for y, x in positions:
        measured = measured_receptive_field(model, "", (SIZE, SIZE), position=(y, x))
        assert measured == _clip(expected.box_xyxy(y, x)), (y, x)


def _traced_ops() -> tuple[set, set, list[nn.Module]]:
    """call_function targets, call_method names and leaf modules used by the cases."""
    functions, methods, modules = set(), set(), []
    for case in CASES:
        op, _, _, mid = case.values
        model = _Probe(op, mid)
        graph = torch.fx.Tracer().trace(model)
        for node in graph.nodes:
            if node.op == "call_function":
                functions.add(node.target)
            elif node.op == "call_method":
                methods.add(node.target)
            elif node.op == "call_module":
                modules.append(model.get_submodule(node.target))
    return functions, methods, modules


def test_every_rule_is_exercised():
    functions, methods, modules = _traced_ops()
    untested_functions = [getattr(f, "__name__", f) for f in FUNCTION_RULES if f not in functions]
    assert untested_functions == []
    assert sorted(set(METHOD_RULES) - methods) == []
    untested_modules = [cls.__name__ for cls in MODULE_RULES
                        if not any(isinstance(m, cls) for m in modules)]
    assert untested_modules == []
    assert operator.getitem in functions
