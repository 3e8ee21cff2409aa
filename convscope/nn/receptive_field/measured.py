"""Measured receptive fields: backpropagate from feature positions through a linearised copy.

The copy is float64 with positive averaging weights and zero biases; max pooling becomes
average pooling, activations and normalisation become the identity (:class:`_Linearise`).
The gradient of one feature position with respect to an all-ones image is then nonzero
exactly on the pixels that can influence it; their bounding box is the measured field,
clipped to the input. :func:`infer_field` reads (size, stride, start) from such boxes.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from convscope.nn.hooks import forward_hooks
from convscope.nn.receptive_field.analytic import check_layer_names_or_root
from convscope.nn.receptive_field.geometry import ReceptiveField, check_input_size, spatial_pair
from convscope.nn.receptive_field.values import tensors_in

__all__ = ["linearised_copy", "infer_field", "measured_receptive_field"]

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

_MAX_POOLS = (F.max_pool2d, F.max_pool2d_with_indices, torch.max_pool2d)
_ADAPTIVE_MAX_POOLS = (F.adaptive_max_pool2d, F.adaptive_max_pool2d_with_indices)


def _kwarg(args, kwargs, index: int, name: str, default=None):
    return args[index] if index < len(args) else kwargs.get(name, default)


def _mean_pool(x, kernel, stride, padding, dilation, ceil_mode):
    """Average pooling with the geometry of a max pool (dilation through a grouped conv)."""
    kernel = spatial_pair(kernel)
    stride = kernel if stride is None or stride == [] or stride == () else spatial_pair(stride)
    padding, dilation = spatial_pair(padding), spatial_pair(dilation)
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
        if func in _MAX_POOLS:
            pooled = _mean_pool(
                args[0],
                _kwarg(args, kwargs, 1, "kernel_size"),
                _kwarg(args, kwargs, 2, "stride"),
                _kwarg(args, kwargs, 3, "padding", 0),
                _kwarg(args, kwargs, 4, "dilation", 1),
                bool(_kwarg(args, kwargs, 5, "ceil_mode", False)),
            )
            with_indices = bool(_kwarg(args, kwargs, 6, "return_indices", False))
            if func is F.max_pool2d_with_indices or with_indices:
                return pooled, func(*args, **kwargs)[1]
            return pooled
        if func in _ADAPTIVE_MAX_POOLS:
            pooled = F.adaptive_avg_pool2d(args[0], _kwarg(args, kwargs, 1, "output_size"))
            if (func is F.adaptive_max_pool2d_with_indices
                    or _kwarg(args, kwargs, 2, "return_indices", False)):
                return pooled, func(*args, **kwargs)[1]
            return pooled
        if func in (torch.amax, torch.Tensor.amax):
            dim = _kwarg(args, kwargs, 1, "dim", ())
            return torch.mean(args[0], dim=dim if dim != () else None,
                              keepdim=bool(_kwarg(args, kwargs, 2, "keepdim", False)))
        return func(*args, **kwargs)


def linearised_copy(model: nn.Module) -> nn.Module:
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
    """Raised by the capture hook: the rest of the forward pass is not needed."""


def _capture_output(linear: nn.Module, layer_name: str, images: torch.Tensor) -> torch.Tensor:
    """Run ``linear`` on images (n, C, h, w) until ``layer_name`` has produced its output.

    ``""`` is the model's own output. Returns the first tensor of the layer's output.
    """
    if layer_name == "":
        with _Linearise():
            tensors = tensors_in(linear(images))
        if not tensors:
            raise ValueError("the model's output holds no tensor")
        return tensors[0]
    captured = []

    def stop_after(_module, _inputs, output):
        tensors = tensors_in(output)
        if tensors:
            captured.append(tensors[0])
            raise _StopForward

    try:
        with forward_hooks(linear, {layer_name: stop_after}), _Linearise():
            linear(images)
    except _StopForward:
        pass
    if not captured:
        raise ValueError(f"layer {layer_name!r} was not called in forward()")
    return captured[0]


def _feature_lengths(output: torch.Tensor) -> tuple[int, int]:
    """(h, w) positions of a layer output (n, C, h, w); (1, 1) for flat outputs."""
    return (output.shape[-2], output.shape[-1]) if output.dim() >= 4 else (1, 1)


def _ones(n: int, in_channels: int, size: tuple[int, int], linear: nn.Module,
          requires_grad: bool = False) -> torch.Tensor:
    """All-ones float64 image batch (n, in_channels, h, w) on the copy's device."""
    device = next((t.device for t in linear.parameters()), torch.device("cpu"))
    return torch.ones(n, in_channels, *size, dtype=torch.float64, device=device,
                      requires_grad=requires_grad)


def _centre(linear: nn.Module, layer_name: str, input_size, in_channels) -> tuple[list, list]:
    """([y], [x]) of the centre position of the layer's feature map."""
    with torch.no_grad():
        probe = _capture_output(linear, layer_name, _ones(1, in_channels, input_size, linear))
    lengths = _feature_lengths(probe)
    return [lengths[0] // 2], [lengths[1] // 2]


def _check_positions(ys, xs, lengths, layer_name: str, input_size) -> None:
    for y, x in zip(ys, xs):
        if not (0 <= y < lengths[0] and 0 <= x < lengths[1]):
            raise ValueError(
                f"position (y={y}, x={x}) is outside the {lengths[0]}x{lengths[1]} feature map of "
                f"layer {layer_name!r} at input size {input_size[0]}x{input_size[1]}"
            )


def _influence_boxes(influence: torch.Tensor, ys, xs, layer_name: str) -> np.ndarray:
    """Bounding boxes (n, 4) int64 (x0, y0, x1, y1) of the True pixels of (n, h, w)."""
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
    return boxes


def _measure_boxes(
    linear: nn.Module, layer_name: str, input_size: tuple[int, int], in_channels: int,
    ys: Sequence[int] | None, xs: Sequence[int] | None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Clipped boxes (n, 4) of positions (ys[i], xs[i]) and the map's (h, w); None: the centre.

    Each position gets its own image in one batch (the linearised network treats batch
    items independently).
    """
    if ys is None:
        ys, xs = _centre(linear, layer_name, input_size, in_channels)
    ys, xs = [int(y) for y in ys], [int(x) for x in xs]
    images = _ones(len(ys), in_channels, input_size, linear, requires_grad=True)
    output = _capture_output(linear, layer_name, images)
    lengths = _feature_lengths(output)
    _check_positions(ys, xs, lengths, layer_name, input_size)
    if output.dim() >= 4:
        picked = torch.stack([output[i, ..., y, x].sum() for i, (y, x) in enumerate(zip(ys, xs))])
    else:
        picked = output.reshape(output.shape[0], -1).sum(dim=1)
    (grad,) = torch.autograd.grad(picked.sum(), images)
    influence = (grad != 0).any(dim=1)  # (n, h, w)
    return _influence_boxes(influence, ys, xs, layer_name), lengths


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
    check_layer_names_or_root(model, [layer_name])
    input_size = check_input_size(input_size)
    linear = linearised_copy(model)
    ys, xs = (None, None) if position is None else ([position[0]], [position[1]])
    boxes, _ = _measure_boxes(linear, layer_name, input_size, in_channels, ys, xs)
    return tuple(int(v) for v in boxes[0])


# --- (size, stride, start) from measured boxes ---------------------------------------------


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


def _probe_grid(lengths: tuple[int, int]) -> tuple[list[int], list[int]]:
    """Equal-length ys, xs lists covering the probe positions of each axis."""
    pos_y, pos_x = _probe_positions(lengths[0]), _probe_positions(lengths[1])
    n = max(len(pos_y), len(pos_x))
    return pos_y + [pos_y[-1]] * (n - len(pos_y)), pos_x + [pos_x[-1]] * (n - len(pos_x))


def _read_strides(strides: list, boxes: np.ndarray, ys, xs, lengths, size) -> None:
    """Fill the still unknown entries of ``strides`` (per axis) from unclipped box edges."""
    for axis, positions in ((0, ys), (1, xs)):
        if strides[axis] is not None or lengths[axis] == 1:
            continue
        lo, hi = boxes[:, 1 - axis], boxes[:, 3 - axis]
        stride = _axis_stride(positions, lo, lo <= 0)
        if stride is None:
            stride = _axis_stride(positions, hi, hi >= size[axis])
        strides[axis] = stride


def _measure_scales(linear, layer_name, input_size, in_channels):
    """Boxes at probe positions on 1x, 2x, 4x images until both strides are read.

    Returns (measurements [(size, (ys, xs), boxes)], strides [y, x] (None: unread),
    feature-map lengths at the requested size).
    """
    measurements, strides, lengths0 = [], [None, None], None
    for scale in (1, 2, 4):
        size = (input_size[0] * scale, input_size[1] * scale)
        try:
            with torch.no_grad():
                probe = _capture_output(linear, layer_name, _ones(1, in_channels, size, linear))
        except ValueError:  # the layer is not called: same at every size
            raise
        except Exception:  # a larger image does not fit the model (e.g. a linear layer)
            if scale == 1:
                raise
            break
        lengths = _feature_lengths(probe)
        lengths0 = lengths0 or lengths
        ys, xs = _probe_grid(lengths)
        boxes, _ = _measure_boxes(linear, layer_name, size, in_channels, ys, xs)
        measurements.append((size, (ys, xs), boxes))
        _read_strides(strides, boxes, ys, xs, lengths, size)
        if all(s is not None or lengths0[a] == 1 for a, s in enumerate(strides)):
            break
    return measurements, strides, lengths0


def _guess_missing_strides(strides: list, lengths0, input_size, layer_name: str) -> bool:
    """Replace unread strides by input / feature size (with a warning), 0 for length-1 axes.

    Returns True if every stride was read from the measurement.
    """
    resolved = all(s is not None or lengths0[a] == 1 for a, s in enumerate(strides))
    for axis in range(2):
        if strides[axis] is not None:
            continue
        if lengths0[axis] > 1:
            warnings.warn(
                f"receptive field of {layer_name!r}: stride along axis {'yx'[axis]} could not be "
                "measured; using input size / feature size",
                stacklevel=4,
            )
            strides[axis] = int(round(input_size[axis] / lengths0[axis]))
        else:
            strides[axis] = 0
    return resolved


def _extent(measurements, strides) -> tuple[list[int], list[int]]:
    """Smallest start and largest end (per axis) of the boxes moved back to position 0."""
    start, end = [None, None], [None, None]
    for _, (ys, xs), boxes in measurements:
        for axis, positions in ((0, ys), (1, xs)):
            offsets = np.asarray(positions) * strides[axis]
            lo = int(np.min(boxes[:, 1 - axis] - offsets))
            hi = int(np.max(boxes[:, 3 - axis] - offsets))
            start[axis] = lo if start[axis] is None else min(start[axis], lo)
            end[axis] = hi if end[axis] is None else max(end[axis], hi)
    return start, end


def infer_field(linear: nn.Module, layer_name: str, input_size: tuple[int, int],
                in_channels: int) -> ReceptiveField:
    """Infer (size, stride, start) of a layer from measured boxes at a few positions.

    linear: a :func:`linearised_copy` of the model. A left edge x0 > 0 and a right edge
    x1 < width are exact; clipped edges only bound the field. When no stride can be read at
    the requested size (the field is larger than the image), the measurement is repeated
    on 2x and 4x larger images if the model accepts them.
    """
    measurements, strides, lengths0 = _measure_scales(linear, layer_name, input_size, in_channels)
    if not _guess_missing_strides(strides, lengths0, input_size, layer_name):
        measurements = measurements[:1]  # heuristic stride: bound by the requested size only
    start, end = _extent(measurements, strides)
    size = (end[0] - start[0], end[1] - start[1])
    return ReceptiveField(size=size, stride=tuple(strides), start=tuple(start))
