"""Unit reconstructions (Zeiler & Fergus 2013, Fig. 2): one activation projected back to pixels.

For an image and a unit (layer, channel) we take the unit's activation at
one feature-map position (its maximum, from ``results/units/topk.csv``) and
backpropagate that single number to the input with the deconvnet rule and
with the guided backprop rule: Captum ``Deconvolution`` / ``GuidedBackprop``
over a wrapper whose output is that activation (`UnitActivation`). Nothing
else of the layer contributes, so the reconstruction is zero outside the
position's receptive field; `crop_box` cuts that box out (hand-written:
box algebra of `convscope.nn.receptive_field.ReceptiveField`).
"""

from __future__ import annotations

import numpy as np
import torch
from captum.attr import Deconvolution, GuidedBackprop
from torch import nn

from convscope.nn.hooks import capture_tensors
from convscope.nn.receptive_field import ReceptiveField

__all__ = ["RECONSTRUCTION_METHODS", "UnitActivation", "reconstruct_units", "crop_box"]

#: Reconstruction methods, as named in the HDF5 file and the figures.
RECONSTRUCTION_METHODS = ("deconvnet", "guided_backprop")


class UnitActivation(nn.Module):
    """A model wrapped: ``forward(x, channel, fy, fx)`` -> (N,) ``layer(x)[i, channel[i], fy[i], fx[i]]``."""

    def __init__(self, model: nn.Module, layer: str, key: str = "explain.reconstructions.layers"):
        super().__init__()
        self.model = model
        self.layer = layer
        self.key = key

    def forward(self, inputs: torch.Tensor, channel: torch.Tensor, fy: torch.Tensor,
                fx: torch.Tensor) -> torch.Tensor:
        with capture_tensors(self.model, [self.layer], detach=False, key=self.key,
                             stop=True) as captured:
            self.model(inputs)
        maps = captured[self.layer]
        if maps.dim() != 4:
            raise ValueError(f"{self.key}: layer {self.layer!r} has output shape "
                             f"{tuple(maps.shape)}, not feature maps (N, C, H, W)")
        rows = torch.arange(len(inputs), device=inputs.device)
        return maps[rows, channel, fy, fx]


def reconstruct_units(model: nn.Module, layer: str, inputs: torch.Tensor, channel: torch.Tensor,
                      fy: torch.Tensor, fx: torch.Tensor, method: str) -> torch.Tensor:
    """The gradient of one activation per image, by the deconvnet or guided-backprop rule.

    Args:
        model: a model from `convscope.explain.attribution.backprop_ready`.
        layer: module name of the unit's layer.
        inputs: (N, C, H, W) normalised images.
        channel, fy, fx: (N,) int64 unit channel and feature-map position per image.
        method: ``deconvnet`` or ``guided_backprop``.
    Returns:
        (N, C, H, W) float32 reconstruction in input space (signed).
    """
    if method not in RECONSTRUCTION_METHODS:
        raise ValueError(f"reconstruction method {method!r} is unknown; valid: "
                         f"{', '.join(RECONSTRUCTION_METHODS)}")
    wrapper = UnitActivation(model, layer)
    explainer = Deconvolution(wrapper) if method == "deconvnet" else GuidedBackprop(wrapper)
    result = explainer.attribute(inputs.detach().requires_grad_(),
                                 additional_forward_args=(channel, fy, fx))
    return result.detach().float()


def crop_box(rf: ReceptiveField | None, fy: int, fx: int, height: int,
             width: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) receptive-field box of position (fy, fx) clipped to an input of height x width.

    ``rf`` None (no receptive field known) gives the whole input.
    """
    if rf is None:
        return 0, 0, width, height
    x0, y0, x1, y1 = (int(v) for v in np.asarray(rf.box_xyxy(int(fy), int(fx))).ravel())
    return max(0, x0), max(0, y0), min(width, x1), min(height, y1)
