"""Rules of the analytic route for ops that keep, move, select or reduce positions.

Pointwise ops keep the field (several inputs: the union); reshapes, permutes
and transposes move the spatial axes or, when they mix them, make the field
cover what was merged; reductions over a spatial axis cover that axis;
concatenation, splitting and indexing follow the spatial axes through.
The tables that map ops to these rules are in
:mod:`convscope.nn.receptive_field.rules`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from convscope.nn.receptive_field.geometry import ReceptiveField, globalise
from convscope.nn.receptive_field.values import (
    FieldValue,
    NotAnalysable,
    OpCall,
    shape_of,
    spatial_lengths,
    tensors_in,
    union_of,
)

__all__ = ["pointwise", "unknown_op", "reshape", "permute", "transpose", "reduce", "reduce_std",
           "concatenate", "split", "getitem"]

Rule = Callable[[OpCall], FieldValue]


def _norm_dims(dims, ndim: int) -> tuple[int, ...]:
    if isinstance(dims, int):
        dims = (dims,)
    return tuple(d % ndim for d in dims)


def pointwise(call: OpCall) -> FieldValue:
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
        return pointwise(call)
    raise NotAnalysable(f"no receptive-field rule for {call.describe()}")


def reshape(call: OpCall) -> FieldValue:
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


def permute(call: OpCall) -> FieldValue:
    """permute: the spatial axes move with the permutation."""
    perm = call.args[1:] if call.node.op == "call_method" else call.arg(1, "dims")
    if len(perm) == 1 and isinstance(perm[0], (tuple, list)):
        perm = perm[0]
    return _permute_dims(call, perm)


def transpose(call: OpCall) -> FieldValue:
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
            return pointwise(call)
        keepdim = bool(call.arg(keepdim_index, "keepdim", False))
        out_shape = tuple(tensors_in(call.value)[0].shape)  # (values, indices) for max with dim
        return _reduced_field(call.src, dim, keepdim, out_shape)

    return rule


reduce = _reduce_rule(keepdim_index=2)
reduce_std = _reduce_rule(keepdim_index=3)


def concatenate(call: OpCall, stack: bool) -> FieldValue:
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


def split(call: OpCall) -> FieldValue:
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


def getitem(call: OpCall) -> FieldValue:
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
