"""The geometry shared by both routes: the field object and the window / union math.

Conventions (shared by every stage that crops patches):

- Pixel index ``i`` covers ``[i, i + 1)``.
- The field of feature position ``(y, x)`` is the pixel box ``[x0, x1) x [y0, y1)`` with
  ``x0 = start_x + x * stride_x`` and ``x1 = x0 + size_x`` (same for ``y``). ``start``
  may be negative and ``x1`` may lie beyond the input (zero padding); callers clip.
- A stride of 0 on an axis means every position sees the same box (global pooling,
  flatten, linear layers, a broadcast pooled vector as in squeeze-and-excitation).

All sizes, strides and starts are in model-input pixels, axis 0 is y (rows), axis 1 is x.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ReceptiveField",
    "IDENTITY_FIELD",
    "int_pair",
    "spatial_pair",
    "check_input_size",
    "grow_window",
    "globalise",
    "union_span",
]


def int_pair(value, what: str) -> tuple[int, int]:
    """``(a, b)`` ints from a 2-sequence; ValueError naming ``what`` otherwise."""
    values = tuple(value)
    if len(values) != 2:
        raise ValueError(f"receptive field {what} must have 2 entries (h, w), got {value!r}")
    return int(values[0]), int(values[1])


def spatial_pair(value) -> tuple[int, int]:
    """(h, w) of a torch-style size argument: an int, or a sequence (its last two entries;
    a single entry stands for both)."""
    if isinstance(value, (tuple, list)):
        if len(value) == 1:
            return int(value[0]), int(value[0])
        return int(value[-2]), int(value[-1])
    return int(value), int(value)


def check_input_size(input_size) -> tuple[int, int]:
    """``(h, w)`` of the model input from an int or a pair; both must be positive."""
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    height, width = int_pair(input_size, "input_size")
    if height < 1 or width < 1:
        raise ValueError(f"input_size must be positive (h, w), got {input_size!r}")
    return height, width


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
        size = int_pair(self.size, "size")
        stride = int_pair(self.stride, "stride")
        start = int_pair(self.start, "start")
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
                f"receptive field dict lacks {missing}; expected keys size, stride, start, "
                f"got {sorted(d)}"
            )
        return cls(size=tuple(d["size"]), stride=tuple(d["stride"]), start=tuple(d["start"]))


IDENTITY_FIELD = ReceptiveField(size=(1, 1), stride=(1, 1), start=(0, 0))
"""The field of the model input itself: each pixel sees itself."""


def grow_window(rf: ReceptiveField, kernel: Sequence[int], stride: Sequence[int],
                padding: Sequence[int], dilation: Sequence[int]) -> ReceptiveField:
    """Field after a sliding window (convolution or pooling) applied to a map with field ``rf``.

    kernel, stride, padding (left / top), dilation: (h, w) in positions of the input map.
    """
    size, strides, start = [], [], []
    for axis in range(2):
        k, s, p, d = kernel[axis], stride[axis], padding[axis], dilation[axis]
        size.append(rf.size[axis] + (k - 1) * d * rf.stride[axis])
        strides.append(rf.stride[axis] * s)
        start.append(rf.start[axis] - p * rf.stride[axis])
    return ReceptiveField(tuple(size), tuple(strides), tuple(start))


def globalise(rf: ReceptiveField, lengths: Sequence[int], axes: Sequence[int] = (0, 1)
              ) -> ReceptiveField:
    """Field covering every position of a map of ``lengths`` (h, w) along ``axes``; stride 0."""
    size, stride = list(rf.size), list(rf.stride)
    for axis in axes:
        size[axis] = rf.size[axis] + (lengths[axis] - 1) * rf.stride[axis]
        stride[axis] = 0
    return ReceptiveField(tuple(size), tuple(stride), rf.start)


def union_span(spans: Sequence[tuple[int, int, int]], length: int) -> tuple[int, int, int]:
    """Union along one axis of fields combined position by position (add, cat, mul).

    spans:  per input, ``(start, end, step)`` of output position 0 and the step between
            positions (0 for an input broadcast over the axis), in input pixels.
    length: number of output positions along the axis.
    Returns ``(lo, hi, step)``: position ``i`` sees ``[lo + i * step, hi + i * step)``.
    """
    steps = {step for _, _, step in spans}
    if len(steps) == 1:
        step = steps.pop()
        return min(s for s, _, _ in spans), max(e for _, e, _ in spans), step
    if 0 in steps:
        # one input is the same for every position: every position sees everything
        lo = min(s for s, _, _ in spans)
        hi = max(e + (length - 1) * st for _, e, st in spans)
        return lo, hi, 0
    step = max(steps)
    lo = min(min(s, s + (length - 1) * (st - step)) for s, _, st in spans)
    hi = max(max(e, e + (length - 1) * (st - step)) for _, e, st in spans)
    return lo, hi, step
