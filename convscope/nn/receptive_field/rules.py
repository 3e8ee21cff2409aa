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
from convscope.nn.receptive_field.values import (
    FieldValue,
    NotAnalysable,
    OpCall,
    require_nchw,
    shape_of,
    spatial_lengths,
    tensors_in,
    union_of,
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


def _norm_dims(dims, ndim: int) -> tuple[int, ...]:
    if isinstance(dims, int):
        dims = (dims,)
    return tuple(d % ndim for d in dims)


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


def _pointwise(call: OpCall) -> FieldValue:
    """Output position (y, x) depends on input position (y, x) of every tensor input."""
    out_shape = shape_of(call.value)
    out_dims = None
    for field in call.inputs:
        if field.dims is not None and field.shape is not None:
            shift = (len(out_shape) - len(field.shape)) if out_shape is not None else 0
            out_dims = (field.dims[0] + shift, field.dims[1] + shift)
            break
    if out_shape is None:  # tuple of tensors (max with dim...)
        first = call.inputs[0]
        return FieldValue(union_of(call.inputs, first.shape, first.dims), first.dims, None)
    return FieldValue(union_of(call.inputs, out_shape, out_dims), out_dims, out_shape)


def unknown_op(call: OpCall) -> FieldValue:
    """Ops without a rule: pointwise if every output has the input's shape, else not analysable."""
    shapes = {tuple(t.shape) for t in tensors_in(call.value)}
    src = call.src
    if src.shape is not None and shapes == {src.shape}:
        return _pointwise(call)
    raise NotAnalysable(f"no receptive-field rule for {call.describe()}")


def _reshape(call: OpCall) -> FieldValue:
    """view / reshape / flatten / squeeze: keep (h, w) if they stay the last two axes."""
    src, out_shape = call.src, shape_of(call.value)
    if src.dims is None or out_shape is None:
        return FieldValue(src.rf, None, out_shape)
    in_h, in_w = spatial_lengths(src)
    trailing = src.dims == (len(src.shape) - 2, len(src.shape) - 1)
    if trailing and len(out_shape) >= 3 and out_shape[-2:] == (in_h, in_w):
        return FieldValue(src.rf, (len(out_shape) - 2, len(out_shape) - 1), out_shape)
    return FieldValue(globalise(src.rf, (in_h, in_w)), None, out_shape)


def _permute_dims(call: OpCall, perm) -> FieldValue:
    src = call.src
    if src.dims is None:
        return FieldValue(src.rf, None, shape_of(call.value))
    perm = _norm_dims(tuple(perm), len(src.shape))
    dims = (perm.index(src.dims[0]), perm.index(src.dims[1]))
    return FieldValue(src.rf, dims, shape_of(call.value))


def _permute(call: OpCall) -> FieldValue:
    """permute: the spatial axes move with the permutation."""
    perm = call.args[1:] if call.node.op == "call_method" else call.arg(1, "dims")
    if len(perm) == 1 and isinstance(perm[0], (tuple, list)):
        perm = perm[0]
    return _permute_dims(call, perm)


def _transpose(call: OpCall) -> FieldValue:
    """transpose / swapaxes: a permutation of two axes."""
    src = call.src
    if src.dims is None:
        return FieldValue(src.rf, None, shape_of(call.value))
    ndim = len(src.shape)
    a, b = _norm_dims((call.arg(1, "dim0"), call.arg(2, "dim1")), ndim)
    perm = list(range(ndim))
    perm[a], perm[b] = perm[b], perm[a]
    return _permute_dims(call, perm)


def _reduced_field(src: FieldValue, dim, keepdim: bool, out_shape) -> FieldValue:
    """Field after reducing ``dim`` (None: all axes) of a value with field ``src``."""
    if src.dims is None:
        return FieldValue(src.rf, None, out_shape)
    lengths, ndim = spatial_lengths(src), len(src.shape)
    if dim is None:
        return FieldValue(globalise(src.rf, lengths), None, out_shape)
    reduced = set(_norm_dims(dim, ndim))
    axes = [axis for axis in range(2) if src.dims[axis] in reduced]
    if keepdim:
        return FieldValue(globalise(src.rf, lengths, axes), src.dims, out_shape)
    if axes:  # a spatial axis is gone: treat the result as having no spatial layout
        return FieldValue(globalise(src.rf, lengths), None, out_shape)
    dims = tuple(d - sum(r < d for r in reduced) for d in src.dims)
    return FieldValue(src.rf, dims, out_shape)


def _reduce_rule(keepdim_index: int) -> Rule:
    """mean / sum / amax ... over some axes; reducing a spatial axis makes the field global.

    keepdim_index: position of ``keepdim`` in the positional arguments (std and var take
    ``unbiased`` before it).
    """

    def rule(call: OpCall) -> FieldValue:
        dim = call.arg(1, "dim")
        if dim is None and "axis" in call.kwargs:
            dim = call.kwargs["axis"]
        if isinstance(dim, torch.Tensor):  # torch.max(a, b): elementwise
            return _pointwise(call)
        keepdim = bool(call.arg(keepdim_index, "keepdim", False))
        out_shape = tuple(tensors_in(call.value)[0].shape)  # (values, indices) for max with dim
        return _reduced_field(call.src, dim, keepdim, out_shape)

    return rule


_reduce = _reduce_rule(keepdim_index=2)
_reduce_std = _reduce_rule(keepdim_index=3)


def _concatenate(call: OpCall, stack: bool) -> FieldValue:
    """cat / stack: union position by position; concatenating along h or w is not analysable."""
    tensors = call.arg(0, "tensors")
    nodes = call.node.args[0] if call.node.args else call.node.kwargs["tensors"]
    fields = [call.fields.get(n) for n in nodes if isinstance(n, torch.fx.Node)]
    fields = [f for f in fields if f is not None]
    out_shape = shape_of(call.value)
    ndim_in = tensors[0].dim()
    dim = call.arg(1, "dim", 0) % (ndim_in + 1 if stack else ndim_in)
    src = next((f for f in fields if f.dims is not None), fields[0])
    if src.dims is None:
        return FieldValue(union_of(fields, out_shape, None), None, out_shape)
    if stack:
        dims = tuple(d + 1 if d >= dim else d for d in src.dims)
    else:
        if dim in src.dims:
            raise NotAnalysable("concatenation along a spatial axis")
        dims = src.dims
    return FieldValue(union_of(fields, out_shape, dims), dims, out_shape)


def _split(call: OpCall) -> FieldValue:
    """chunk / split along a non-spatial axis: every piece keeps the field."""
    src = call.src
    dim = call.arg(2, "dim", 0)
    if src.dims is not None and dim % len(src.shape) in src.dims:
        raise NotAnalysable(f"{call.describe()} along a spatial axis")
    return FieldValue(src.rf, src.dims, None)


def _expand_index(items: tuple, ndim: int) -> list:
    """Index items with Ellipsis expanded and trailing full slices added (None kept)."""
    n_consumed = sum(1 for item in items if item is not None and item is not Ellipsis)
    expanded = []
    for item in items:
        if item is Ellipsis:
            expanded.extend([slice(None)] * (ndim - n_consumed))
        else:
            expanded.append(item)
    expanded.extend([slice(None)] * (ndim - sum(i is not None for i in expanded)))
    return expanded


def _getitem(call: OpCall) -> FieldValue:
    """Element of a tuple, or basic indexing of a tensor: slices move start and stride."""
    container, index = call.args[0], call.args[1]
    src = call.field_of(0)
    if not isinstance(container, torch.Tensor):
        # element of a tuple produced by a traced op (split, max with dim...)
        return FieldValue(src.rf, src.dims, shape_of(call.value))
    if src.dims is None:
        return FieldValue(src.rf, None, shape_of(call.value))
    items = index if isinstance(index, tuple) else (index,)
    if any(isinstance(item, (torch.Tensor, list, bool)) for item in items):
        raise NotAnalysable("advanced (tensor) indexing of a feature map")
    stride, start = list(src.rf.stride), list(src.rf.start)
    in_dim, out_dim, new_dims = 0, 0, [None, None]
    for item in _expand_index(items, container.dim()):
        if item is None:
            out_dim += 1
            continue
        axis = src.dims.index(in_dim) if in_dim in src.dims else None
        if isinstance(item, int):
            if axis is not None:
                raise NotAnalysable("integer indexing of a spatial axis")
        else:
            first, _, step = item.indices(container.shape[in_dim])
            if axis is not None:
                start[axis] += first * stride[axis]
                stride[axis] *= step
                new_dims[axis] = out_dim
            out_dim += 1
        in_dim += 1
    rf = ReceptiveField(src.rf.size, tuple(stride), tuple(start))
    return FieldValue(rf, tuple(new_dims), shape_of(call.value))


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
    return _pointwise(call)


def _glu_over(call: OpCall, dim: int) -> FieldValue:
    """GLU halves axis ``dim``: pointwise over channels; along h or w it pairs distant positions."""
    src = call.src
    if src.dims is not None and dim % len(src.shape) in src.dims:
        raise NotAnalysable(f"{call.describe()} along a spatial axis")
    return _pointwise(call)


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
    **{fn: _pointwise for fn in _POINTWISE_FUNCTIONS},
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
    torch.flatten: _reshape,
    torch.reshape: _reshape,
    torch.squeeze: _reshape,
    torch.unsqueeze: _reshape,
    torch.permute: _permute,
    torch.transpose: _transpose,
    torch.swapaxes: _transpose,
    torch.mean: _reduce,
    torch.sum: _reduce,
    torch.amax: _reduce,
    torch.amin: _reduce,
    torch.max: _reduce,
    torch.min: _reduce,
    torch.std: _reduce_std,
    torch.var: _reduce_std,
    torch.logsumexp: _reduce,
    torch.cat: lambda call: _concatenate(call, stack=False),
    torch.concat: lambda call: _concatenate(call, stack=False),
    torch.stack: lambda call: _concatenate(call, stack=True),
    torch.chunk: _split,
    torch.split: _split,
    operator.getitem: _getitem,
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
    **{name: _pointwise for name in _POINTWISE_METHODS},
    **{name: _reshape for name in "view reshape flatten squeeze unsqueeze unflatten view_as "
                                  "reshape_as".split()},
    "permute": _permute,
    "transpose": _transpose,
    "swapaxes": _transpose,
    **{name: _reduce for name in "mean sum amax amin max min logsumexp".split()},
    "std": _reduce_std,
    "var": _reduce_std,
    "softmax": _f_softmax,
    "log_softmax": _f_softmax,
    "chunk": _split,
    "split": _split,
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
    **{cls: _pointwise for cls in _POINTWISE_MODULES},
    nn.Conv2d: _m_conv2d,
    nn.MaxPool2d: _m_max_pool2d,
    nn.AvgPool2d: _m_avg_pool2d,
    nn.LPPool2d: _m_lp_pool2d,
    nn.AdaptiveAvgPool2d: _adaptive_pool,
    nn.AdaptiveMaxPool2d: _adaptive_pool,
    nn.Flatten: _reshape,
    nn.Unflatten: _reshape,
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
