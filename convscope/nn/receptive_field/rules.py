"""Per-op rules of the analytic route: how an op maps its inputs' fields to its output's.

Three tables, each entry tested in tests/test_receptive_field_rules.py:

- :data:`FUNCTION_RULES`: ``call_function`` targets (``torch.*``, ``F.*``, ``operator.*``).
- :data:`METHOD_RULES`: ``call_method`` names (``x.view(...)``).
- :data:`MODULE_RULES`: leaf ``torch.nn`` module classes (looked up along the class's MRO).

An op without a rule is taken as pointwise when every tensor it returns has the shape of
its main input (:func:`unknown_op`), and is otherwise not analysable: only the layers
whose field depends on it are then measured instead.

Convolutions and pools grow the field, pointwise / normalisation / dropout ops keep it,
multi-input ops take the union, global pooling, flatten and linear layers make it cover
the whole input. Normalisation statistics (batch, group, layer norm) are ignored.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from convscope.nn.receptive_field.geometry import (
    ReceptiveField,
    globalise,
    grow_window,
    spatial_pair,
)
from convscope.nn.receptive_field.layout_rules import (
    concatenate,
    getitem,
    permute,
    pointwise,
    reduce,
    reduce_std,
    reshape,
    split,
    transpose,
    unknown_op,
)
from convscope.nn.receptive_field.values import (
    FieldValue,
    NotAnalysable,
    OpCall,
    require_nchw,
    shape_of,
    spatial_lengths,
    tensors_in,
)

__all__ = ["FUNCTION_RULES", "METHOD_RULES", "MODULE_RULES", "field_of_call", "unknown_op"]

Rule = Callable[[OpCall], FieldValue]


# --- small helpers -------------------------------------------------------------------------


def _conv_padding(padding, kernel: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    """Left/top padding of a convolution; handles 'valid' and 'same'."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0
        if padding == "same":
            return tuple((d * (k - 1)) // 2 for k, d in zip(kernel, dilation))
        raise NotAnalysable(f"unknown convolution padding {padding!r}")
    return spatial_pair(padding)



def _window(call: OpCall, kernel, stride, padding, dilation) -> FieldValue:
    """Conv / pool of kernel, stride, left padding, dilation (h, w) over the (h, w) axes."""
    src = call.src
    require_nchw(src, call.describe())
    rf = grow_window(src.rf, kernel, stride, padding, dilation)
    return FieldValue(rf, src.dims, shape_of(call.value))


def _pool_stride(stride, kernel: tuple[int, int]) -> tuple[int, int]:
    """A pool's stride; None or empty means the kernel size."""
    return kernel if stride is None or stride == [] or stride == () else spatial_pair(stride)


# --- shape-keeping and combining ops ---------------------------------------------------------


def _linear(call: OpCall) -> FieldValue:
    """Linear map over the last axis: global along that axis if it is spatial."""
    src = call.src
    if src.dims is None:
        return FieldValue(src.rf, None, shape_of(call.value))
    last = len(src.shape) - 1
    axes = [axis for axis in range(2) if src.dims[axis] == last]
    rf = globalise(src.rf, spatial_lengths(src), axes)
    return FieldValue(rf, src.dims, shape_of(call.value))


def _adaptive_pool(call: OpCall) -> FieldValue:
    """Exact when the input length is a multiple of the output length, else global."""
    src = call.src
    require_nchw(src, call.describe())
    out_lengths = tuple(tensors_in(call.value)[0].shape[-2:])
    in_lengths = spatial_lengths(src)
    rf = src.rf
    size, stride = list(rf.size), list(rf.stride)
    for axis in range(2):
        n_in, n_out = in_lengths[axis], out_lengths[axis]
        if n_in % n_out == 0:
            k = n_in // n_out
            size[axis] = rf.size[axis] + (k - 1) * rf.stride[axis]
            stride[axis] = rf.stride[axis] * k
        else:
            size[axis] = rf.size[axis] + (n_in - 1) * rf.stride[axis]
            stride[axis] = 0
    return FieldValue(ReceptiveField(tuple(size), tuple(stride), rf.start), src.dims,
                      shape_of(call.value))


def _pad(call: OpCall, pad, mode: str) -> FieldValue:
    """Padding moves start back by the left / top pad; circular padding is not analysable."""
    src = call.src
    if src.dims is None:
        return FieldValue(src.rf, None, shape_of(call.value))
    ndim = len(src.shape)
    start = list(src.rf.start)
    for j in range(len(pad) // 2):
        dim = ndim - 1 - j
        if dim in src.dims:
            axis = src.dims.index(dim)
            if mode == "circular":
                raise NotAnalysable("circular padding wraps the field around the image")
            start[axis] -= int(pad[2 * j]) * src.rf.stride[axis]
    rf = ReceptiveField(src.rf.size, src.rf.stride, tuple(start))
    return FieldValue(rf, src.dims, shape_of(call.value))


def _softmax_over(call: OpCall, dim) -> FieldValue:
    """Softmax along ``dim``: global along it if it is spatial, pointwise otherwise."""
    src = call.src
    if src.dims is not None and dim is not None and dim % len(src.shape) in src.dims:
        axes = [src.dims.index(dim % len(src.shape))]
        return FieldValue(globalise(src.rf, spatial_lengths(src), axes), src.dims,
                          shape_of(call.value))
    return pointwise(call)


def _glu_over(call: OpCall, dim: int) -> FieldValue:
    """GLU halves axis ``dim``: pointwise over channels; along h or w it pairs distant positions."""
    src = call.src
    if src.dims is not None and dim % len(src.shape) in src.dims:
        raise NotAnalysable(f"{call.describe()} along a spatial axis")
    return pointwise(call)


# --- functional calls ------------------------------------------------------------------------


def _f_conv2d(call: OpCall) -> FieldValue:
    """conv2d(input, weight, bias, stride, padding, dilation, groups)."""
    kernel = tuple(call.arg(1, "weight").shape[-2:])
    dilation = spatial_pair(call.arg(5, "dilation", 1))
    padding = _conv_padding(call.arg(4, "padding", 0), kernel, dilation)
    return _window(call, kernel, spatial_pair(call.arg(3, "stride", 1)), padding, dilation)


def _f_max_pool2d(call: OpCall) -> FieldValue:
    """max_pool2d(input, kernel_size, stride, padding, dilation, ...)."""
    kernel = spatial_pair(call.arg(1, "kernel_size"))
    padding = spatial_pair(call.arg(3, "padding", 0))
    dilation = spatial_pair(call.arg(4, "dilation", 1))
    return _window(call, kernel, _pool_stride(call.arg(2, "stride"), kernel), padding, dilation)


def _f_avg_pool2d(call: OpCall) -> FieldValue:
    """avg_pool2d(input, kernel_size, stride, padding, ...)."""
    kernel = spatial_pair(call.arg(1, "kernel_size"))
    return _window(call, kernel, _pool_stride(call.arg(2, "stride"), kernel),
                   spatial_pair(call.arg(3, "padding", 0)), (1, 1))


def _f_lp_pool2d(call: OpCall) -> FieldValue:
    """lp_pool2d(input, norm_type, kernel_size, stride=None, ceil_mode=False)."""
    kernel = spatial_pair(call.arg(2, "kernel_size"))
    return _window(call, kernel, _pool_stride(call.arg(3, "stride"), kernel), (0, 0), (1, 1))


def _f_pad(call: OpCall) -> FieldValue:
    return _pad(call, call.arg(1, "pad"), call.arg(2, "mode", "constant"))


def _f_softmax(call: OpCall) -> FieldValue:
    return _softmax_over(call, call.arg(1, "dim"))


def _f_glu(call: OpCall) -> FieldValue:
    return _glu_over(call, call.arg(1, "dim", -1))


def _named(module, names: str) -> list:
    return [getattr(module, name) for name in names.split() if hasattr(module, name)]


_POINTWISE_FUNCTIONS = (
    _named(operator, "add sub mul truediv floordiv mod pow neg pos abs and_ or_ xor invert "
                     "eq ne lt le gt ge")
    + _named(torch, "add sub subtract mul multiply div divide true_divide neg abs exp log sqrt "
                    "rsqrt pow sigmoid sigmoid_ tanh tanh_ relu relu_ clamp clip clamp_min "
                    "clamp_max where maximum minimum erf sin cos square reciprocal sign floor "
                    "ceil round lerp addcmul addcdiv dropout selu celu rrelu hardshrink logit "
                    "nan_to_num")
    + _named(F, "relu relu_ relu6 elu elu_ selu celu leaky_relu leaky_relu_ prelu rrelu gelu "
                "silu mish hardswish hardsigmoid hardtanh hardtanh_ hardshrink softplus softsign "
                "softshrink tanhshrink threshold logsigmoid dropout dropout2d "
                "alpha_dropout feature_alpha_dropout batch_norm instance_norm group_norm "
                "layer_norm local_response_norm normalize")
)

FUNCTION_RULES: dict[Callable, Rule] = {
    **{fn: pointwise for fn in _POINTWISE_FUNCTIONS},
    F.conv2d: _f_conv2d,
    torch.conv2d: _f_conv2d,
    F.max_pool2d: _f_max_pool2d,
    F.max_pool2d_with_indices: _f_max_pool2d,
    torch.max_pool2d: _f_max_pool2d,
    F.avg_pool2d: _f_avg_pool2d,
    F.lp_pool2d: _f_lp_pool2d,
    F.adaptive_avg_pool2d: _adaptive_pool,
    F.adaptive_max_pool2d: _adaptive_pool,
    F.adaptive_max_pool2d_with_indices: _adaptive_pool,
    F.pad: _f_pad,
    F.linear: _linear,
    F.glu: _f_glu,
    F.softmax: _f_softmax,
    F.log_softmax: _f_softmax,
    torch.softmax: _f_softmax,
    torch.log_softmax: _f_softmax,
    torch.flatten: reshape,
    torch.reshape: reshape,
    torch.squeeze: reshape,
    torch.unsqueeze: reshape,
    torch.permute: permute,
    torch.transpose: transpose,
    torch.swapaxes: transpose,
    torch.mean: reduce,
    torch.sum: reduce,
    torch.amax: reduce,
    torch.amin: reduce,
    torch.max: reduce,
    torch.min: reduce,
    torch.std: reduce_std,
    torch.var: reduce_std,
    torch.logsumexp: reduce,
    torch.cat: lambda call: concatenate(call, stack=False),
    torch.concat: lambda call: concatenate(call, stack=False),
    torch.stack: lambda call: concatenate(call, stack=True),
    torch.chunk: split,
    torch.split: split,
    operator.getitem: getitem,
}
"""``call_function`` target -> rule."""


# --- method calls ----------------------------------------------------------------------------

_POINTWISE_METHODS = (
    "add add_ sub sub_ mul mul_ div div_ relu relu_ sigmoid sigmoid_ tanh tanh_ exp log sqrt "
    "rsqrt pow abs neg clamp clamp_ clamp_min clamp_min_ clamp_max clamp_max_ clip contiguous "
    "clone detach to float double half bfloat16 type type_as cpu expand expand_as masked_fill "
    "sign floor ceil round square reciprocal where maximum minimum"
).split()

METHOD_RULES: dict[str, Rule] = {
    **{name: pointwise for name in _POINTWISE_METHODS},
    **{name: reshape for name in "view reshape flatten squeeze unsqueeze unflatten view_as "
                                  "reshape_as".split()},
    "permute": permute,
    "transpose": transpose,
    "swapaxes": transpose,
    **{name: reduce for name in "mean sum amax amin max min logsumexp".split()},
    "std": reduce_std,
    "var": reduce_std,
    "softmax": _f_softmax,
    "log_softmax": _f_softmax,
    "chunk": split,
    "split": split,
}
"""``call_method`` name -> rule."""


# --- module calls ----------------------------------------------------------------------------


def _m_conv2d(call: OpCall) -> FieldValue:
    m = call.module
    if m.padding_mode == "circular":
        raise NotAnalysable(f"{call.describe()} uses circular padding")
    padding = _conv_padding(m.padding, m.kernel_size, m.dilation)
    return _window(call, m.kernel_size, m.stride, padding, m.dilation)


def _m_max_pool2d(call: OpCall) -> FieldValue:
    m = call.module
    kernel = spatial_pair(m.kernel_size)
    padding, dilation = spatial_pair(m.padding), spatial_pair(m.dilation)
    return _window(call, kernel, _pool_stride(m.stride, kernel), padding, dilation)


def _m_avg_pool2d(call: OpCall) -> FieldValue:
    m = call.module
    kernel = spatial_pair(m.kernel_size)
    return _window(call, kernel, _pool_stride(m.stride, kernel), spatial_pair(m.padding), (1, 1))


def _m_lp_pool2d(call: OpCall) -> FieldValue:
    m = call.module
    kernel = spatial_pair(m.kernel_size)
    return _window(call, kernel, _pool_stride(m.stride, kernel), (0, 0), (1, 1))


def _m_pad2d(call: OpCall) -> FieldValue:
    return _pad(call, call.module.padding, "constant")


def _m_softmax(call: OpCall) -> FieldValue:
    return _softmax_over(call, call.module.dim)


def _m_glu(call: OpCall) -> FieldValue:
    return _glu_over(call, call.module.dim)


_POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Hardshrink, nn.Sigmoid,
    nn.Tanh, nn.Softplus, nn.Softsign, nn.Softshrink, nn.Tanhshrink, nn.Threshold, nn.LogSigmoid,
    nn.Softmax2d, nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.FeatureAlphaDropout,
    nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm,
    nn.CrossMapLRN2d, nn.ChannelShuffle,
)

MODULE_RULES: dict[type, Rule] = {
    **{cls: pointwise for cls in _POINTWISE_MODULES},
    nn.Conv2d: _m_conv2d,
    nn.MaxPool2d: _m_max_pool2d,
    nn.AvgPool2d: _m_avg_pool2d,
    nn.LPPool2d: _m_lp_pool2d,
    nn.AdaptiveAvgPool2d: _adaptive_pool,
    nn.AdaptiveMaxPool2d: _adaptive_pool,
    nn.Flatten: reshape,
    nn.Unflatten: reshape,
    nn.Linear: _linear,
    nn.ZeroPad2d: _m_pad2d,
    nn.ConstantPad2d: _m_pad2d,
    nn.ReflectionPad2d: _m_pad2d,
    nn.ReplicationPad2d: _m_pad2d,
    nn.Softmax: _m_softmax,
    nn.LogSoftmax: _m_softmax,
    nn.Softmin: _m_softmax,
    nn.GLU: _m_glu,
}
"""Leaf module class -> rule (a subclass uses its nearest listed base class)."""


def field_of_call(call: OpCall) -> FieldValue:
    """Field of the value of ``call`` from its inputs' fields; NotAnalysable if unknown."""
    op = call.node.op
    if op == "call_module":
        rule = next((MODULE_RULES[cls] for cls in type(call.module).__mro__
                     if cls in MODULE_RULES), None)
    elif op == "call_function":
        rule = FUNCTION_RULES.get(call.node.target)
    else:
        rule = METHOD_RULES.get(call.node.target)
    return rule(call) if rule is not None else unknown_op(call)
