"""What the analytic route attaches to each graph value, and the view a rule gets of a call.

A :class:`FieldValue` is the receptive field of one tensor in the traced graph plus where
its spatial axes are; an :class:`OpCall` is one graph node being propagated (its concrete
arguments, its value on a blank image and the fields of its tensor inputs). The rules in
:mod:`convscope.nn.receptive_field.rules` map an ``OpCall`` to the ``FieldValue`` of its
output.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.fx

from convscope.nn.receptive_field.geometry import ReceptiveField, union_span

__all__ = [
    "NotAnalysable",
    "FieldValue",
    "OpCall",
    "tensors_in",
    "shape_of",
    "spatial_lengths",
    "require_nchw",
    "union_of",
]


class NotAnalysable(RuntimeError):
    """The model cannot be traced, or a value depends on an op whose geometry is unknown."""


class FieldValue(NamedTuple):
    """Receptive field attached to a graph value.

    rf:    the geometry.
    dims:  (h, w) tensor dimensions that are the spatial axes, or None once the spatial
           layout is gone (flatten, linear): then rf covers the whole input.
    shape: tensor shape of the value (None for a tuple of tensors).
    """

    rf: ReceptiveField
    dims: tuple[int, int] | None
    shape: tuple[int, ...] | None


def tensors_in(value) -> list[torch.Tensor]:
    """The tensors of a value: itself, or those inside (nested) tuples and lists."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in tensors_in(item)]
    return []


def shape_of(value) -> tuple[int, ...] | None:
    """Shape of a tensor value; None for anything else (a tuple of tensors)."""
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def spatial_lengths(field: FieldValue) -> tuple[int, int]:
    """(h, w) number of positions of the value; (1, 1) without spatial axes."""
    if field.dims is None or field.shape is None:
        return 1, 1
    return field.shape[field.dims[0]], field.shape[field.dims[1]]


def require_nchw(field: FieldValue, what: str) -> None:
    """NotAnalysable unless the value's last two axes are its (h, w) axes."""
    if field.dims is None or field.shape is None:
        raise NotAnalysable(f"{what} applied to a tensor without spatial axes")
    ndim = len(field.shape)
    if field.dims != (ndim - 2, ndim - 1):
        raise NotAnalysable(f"{what} applied to a tensor whose last two axes are not (h, w)")


def union_of(fields: list[FieldValue], out_shape, out_dims) -> ReceptiveField:
    """Field of an output combining ``fields`` position by position (add, cat, mul).

    An input with length 1 along an axis where the output is longer is broadcast: it is
    the same for every output position (step 0).
    """
    if out_dims is not None and out_shape is not None:
        out_lengths = (out_shape[out_dims[0]], out_shape[out_dims[1]])
    else:
        out_lengths = (1, 1)
    size, stride, start = [], [], []
    for axis in range(2):
        spans = []
        for field in fields:
            in_length = spatial_lengths(field)[axis]
            broadcast = field.dims is None or (in_length == 1 and out_lengths[axis] > 1)
            first = field.rf.start[axis]
            step = 0 if broadcast else field.rf.stride[axis]
            spans.append((first, first + field.rf.size[axis], step))
        lo, hi, step = union_span(spans, out_lengths[axis])
        size.append(hi - lo)
        stride.append(step)
        start.append(lo)
    return ReceptiveField(tuple(size), tuple(stride), tuple(start))


class OpCall:
    """One graph node being propagated: its arguments (values) and the input fields.

    node:   the torch.fx node.
    args, kwargs: its concrete arguments (tensors of the blank-image run).
    value:  its concrete result.
    fields: the fields of every node propagated so far (None: no dependence on the image).
    module: the called module for ``call_module`` nodes.
    """

    def __init__(self, node: torch.fx.Node, args, kwargs, value, fields, module=None):
        self.node, self.args, self.kwargs, self.value = node, args, kwargs, value
        self.module = module
        self.fields = fields
        self.inputs: list[FieldValue] = [
            fields[n] for n in node.all_input_nodes if fields.get(n) is not None
        ]

    def arg(self, index: int, name: str, default: Any = None):
        """Argument by position, else by keyword, else ``default``."""
        if index < len(self.args):
            return self.args[index]
        return self.kwargs.get(name, default)

    def field_of(self, index: int, name: str | None = None) -> FieldValue | None:
        """Field of the argument at ``index`` (or keyword ``name``); None if not a traced value."""
        raw = self.node.args[index] if index < len(self.node.args) else self.node.kwargs.get(name)
        return self.fields.get(raw) if isinstance(raw, torch.fx.Node) else None

    @property
    def src(self) -> FieldValue:
        """Field of the main input (first argument, else the first traced input)."""
        field = self.field_of(0, "input")
        return field if field is not None else self.inputs[0]

    def describe(self) -> str:
        """``module 'conv' (Conv2d)`` or ``call_function 'interpolate'`` for messages."""
        if self.module is not None:
            return f"module {self.node.target!r} ({type(self.module).__name__})"
        target = self.node.target
        return f"{self.node.op} {getattr(target, '__name__', target)!r}"
