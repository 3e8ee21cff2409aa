"""Occlusion sensitivity (Zeiler & Fergus 2013, Fig. 7) with several readouts per sweep.

Written by hand, batched: Captum's ``Occlusion`` follows ONE target per sweep,
so the true-class probability, the predicted-class probability and the
Zeiler & Fergus feature-map total would cost three sweeps of forward passes;
here one sweep reads them all. The semantics are Captum's (the tests check
both against a brute-force loop): an occluder of ``size`` x ``size`` pixels
(all channels) at every position ``(y, x)`` with ``y, x`` in
``range(0, H - size + 1, stride)``; the map at a pixel is the mean, over the
positions that cover it, of ``readout(original) - readout(occluded)``
(0 where no position covers it). ``positions_per_pass`` positions of every
image of the batch go through the model together.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["occluder_positions", "occlusion_sweep"]


def occluder_positions(height: int, width: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of the occluder, row by row."""
    if size > min(height, width):
        raise ValueError(f"explain.attribution.occlusion_size {size} is larger than the model "
                         f"input ({height} x {width}); choose at most {min(height, width)}")
    return [(y, x) for y in range(0, height - size + 1, stride)
            for x in range(0, width - size + 1, stride)]


def occlusion_sweep(readout: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    inputs: torch.Tensor, *, size: int, stride: int, fill: torch.Tensor,
                    positions_per_pass: int = 16) -> torch.Tensor:
    """Mean drop of each readout when the occluder covers a pixel.

    Args:
        readout: ``readout(x, rows)`` -> (M, T) values followed, for a batch ``x``
            (M, C, H, W) whose example ``m`` is (an occluded copy of) image ``rows[m]``.
        inputs: (N, C, H, W) normalised images.
        size, stride: the occluder's side and step in pixels.
        fill: (C,) the occluder's value per channel (normalised like the inputs).
        positions_per_pass: occluder positions per forward pass (times N images).
    Returns:
        (N, T, H, W) float32.
    """
    n, channels, height, width = inputs.shape
    positions = occluder_positions(height, width, size, stride)
    fill = fill.to(inputs).reshape(1, channels, 1, 1)
    rows = torch.arange(n, device=inputs.device)
    with torch.no_grad():
        base = readout(inputs, rows)
        total = torch.zeros(n, base.shape[1], height, width, dtype=base.dtype, device=inputs.device)
        count = torch.zeros(height, width, dtype=base.dtype, device=inputs.device)
        for start in range(0, len(positions), positions_per_pass):
            chunk = positions[start:start + positions_per_pass]
            occluded = inputs.unsqueeze(1).repeat(1, len(chunk), 1, 1, 1)  # (N, p, C, H, W)
            for j, (y, x) in enumerate(chunk):
                occluded[:, j, :, y:y + size, x:x + size] = fill
            values = readout(occluded.flatten(0, 1), rows.repeat_interleave(len(chunk)))
            drop = base[:, None] - values.reshape(n, len(chunk), -1)
            for j, (y, x) in enumerate(chunk):
                total[:, :, y:y + size, x:x + size] += drop[:, j, :, None, None]
                count[y:y + size, x:x + size] += 1
    return (total / count.clamp(min=1)).float()
