"""Receptive fields: which model-input pixels can influence a feature position.

Conventions (shared by every stage that crops patches):

- Pixel index ``i`` covers ``[i, i + 1)``.
- For an analysed layer, the field of feature position ``(y, x)`` is the pixel box
  ``[x0, x1) x [y0, y1)`` with ``x0 = start_x + x * stride_x`` and ``x1 = x0 + size_x``
  (same for ``y``). ``start`` may be negative and ``x1`` may lie beyond the input
  (zero padding); callers clip to the image.
- A stride of 0 on an axis means every position of the layer sees the same box
  (global pooling, flatten, linear layers, or a branch that broadcasts a pooled
  vector such as squeeze-and-excitation).

Two ways to get the geometry:

- :func:`analytic_receptive_fields` traces the model with ``torch.fx`` and propagates
  (size, stride, start) through every node: convolutions and pools grow the field,
  pointwise / normalisation / dropout ops keep it, multi-input ops take the union,
  global pooling, flatten and linear layers make it cover the whole input.
  Normalisation statistics (batch, group, layer norm) are ignored, as is usual.
- :func:`measured_receptive_field` backpropagates from one feature position through a
  linearised copy of the model (max pooling -> average pooling, activations and
  normalisation -> identity, positive weights, float64) and reads the box of input
  pixels with a nonzero gradient. The box is clipped to the input.

:func:`receptive_fields` uses the analytic route and falls back to measurement when the
model cannot be traced. No function here leaves the model modified (mode, weights and
hooks are as before; hooks never fire).
"""

from __future__ import annotations

import copy
import difflib
import operator
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = [
    "ReceptiveField",
    "analytic_receptive_fields",
    "measured_receptive_field",
    "receptive_fields",
]


# ----------------------------------------------------------------------------------------
# The geometry object
# ----------------------------------------------------------------------------------------


def _int_pair(value, what: str) -> tuple[int, int]:
    values = tuple(value)
    if len(values) != 2:
        raise ValueError(f"receptive field {what} must have 2 entries (h, w), got {value!r}")
    return int(values[0]), int(values[1])


@dataclass(frozen=True)
class ReceptiveField:
    """Geometry of a layer's receptive field, in model-input pixels.

    size:   (h, w) extent of the field of one feature position.
    stride: (h, w) jump between neighbouring feature positions (0: all positions share
            one box).
    start:  (y, x) first input pixel index covered by feature position (0, 0); may be
            negative (padding).
    """

    size: tuple[int, int]
    stride: tuple[int, int]
    start: tuple[int, int]

    def __post_init__(self):
        size = _int_pair(self.size, "size")
        stride = _int_pair(self.stride, "stride")
        start = _int_pair(self.start, "start")
        if min(size) < 1 or min(stride) < 0:
            raise ValueError(
                f"receptive field needs size >= 1 and stride >= 0, got size={size}, stride={stride}"
            )
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "stride", stride)
        object.__setattr__(self, "start", start)

    def box_xyxy(self, y: int, x: int) -> tuple[int, int, int, int]:
        """Unclipped box ``(x0, y0, x1, y1)`` of feature position (y, x); x1, y1 exclusive."""
        y0 = self.start[0] + int(y) * self.stride[0]
        x0 = self.start[1] + int(x) * self.stride[1]
        return x0, y0, x0 + self.size[1], y0 + self.size[0]

    def boxes_xyxy(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Unclipped boxes of many positions: ys, xs (n,) int -> (n, 4) int64 (x0, y0, x1, y1)."""
        ys = np.asarray(ys, dtype=np.int64).reshape(-1)
        xs = np.asarray(xs, dtype=np.int64).reshape(-1)
        if ys.shape != xs.shape:
            raise ValueError(f"ys and xs must have the same length, got {ys.shape} and {xs.shape}")
        y0 = self.start[0] + ys * self.stride[0]
        x0 = self.start[1] + xs * self.stride[1]
        return np.stack([x0, y0, x0 + self.size[1], y0 + self.size[0]], axis=1)

    def to_dict(self) -> dict:
        """JSON-able dict ``{"size": [h, w], "stride": [h, w], "start": [y, x]}``."""
        return {"size": list(self.size), "stride": list(self.stride), "start": list(self.start)}

    @classmethod
    def from_dict(cls, d: dict) -> ReceptiveField:
        """Inverse of :meth:`to_dict`."""
        missing = [key for key in ("size", "stride", "start") if key not in d]
        if missing:
            raise ValueError(
                f"receptive field dict lacks {missing}; expected keys size, stride, start, got {sorted(d)}"
            )
        return cls(size=tuple(d["size"]), stride=tuple(d["stride"]), start=tuple(d["start"]))


_IDENTITY_FIELD = ReceptiveField(size=(1, 1), stride=(1, 1), start=(0, 0))


# ----------------------------------------------------------------------------------------
# Argument checking shared by the public functions
# ----------------------------------------------------------------------------------------


def _as_names(layer_names) -> list[str]:
    if isinstance(layer_names, str):
        return [layer_names]
    return list(layer_names)


def _check_layer_names(model: nn.Module, layer_names: Sequence[str]) -> None:
    modules = dict(model.named_modules())
    unknown = [name for name in layer_names if name not in modules]
    if not unknown:
        return
    valid = [name for name in modules if name]
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, valid, n=3)
        if close:
            hints.append(f"{name!r}: did you mean {', '.join(map(repr, close))}?")
    shown = ", ".join(map(repr, valid[:12])) + (", ..." if len(valid) > 12 else "")
    raise ValueError(
        f"unknown layer name(s) {unknown} for {type(model).__name__}. "
        + (" ".join(hints) + " " if hints else "")
        + f"Layer names are module names from model.named_modules(), e.g. {shown}"
    )


def _check_input_size(input_size) -> tuple[int, int]:
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    height, width = _int_pair(input_size, "input_size")
    if height < 1 or width < 1:
        raise ValueError(f"input_size must be positive (h, w), got {input_size!r}")
    return height, width


def _model_tensor_kind(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


class _NotAnalysable(RuntimeError):
    """The model cannot be traced, or uses an op whose geometry is unknown."""


# ----------------------------------------------------------------------------------------
# Analytic propagation over a torch.fx graph
# ----------------------------------------------------------------------------------------


class _Field(NamedTuple):
    """Receptive field attached to a graph value.

    rf:    the geometry.
    dims:  (h, w) tensor dimensions that are the spatial axes, or None once the spatial
           layout is gone (flatten, linear): then rf covers the whole input.
    shape: tensor shape of the value (None for a tuple of tensors).
    """

    rf: ReceptiveField
    dims: tuple[int, int] | None
    shape: tuple[int, ...] | None


class _RecordingTracer(torch.fx.Tracer):
    """fx tracer that remembers the output node of every module call (leaf or container)."""

    def __init__(self):
        super().__init__()
        self.module_outputs: dict[str, torch.fx.Node] = {}

    def call_module(self, m, forward, args, kwargs):
        try:
            name = self.path_of_module(m)
        except NameError:
            return super().call_module(m, forward, args, kwargs)
        if not self.is_leaf_module(m, name):
            forward = m.forward  # trace through without firing the module's own hooks
        out = super().call_module(m, forward, args, kwargs)
        node = _first_proxy_node(out)
        if node is not None:
            self.module_outputs.setdefault(name, node)
        return out


def _first_proxy_node(value) -> torch.fx.Node | None:
    if isinstance(value, torch.fx.Proxy):
        return value.node
    if isinstance(value, torch.fx.Node):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            node = _first_proxy_node(item)
            if node is not None:
                return node
    return None


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) == 1:
            return int(value[0]), int(value[0])
        return int(value[-2]), int(value[-1])
    return int(value), int(value)


def _conv_padding(padding, kernel: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    """Left/top padding of a convolution; handles 'valid' and 'same'."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0
        if padding == "same":
            return tuple((d * (k - 1)) // 2 for k, d in zip(kernel, dilation))
        raise _NotAnalysable(f"unknown convolution padding {padding!r}")
    return _pair(padding)


def _spatial_lengths(field: _Field) -> tuple[int, int]:
    if field.dims is None or field.shape is None:
        return 1, 1
    return field.shape[field.dims[0]], field.shape[field.dims[1]]


def _require_nchw(field: _Field, what: str) -> None:
    if field.dims is None or field.shape is None:
        raise _NotAnalysable(f"{what} applied to a tensor without spatial axes")
    ndim = len(field.shape)
    if field.dims != (ndim - 2, ndim - 1):
        raise _NotAnalysable(f"{what} applied to a tensor whose last two axes are not (h, w)")


def _window(field: _Field, value, kernel, stride, padding, dilation, what: str) -> _Field:
    """Conv / pool of kernel k, stride s, left padding p, dilation d on both axes."""
    _require_nchw(field, what)
    rf = field.rf
    size, strides, start = [], [], []
    for axis in range(2):
        k, s, p, d = kernel[axis], stride[axis], padding[axis], dilation[axis]
        size.append(rf.size[axis] + (k - 1) * d * rf.stride[axis])
        strides.append(rf.stride[axis] * s)
        start.append(rf.start[axis] - p * rf.stride[axis])
    return _Field(ReceptiveField(tuple(size), tuple(strides), tuple(start)), field.dims, _shape(value))


def _globalise(rf: ReceptiveField, lengths: tuple[int, int], axes=(0, 1)) -> ReceptiveField:
    """Field covering every position of a feature map of ``lengths`` along ``axes``; stride 0."""
    size, stride = list(rf.size), list(rf.stride)
    for axis in axes:
        size[axis] = rf.size[axis] + (lengths[axis] - 1) * rf.stride[axis]
        stride[axis] = 0
    return ReceptiveField(tuple(size), tuple(stride), rf.start)


def _union(fields: list[_Field], out_shape, out_dims) -> ReceptiveField:
    """Union of the fields of several inputs combined position by position (add, cat, mul)."""
    if out_dims is not None and out_shape is not None:
        out_lengths = (out_shape[out_dims[0]], out_shape[out_dims[1]])
    else:
        out_lengths = (1, 1)
    size, stride, start = [], [], []
    for axis in range(2):
        spans = []  # (start, end, effective stride)
        for field in fields:
            in_length = _spatial_lengths(field)[axis]
            broadcast = field.dims is None or (in_length == 1 and out_lengths[axis] > 1)
            step = 0 if broadcast else field.rf.stride[axis]
            first = field.rf.start[axis]
            spans.append((first, first + field.rf.size[axis], step))
        steps = {step for _, _, step in spans}
        n = out_lengths[axis]
        if len(steps) == 1:
            step = steps.pop()
            lo, hi = min(s for s, _, _ in spans), max(e for _, e, _ in spans)
        elif 0 in steps:
            # one input is the same for every position: every position sees everything
            step = 0
            lo = min(s for s, _, _ in spans)
            hi = max(e + (n - 1) * st for _, e, st in spans)
        else:
            step = max(steps)
            lo = min(min(s, s + (n - 1) * (st - step)) for s, _, st in spans)
            hi = max(max(e, e + (n - 1) * (st - step)) for _, e, st in spans)
        size.append(hi - lo)
        stride.append(step)
        start.append(lo)
    return ReceptiveField(tuple(size), tuple(stride), tuple(start))


def _shape(value) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _tensors_in(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors_in(item)]
    return []


class _Call:
    """One graph node being propagated: its arguments (values) and the input fields."""

    def __init__(self, node: torch.fx.Node, args, kwargs, value, fields, module=None):
        self.node, self.args, self.kwargs, self.value = node, args, kwargs, value
        self.module = module
        self._fields = fields
        self.inputs: list[_Field] = [
            fields[n] for n in node.all_input_nodes if fields.get(n) is not None
        ]

    def arg(self, index: int, name: str, default: Any = None):
        if index < len(self.args):
            return self.args[index]
        return self.kwargs.get(name, default)

    def field_of(self, index: int, name: str | None = None) -> _Field | None:
        raw = self.node.args[index] if index < len(self.node.args) else self.node.kwargs.get(name)
        return self._fields.get(raw) if isinstance(raw, torch.fx.Node) else None

    @property
    def src(self) -> _Field:
        field = self.field_of(0, "input")
        return field if field is not None else self.inputs[0]

    def describe(self) -> str:
        if self.module is not None:
            return f"module {self.node.target!r} ({type(self.module).__name__})"
        target = self.node.target
        return f"{self.node.op} {getattr(target, '__name__', target)!r}"


def _pointwise(call: _Call) -> _Field:
    """Output position (y, x) depends on input position (y, x) of every tensor input."""
    value = call.value
    out_shape = _shape(value)
    out_dims = None
    for field in call.inputs:
        if field.dims is not None and field.shape is not None:
            shift = (len(out_shape) - len(field.shape)) if out_shape is not None else 0
            out_dims = (field.dims[0] + shift, field.dims[1] + shift)
            break
    if out_shape is None:  # tuple of tensors (split, chunk, max with dim...)
        first = call.inputs[0]
        return _Field(_union(call.inputs, first.shape, first.dims), first.dims, None)
    return _Field(_union(call.inputs, out_shape, out_dims), out_dims, out_shape)


def _same_shape_or_unknown(call: _Call) -> _Field:
    """Ops we have no rule for: pointwise if every output has the input's shape."""
    shapes = {tuple(t.shape) for t in _tensors_in(call.value)}
    src = call.src
    if src.shape is not None and shapes == {src.shape}:
        return _pointwise(call)
    raise _NotAnalysable(f"no receptive-field rule for {call.describe()}")


def _norm_dims(dims, ndim: int) -> tuple[int, ...]:
    if isinstance(dims, int):
        dims = (dims,)
    return tuple(d % ndim for d in dims)


def _reshape(call: _Call) -> _Field:
    """view / reshape / flatten / squeeze: keep (h, w) if they stay the last two axes."""
    src, out_shape = call.src, _shape(call.value)
    if src.dims is None or out_shape is None:
        return _Field(src.rf, None, out_shape)
    in_h, in_w = _spatial_lengths(src)
    trailing = src.dims == (len(src.shape) - 2, len(src.shape) - 1)
    if trailing and len(out_shape) >= 3 and out_shape[-2:] == (in_h, in_w):
        return _Field(src.rf, (len(out_shape) - 2, len(out_shape) - 1), out_shape)
    return _Field(_globalise(src.rf, (in_h, in_w)), None, out_shape)


def _permute_dims(call: _Call, perm) -> _Field:
    src = call.src
    if src.dims is None:
        return _Field(src.rf, None, _shape(call.value))
    perm = _norm_dims(tuple(perm), len(src.shape))
    dims = (perm.index(src.dims[0]), perm.index(src.dims[1]))
    return _Field(src.rf, dims, _shape(call.value))


def _permute(call: _Call) -> _Field:
    perm = call.args[1:] if call.node.op == "call_method" else call.arg(1, "dims")
    if len(perm) == 1 and isinstance(perm[0], (tuple, list)):
        perm = perm[0]
    return _permute_dims(call, perm)


def _transpose(call: _Call) -> _Field:
    src = call.src
    if src.dims is None:
        return _Field(src.rf, None, _shape(call.value))
    ndim = len(src.shape)
    a, b = _norm_dims((call.arg(1, "dim0"), call.arg(2, "dim1")), ndim)
    perm = list(range(ndim))
    perm[a], perm[b] = perm[b], perm[a]
    return _permute_dims(call, perm)


def _reduce(call: _Call) -> _Field:
    """mean / sum / amax ... over some axes; reducing a spatial axis makes the field global."""
    src = call.src
    dim = call.arg(1, "dim")
    if dim is None and "axis" in call.kwargs:
        dim = call.kwargs["axis"]
    if isinstance(dim, torch.Tensor):  # torch.max(a, b): elementwise
        return _pointwise(call)
    keepdim = bool(call.arg(2, "keepdim", False))
    tensors = _tensors_in(call.value)
    out_shape = tuple(tensors[0].shape)  # (values, indices) for max / min with dim
    if src.dims is None:
        return _Field(src.rf, None, out_shape)
    lengths, ndim = _spatial_lengths(src), len(src.shape)
    if dim is None:
        return _Field(_globalise(src.rf, lengths), None, out_shape)
    reduced = set(_norm_dims(dim, ndim))
    axes = [axis for axis in range(2) if src.dims[axis] in reduced]
    if keepdim:
        return _Field(_globalise(src.rf, lengths, axes), src.dims, out_shape)
    if axes:  # a spatial axis is gone: treat the result as having no spatial layout
        return _Field(_globalise(src.rf, lengths), None, out_shape)
    dims = tuple(d - sum(r < d for r in reduced) for d in src.dims)
    return _Field(src.rf, dims, out_shape)


def _concatenate(call: _Call, stack: bool) -> _Field:
    tensors = call.arg(0, "tensors")
    nodes = call.node.args[0] if call.node.args else call.node.kwargs["tensors"]
    fields = [call._fields.get(n) for n in nodes if isinstance(n, torch.fx.Node)]
    fields = [f for f in fields if f is not None]
    out_shape = _shape(call.value)
    dim = call.arg(1, "dim", 0)
    ndim_in = tensors[0].dim()
    dim = dim % (ndim_in + 1 if stack else ndim_in)
    src = next((f for f in fields if f.dims is not None), fields[0])
    if src.dims is None:
        return _Field(_union(fields, out_shape, None), None, out_shape)
    if stack:
        dims = tuple(d + 1 if d >= dim else d for d in src.dims)
    else:
        if dim in src.dims:
            raise _NotAnalysable("concatenation along a spatial axis")
        dims = src.dims
    return _Field(_union(fields, out_shape, dims), dims, out_shape)


def _split(call: _Call) -> _Field:
    src = call.src
    dim = call.arg(2, "dim", 0)
    if src.dims is not None and dim % len(src.shape) in src.dims:
        raise _NotAnalysable(f"{call.describe()} along a spatial axis")
    return _Field(src.rf, src.dims, None)


def _getitem(call: _Call) -> _Field:
    container, index = call.args[0], call.args[1]
    src = call.field_of(0)
    if not isinstance(container, torch.Tensor):
        # element of a tuple produced by a traced op (split, max with dim...)
        return _Field(src.rf, src.dims, _shape(call.value))
    if src.dims is None:
        return _Field(src.rf, None, _shape(call.value))
    items = index if isinstance(index, tuple) else (index,)
    if any(isinstance(item, (torch.Tensor, list, bool)) for item in items):
        raise _NotAnalysable("advanced (tensor) indexing of a feature map")
    n_consumed = sum(1 for item in items if item is not None and item is not Ellipsis)
    expanded = []
    for item in items:
        if item is Ellipsis:
            expanded.extend([slice(None)] * (container.dim() - n_consumed))
        else:
            expanded.append(item)
    expanded.extend([slice(None)] * (container.dim() - sum(i is not None for i in expanded)))
    size, stride, start = list(src.rf.size), list(src.rf.stride), list(src.rf.start)
    in_dim, out_dim, new_dims = 0, 0, [None, None]
    for item in expanded:
        if item is None:
            out_dim += 1
            continue
        axis = src.dims.index(in_dim) if in_dim in src.dims else None
        if isinstance(item, int):
            if axis is not None:
                raise _NotAnalysable("integer indexing of a spatial axis")
        else:
            first, _, step = item.indices(container.shape[in_dim])
            if axis is not None:
                start[axis] += first * stride[axis]
                stride[axis] *= step
                new_dims[axis] = out_dim
            out_dim += 1
        in_dim += 1
    rf = ReceptiveField(tuple(size), tuple(stride), tuple(start))
    return _Field(rf, tuple(new_dims), _shape(call.value))


def _linear(call: _Call) -> _Field:
    """Linear map over the last axis: global along that axis if it is spatial."""
    src = call.src
    if src.dims is None:
        return _Field(src.rf, None, _shape(call.value))
    last = len(src.shape) - 1
    axes = [axis for axis in range(2) if src.dims[axis] == last]
    rf = _globalise(src.rf, _spatial_lengths(src), axes)
    return _Field(rf, src.dims, _shape(call.value))


def _adaptive_pool(call: _Call) -> _Field:
    """Exact when the input length is a multiple of the output length, else global."""
    src = call.src
    _require_nchw(src, call.describe())
    out_lengths = tuple(call.value.shape[-2:]) if isinstance(call.value, torch.Tensor) else (
        tuple(_tensors_in(call.value)[0].shape[-2:])
    )
    in_lengths = _spatial_lengths(src)
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
    return _Field(ReceptiveField(tuple(size), tuple(stride), rf.start), src.dims, _shape(call.value))


def _pad(call: _Call, pad, mode: str) -> _Field:
    src = call.src
    if src.dims is None:
        return _Field(src.rf, None, _shape(call.value))
    ndim = len(src.shape)
    start = list(src.rf.start)
    for j in range(len(pad) // 2):
        dim = ndim - 1 - j
        if dim in src.dims:
            axis = src.dims.index(dim)
            if mode == "circular":
                raise _NotAnalysable("circular padding wraps the field around the image")
            start[axis] -= int(pad[2 * j]) * src.rf.stride[axis]
    rf = ReceptiveField(src.rf.size, src.rf.stride, tuple(start))
    return _Field(rf, src.dims, _shape(call.value))


# --- functional calls --------------------------------------------------------------------


def _f_conv2d(call: _Call) -> _Field:
    weight = call.arg(1, "weight")
    kernel = tuple(weight.shape[-2:])
    dilation = _pair(call.arg(5, "dilation", 1))
    padding = _conv_padding(call.arg(4, "padding", 0), kernel, dilation)
    return _window(call.src, call.value, kernel, _pair(call.arg(3, "stride", 1)), padding, dilation,
                   call.describe())


def _f_pool2d(call: _Call, has_dilation: bool) -> _Field:
    kernel = _pair(call.arg(1, "kernel_size"))
    stride = call.arg(2, "stride")
    stride = kernel if stride is None or stride == [] or stride == () else _pair(stride)
    padding = _pair(call.arg(3, "padding", 0))
    dilation = _pair(call.arg(4, "dilation", 1)) if has_dilation else (1, 1)
    return _window(call.src, call.value, kernel, stride, padding, dilation, call.describe())


def _f_lp_pool2d(call: _Call) -> _Field:
    # lp_pool2d(input, norm_type, kernel_size, stride=None, ceil_mode=False)
    kernel = _pair(call.arg(2, "kernel_size"))
    stride = call.arg(3, "stride")
    stride = kernel if stride is None else _pair(stride)
    return _window(call.src, call.value, kernel, stride, (0, 0), (1, 1), call.describe())


def _f_pad(call: _Call) -> _Field:
    return _pad(call, call.arg(1, "pad"), call.arg(2, "mode", "constant"))


def _f_softmax(call: _Call) -> _Field:
    src = call.src
    dim = call.arg(1, "dim")
    if src.dims is not None and dim is not None and dim % len(src.shape) in src.dims:
        axes = [src.dims.index(dim % len(src.shape))]
        return _Field(_globalise(src.rf, _spatial_lengths(src), axes), src.dims, _shape(call.value))
    return _pointwise(call)


_POINTWISE_FUNCTIONS = {
    getattr(module, name)
    for module, names in (
        (operator, "add sub mul truediv floordiv mod pow neg pos abs iadd isub imul itruediv "
                   "and_ or_ xor invert eq ne lt le gt ge"),
        (torch, "add sub subtract mul multiply div divide true_divide neg abs exp log sqrt rsqrt "
                "pow sigmoid tanh relu relu_ clamp clip clamp_min clamp_max where maximum minimum "
                "erf sin cos square reciprocal sign floor ceil round lerp addcmul addcdiv dropout "
                "batch_norm group_norm layer_norm instance_norm selu celu rrelu hardshrink "
                "logit nan_to_num sigmoid_ tanh_"),
        (F, "relu relu_ relu6 elu elu_ selu celu leaky_relu leaky_relu_ prelu rrelu glu gelu silu "
            "mish hardswish hardsigmoid hardtanh hardtanh_ hardshrink softplus softsign softshrink "
            "tanhshrink threshold logsigmoid sigmoid tanh dropout dropout1d dropout2d dropout3d "
            "alpha_dropout feature_alpha_dropout batch_norm instance_norm group_norm layer_norm "
            "local_response_norm normalize"),
    )
    for name in names.split()
    if hasattr(module, name)
}

_FUNCTION_RULES = {
    F.conv2d: _f_conv2d,
    torch.conv2d: _f_conv2d,
    F.max_pool2d: lambda call: _f_pool2d(call, has_dilation=True),
    torch.max_pool2d: lambda call: _f_pool2d(call, has_dilation=True),
    F.avg_pool2d: lambda call: _f_pool2d(call, has_dilation=False),
    F.lp_pool2d: _f_lp_pool2d,
    F.adaptive_avg_pool2d: _adaptive_pool,
    F.adaptive_max_pool2d: _adaptive_pool,
    F.pad: _f_pad,
    F.linear: _linear,
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
    torch.std: _reduce,
    torch.var: _reduce,
    torch.logsumexp: _reduce,
    torch.cat: lambda call: _concatenate(call, stack=False),
    torch.concat: lambda call: _concatenate(call, stack=False),
    torch.stack: lambda call: _concatenate(call, stack=True),
    torch.chunk: _split,
    torch.split: _split,
    operator.getitem: _getitem,
}
if hasattr(F, "max_pool2d_with_indices"):
    _FUNCTION_RULES[F.max_pool2d_with_indices] = lambda call: _f_pool2d(call, has_dilation=True)
for _fn in _POINTWISE_FUNCTIONS:
    _FUNCTION_RULES.setdefault(_fn, _pointwise)

_POINTWISE_METHODS = set(
    "add add_ sub sub_ mul mul_ div div_ truediv relu relu_ sigmoid sigmoid_ tanh tanh_ exp log "
    "sqrt rsqrt pow abs neg clamp clamp_ clamp_min clamp_min_ clamp_max clip contiguous clone detach "
    "to float double half bfloat16 type type_as cpu cuda expand expand_as masked_fill sign floor "
    "ceil round square reciprocal where maximum minimum".split()
)
_METHOD_RULES = {
    "view": _reshape,
    "reshape": _reshape,
    "flatten": _reshape,
    "squeeze": _reshape,
    "unsqueeze": _reshape,
    "unflatten": _reshape,
    "view_as": _reshape,
    "reshape_as": _reshape,
    "permute": _permute,
    "transpose": _transpose,
    "swapaxes": _transpose,
    "mean": _reduce,
    "sum": _reduce,
    "amax": _reduce,
    "amin": _reduce,
    "max": _reduce,
    "min": _reduce,
    "std": _reduce,
    "var": _reduce,
    "logsumexp": _reduce,
    "softmax": _f_softmax,
    "log_softmax": _f_softmax,
    "chunk": _split,
    "split": _split,
    **{name: _pointwise for name in _POINTWISE_METHODS},
}


# --- module calls ------------------------------------------------------------------------

_POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Hardshrink, nn.Sigmoid,
    nn.Tanh, nn.Softplus, nn.Softsign, nn.Softshrink, nn.Tanhshrink, nn.Threshold, nn.LogSigmoid,
    nn.GLU, nn.Softmax2d, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
    nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm,
    nn.CrossMapLRN2d, nn.ChannelShuffle,
)


def _module_rule(call: _Call) -> _Field:
    m = call.module
    if isinstance(m, nn.Conv2d):
        if m.padding_mode == "circular":
            raise _NotAnalysable(f"{call.describe()} uses circular padding")
        padding = _conv_padding(m.padding, m.kernel_size, m.dilation)
        return _window(call.src, call.value, m.kernel_size, m.stride, padding, m.dilation,
                       call.describe())
    if isinstance(m, nn.MaxPool2d):
        stride = m.stride if m.stride is not None else m.kernel_size
        return _window(call.src, call.value, _pair(m.kernel_size), _pair(stride), _pair(m.padding),
                       _pair(m.dilation), call.describe())
    if isinstance(m, nn.AvgPool2d):
        stride = m.stride if m.stride is not None else m.kernel_size
        return _window(call.src, call.value, _pair(m.kernel_size), _pair(stride), _pair(m.padding),
                       (1, 1), call.describe())
    if isinstance(m, nn.LPPool2d):
        stride = m.stride if m.stride is not None else m.kernel_size
        return _window(call.src, call.value, _pair(m.kernel_size), _pair(stride), (0, 0), (1, 1),
                       call.describe())
    if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return _adaptive_pool(call)
    if isinstance(m, (nn.Flatten, nn.Unflatten)):
        return _reshape(call)
    if isinstance(m, nn.Linear):
        return _linear(call)
    if isinstance(m, (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d)):
        return _pad(call, m.padding, "constant")
    if isinstance(m, (nn.Softmax, nn.LogSoftmax, nn.Softmin)):
        return _f_softmax(_Call(call.node, (call.args[0], m.dim), {}, call.value, call._fields))
    if isinstance(m, _POINTWISE_MODULES):
        return _pointwise(call)
    return _same_shape_or_unknown(call)


class _FieldInterpreter(torch.fx.Interpreter):
    """Runs the traced graph on a blank image and propagates a _Field per node."""

    def __init__(self, gm: torch.fx.GraphModule):
        super().__init__(gm)
        self.fields: dict[torch.fx.Node, _Field | None] = {}
        self._seen_input = False

    def call_module(self, target, args, kwargs):
        # call forward directly: the user's hooks must not fire
        return self.fetch_attr(target).forward(*args, **kwargs)

    def run_node(self, n: torch.fx.Node):
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        value = getattr(self, n.op)(n.target, args, kwargs)
        try:
            self.fields[n] = self._propagate(n, args, kwargs, value)
        except _NotAnalysable:
            raise
        except Exception as error:  # an op our rules misread: measure instead
            raise _NotAnalysable(
                f"cannot propagate the field through {n.op} {n.target!r}: "
                f"{type(error).__name__}: {error}"
            ) from error
        return value

    def _propagate(self, n, args, kwargs, value) -> _Field | None:
        if n.op == "placeholder":
            if self._seen_input or not isinstance(value, torch.Tensor):
                return None
            self._seen_input = True
            ndim = value.dim()
            return _Field(_IDENTITY_FIELD, (ndim - 2, ndim - 1), tuple(value.shape))
        if n.op in ("get_attr", "output") or not _tensors_in(value):
            return None
        module = self.fetch_attr(n.target) if n.op == "call_module" else None
        call = _Call(n, args, kwargs, value, self.fields, module)
        if not call.inputs:
            return None  # does not depend on the image (constants, parameters)
        if n.op == "call_module":
            return _module_rule(call)
        if n.op == "call_function":
            rule = _FUNCTION_RULES.get(n.target)
        else:
            rule = _METHOD_RULES.get(n.target)
        return rule(call) if rule is not None else _same_shape_or_unknown(call)


class _Restored:
    """Context: model in eval mode, training flags restored afterwards."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        for m, flag in self.flags:
            m.training = flag
        return False


def _trace(model: nn.Module) -> tuple[torch.fx.GraphModule, dict[str, torch.fx.Node]]:
    tracer = _RecordingTracer()
    try:
        graph = tracer.trace(model)
    except Exception as error:  # any tracing failure means "measure instead"
        raise _NotAnalysable(
            f"torch.fx cannot trace {type(model).__name__}: {type(error).__name__}: {error}"
        ) from error
    gm = torch.fx.GraphModule(tracer.root, graph)
    outputs = dict(tracer.module_outputs)
    output_node = next(n for n in graph.nodes if n.op == "output")
    root_out = _first_proxy_node(output_node.args[0])
    if root_out is not None:
        outputs[""] = root_out
    return gm, outputs


def analytic_receptive_fields(
    model: nn.Module,
    layer_names: Sequence[str],
    input_size: tuple[int, int],
    in_channels: int = 3,
) -> dict[str, ReceptiveField]:
    """Receptive field of each layer by tracing ``model`` with torch.fx.

    model:       any nn.Module taking one (1, in_channels, h, w) image batch.
    layer_names: module names from ``model.named_modules()``; a container (e.g.
                 ``"layer4"``) stands for its output.
    input_size:  (h, w) of the model input in pixels; needed by global / adaptive pooling.

    Raises ValueError for unknown layer names and RuntimeError when the model cannot be
    traced or uses an op without a known rule (use :func:`receptive_fields` to fall back
    to measurement). Runs one forward pass of a blank image in eval mode; the model's
    modes, weights and hooks are left as they were (hooks do not fire).
    """
    names = _as_names(layer_names)
    _check_layer_names(model, names)
    height, width = _check_input_size(input_size)
    gm, module_outputs = _trace(model)
    unused = [name for name in names if name not in module_outputs]
    if unused:
        raise ValueError(f"layer(s) {unused} of {type(model).__name__} are not called in forward()")
    device, dtype = _model_tensor_kind(model)
    image = torch.zeros(1, in_channels, height, width, device=device, dtype=dtype)
    interpreter = _FieldInterpreter(gm)
    with _Restored(model), torch.no_grad():
        interpreter.run(image)
    result = {}
    for name in names:
        field = interpreter.fields.get(module_outputs[name])
        if field is None:
            raise ValueError(f"the output of layer {name!r} does not depend on the input image")
        result[name] = field.rf
    return result


# ----------------------------------------------------------------------------------------
# Measurement by gradient through a linearised copy
# ----------------------------------------------------------------------------------------

_HOOK_DICTS = (
    "_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called", "_backward_hooks",
    "_backward_pre_hooks",
)

_IDENTITY_TORCH_FUNCTIONS = {
    getattr(module, name)
    for module, names in (
        (F, "relu relu_ relu6 elu elu_ selu celu leaky_relu leaky_relu_ prelu rrelu gelu silu mish "
            "hardswish hardsigmoid hardtanh hardtanh_ softplus threshold threshold_ sigmoid tanh "
            "dropout dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout batch_norm "
            "instance_norm group_norm layer_norm local_response_norm"),
        (torch, "relu relu_ sigmoid sigmoid_ tanh tanh_ clamp clamp_ clip clamp_min clamp_max "
                "batch_norm group_norm layer_norm instance_norm dropout selu celu rrelu"),
        (torch.Tensor, "relu relu_ sigmoid sigmoid_ tanh tanh_ clamp clamp_ clip clip_ clamp_min "
                       "clamp_min_ clamp_max clamp_max_"),
    )
    for name in names.split()
    if hasattr(module, name)
}


def _kwarg(args, kwargs, index: int, name: str, default=None):
    return args[index] if index < len(args) else kwargs.get(name, default)


def _mean_pool(x, kernel, stride, padding, dilation, ceil_mode):
    kernel = _pair(kernel)
    stride = kernel if stride is None or stride == [] or stride == () else _pair(stride)
    padding, dilation = _pair(padding), _pair(dilation)
    if dilation == (1, 1):
        return F.avg_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode, count_include_pad=True)
    channels = x.shape[-3]
    weight = x.new_full((channels, 1, *kernel), 1.0 / (kernel[0] * kernel[1]))
    return F.conv2d(x, weight, None, stride, padding, dilation, groups=channels)


class _Linearise(TorchFunctionMode):
    """Positive linear network: max -> mean pooling, activations and norms -> identity."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _IDENTITY_TORCH_FUNCTIONS:
            return args[0] if args else kwargs["input"]
        if func is F.max_pool2d or func is torch.max_pool2d:
            x = args[0]
            pooled = _mean_pool(
                x,
                _kwarg(args, kwargs, 1, "kernel_size"),
                _kwarg(args, kwargs, 2, "stride"),
                _kwarg(args, kwargs, 3, "padding", 0),
                _kwarg(args, kwargs, 4, "dilation", 1),
                bool(_kwarg(args, kwargs, 5, "ceil_mode", False)),
            )
            if _kwarg(args, kwargs, 6, "return_indices", False):
                return pooled, func(*args, **kwargs)[1]
            return pooled
        if func is F.adaptive_max_pool2d:
            pooled = F.adaptive_avg_pool2d(args[0], _kwarg(args, kwargs, 1, "output_size"))
            if _kwarg(args, kwargs, 2, "return_indices", False):
                return pooled, func(*args, **kwargs)[1]
            return pooled
        if func in (torch.amax, torch.Tensor.amax):
            dim = _kwarg(args, kwargs, 1, "dim", ())
            return torch.mean(args[0], dim=dim if dim != () else None,
                              keepdim=bool(_kwarg(args, kwargs, 2, "keepdim", False)))
        return func(*args, **kwargs)


def _linearised_copy(model: nn.Module) -> nn.Module:
    """float64 copy with positive averaging weights, zero biases and no hooks; eval mode."""
    memo: dict[int, Any] = {}
    for m in model.modules():
        for attr in _HOOK_DICTS:
            hooks = m.__dict__.get(attr)
            if hooks is not None:
                memo[id(hooks)] = type(hooks)()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in memo:
            continue
        if p.dim() >= 2:
            fill = 1.0 / max(1, p[0].numel())
        elif name.rsplit(".", 1)[-1].endswith("bias"):
            fill = 0.0
        else:
            fill = 1.0
        # a broadcast view: no memory per weight, even for large linear layers
        constant = torch.tensor(fill, dtype=torch.float64, device=p.device).expand(p.shape)
        memo[id(p)] = nn.Parameter(constant, requires_grad=False)
    linear = copy.deepcopy(model, memo)
    linear.double().eval()
    return linear


class _StopForward(Exception):
    pass


def _capture_output(linear: nn.Module, layer_name: str, images: torch.Tensor) -> torch.Tensor:
    """Run ``linear`` on images until ``layer_name`` has produced its output; return it."""
    module = dict(linear.named_modules())[layer_name]
    captured = []

    def hook(_module, _inputs, output):
        tensors = _tensors_in(output)
        if tensors:
            captured.append(tensors[0])
            raise _StopForward

    handle = module.register_forward_hook(hook)
    try:
        with _Linearise():
            linear(images)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise ValueError(f"layer {layer_name!r} was not called in forward()")
    return captured[0]


def _feature_lengths(output: torch.Tensor) -> tuple[int, int]:
    return (output.shape[-2], output.shape[-1]) if output.dim() >= 4 else (1, 1)


def _measure_boxes(
    linear: nn.Module, layer_name: str, input_size: tuple[int, int], in_channels: int,
    ys: Sequence[int] | None, xs: Sequence[int] | None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Clipped boxes (n, 4) of positions (ys[i], xs[i]); None: the centre only.

    Each position gets its own image in one batch (the linearised network treats batch
    items independently).
    """
    height, width = input_size
    device = next((t.device for t in linear.parameters()), torch.device("cpu"))
    if ys is None:
        with torch.no_grad():
            probe = _capture_output(
                linear, layer_name,
                torch.ones(1, in_channels, height, width, dtype=torch.float64, device=device),
            )
        lengths = _feature_lengths(probe)
        ys, xs = [lengths[0] // 2], [lengths[1] // 2]
    ys, xs = [int(y) for y in ys], [int(x) for x in xs]
    images = torch.ones(len(ys), in_channels, height, width, dtype=torch.float64, device=device,
                        requires_grad=True)
    output = _capture_output(linear, layer_name, images)
    lengths = _feature_lengths(output)
    for y, x in zip(ys, xs):
        if not (0 <= y < lengths[0] and 0 <= x < lengths[1]):
            raise ValueError(
                f"position (y={y}, x={x}) is outside the {lengths[0]}x{lengths[1]} feature map of "
                f"layer {layer_name!r} at input size {height}x{width}"
            )
    if output.dim() >= 4:
        picked = torch.stack([output[i, ..., y, x].sum() for i, (y, x) in enumerate(zip(ys, xs))])
    else:
        picked = output.reshape(output.shape[0], -1).sum(dim=1)
    (grad,) = torch.autograd.grad(picked.sum(), images)
    influence = (grad != 0).any(dim=1)  # (n, h, w)
    boxes = np.zeros((len(ys), 4), dtype=np.int64)
    for i in range(len(ys)):
        rows = torch.nonzero(influence[i].any(dim=1)).flatten()
        cols = torch.nonzero(influence[i].any(dim=0)).flatten()
        if rows.numel() == 0:
            raise RuntimeError(
                f"no input pixel influences position ({ys[i]}, {xs[i]}) of layer {layer_name!r} "
                "(the gradient vanished)"
            )
        boxes[i] = [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]
    return boxes, lengths


def measured_receptive_field(
    model: nn.Module,
    layer_name: str,
    input_size: tuple[int, int],
    in_channels: int = 3,
    position: tuple[int, int] | None = None,
) -> tuple[int, int, int, int]:
    """Empirical field of one feature position, by gradient; (x0, y0, x1, y1) clipped to the input.

    position: (y, x) in the layer's feature map; None: the centre (h // 2, w // 2).
    Works on a linearised float64 copy of the model; the model itself is untouched.
    """
    _check_layer_names(model, [layer_name])
    input_size = _check_input_size(input_size)
    linear = _linearised_copy(model)
    ys, xs = (None, None) if position is None else ([position[0]], [position[1]])
    boxes, _ = _measure_boxes(linear, layer_name, input_size, in_channels, ys, xs)
    return tuple(int(v) for v in boxes[0])


def _probe_positions(length: int) -> list[int]:
    centre = length // 2
    wanted = {0, 1, 2, centre - 1, centre, centre + 1, length - 3, length - 2, length - 1}
    return sorted(p for p in wanted if 0 <= p < length)


def _axis_stride(positions, edges, clipped) -> int | None:
    """Stride from two unclipped edges of the same kind at different positions."""
    known = {p: e for p, e, c in zip(positions, edges, clipped) if not c}
    if len(known) < 2:
        return None
    (p, e), (q, f) = sorted(known.items())[:2]
    return (f - e) // (q - p)


def _infer_field(linear: nn.Module, layer_name: str, input_size: tuple[int, int],
                 in_channels: int) -> ReceptiveField:
    """Infer (size, stride, start) from measured boxes at a few positions.

    A left edge x0 > 0 and a right edge x1 < width are exact; clipped edges only bound the
    field. When no stride can be read at the requested size (the field is larger than the
    image), the measurement is repeated on 2x and 4x larger images if the model accepts them.
    """
    measurements = []  # (size, positions per axis, boxes)
    strides: list[int | None] = [None, None]
    lengths0 = None
    for scale in (1, 2, 4):
        size = (input_size[0] * scale, input_size[1] * scale)
        try:
            with torch.no_grad():
                probe = _capture_output(
                    linear, layer_name,
                    torch.ones(1, in_channels, *size, dtype=torch.float64,
                               device=next((t.device for t in linear.parameters()), "cpu")),
                )
        except ValueError:  # the layer is not called: same at every size
            raise
        except Exception:  # a larger image does not fit the model (e.g. a linear layer)
            if scale == 1:
                raise
            break
        lengths = _feature_lengths(probe)
        if lengths0 is None:
            lengths0 = lengths
        pos_y, pos_x = _probe_positions(lengths[0]), _probe_positions(lengths[1])
        n = max(len(pos_y), len(pos_x))
        ys = pos_y + [pos_y[-1]] * (n - len(pos_y))
        xs = pos_x + [pos_x[-1]] * (n - len(pos_x))
        boxes, _ = _measure_boxes(linear, layer_name, size, in_channels, ys, xs)
        measurements.append((size, (ys, xs), boxes))
        for axis, positions in ((0, ys), (1, xs)):
            if strides[axis] is not None or lengths[axis] == 1:
                continue
            lo = boxes[:, 1 - axis]
            hi = boxes[:, 3 - axis]
            stride = _axis_stride(positions, lo, lo <= 0)
            if stride is None:
                stride = _axis_stride(positions, hi, hi >= size[axis])
            strides[axis] = stride
        if all(s is not None or lengths0[a] == 1 for a, s in enumerate(strides)):
            break
    resolved = all(s is not None or lengths0[a] == 1 for a, s in enumerate(strides))
    for axis in range(2):
        if strides[axis] is None:
            if lengths0[axis] > 1:
                warnings.warn(
                    f"receptive field of {layer_name!r}: stride along axis {'yx'[axis]} could not be "
                    "measured; using input size / feature size",
                    stacklevel=3,
                )
                strides[axis] = int(round(input_size[axis] / lengths0[axis]))
            else:
                strides[axis] = 0
    if not resolved:
        measurements = measurements[:1]  # heuristic stride: bound by the requested size only
    start, end = [None, None], [None, None]
    for _, (ys, xs), boxes in measurements:
        for axis, positions in ((0, ys), (1, xs)):
            offsets = np.asarray(positions) * strides[axis]
            lo = int(np.min(boxes[:, 1 - axis] - offsets))
            hi = int(np.max(boxes[:, 3 - axis] - offsets))
            start[axis] = lo if start[axis] is None else min(start[axis], lo)
            end[axis] = hi if end[axis] is None else max(end[axis], hi)
    size = (end[0] - start[0], end[1] - start[1])
    return ReceptiveField(size=size, stride=tuple(strides), start=tuple(start))


def receptive_fields(
    model: nn.Module,
    layer_names: Sequence[str],
    input_size: tuple[int, int],
    in_channels: int = 3,
) -> dict[str, ReceptiveField]:
    """Receptive field of each layer: analytic, or measured when the model cannot be traced.

    Same arguments as :func:`analytic_receptive_fields`. The fallback (with a warning)
    measures gradient boxes at a few positions of each layer and infers size, stride and
    start from them. The model is left unchanged.
    """
    names = _as_names(layer_names)
    _check_layer_names(model, names)
    input_size = _check_input_size(input_size)
    try:
        return analytic_receptive_fields(model, names, input_size, in_channels)
    except _NotAnalysable as reason:
        warnings.warn(
            f"receptive fields of {type(model).__name__} measured by gradient instead: {reason}",
            stacklevel=2,
        )
    linear = _linearised_copy(model)
    return {name: _infer_field(linear, name, input_size, in_channels) for name in names}
