"""Attribution maps of a batch of images: which input pixels a class score depends on.

What comes from Captum (``captum.attr``) and what is written here:

- saliency (Simonyan et al. 2013): Captum ``Saliency`` (absolute input
  gradient of the class score); the maximum over colour channels is ours.
- deconvnet (Zeiler & Fergus 2013) and guided backprop (Springenberg et al.
  2014): Captum ``Deconvolution`` and ``GuidedBackprop``, which replace the
  backward pass of every ``nn.ReLU`` module; the absolute value's maximum
  over colour channels is ours.
- Grad-CAM (Selvaraju et al. 2017): Captum ``LayerGradCam`` with
  ``relu_attributions=True``, upsampled bilinearly to the input
  (``LayerAttribution.interpolate``); guided Grad-CAM: Captum ``GuidedGradCam``
  (bilinear), absolute value's maximum over channels ours.
- integrated gradients, SmoothGrad and LRP (zennit): `convscope.explain.attribution_paths`.
- occlusion (Zeiler & Fergus 2013, Fig. 7 d/e) and zf_occlusion (Fig. 7 b, the
  total activation of the strongest feature map of one layer): by hand in
  `convscope.explain.occlusion` with Captum ``Occlusion``'s semantics, because
  Captum follows one target per sweep and `occlusion_maps` reads the true- and
  predicted-class probabilities and the feature-map total in one sweep. The
  map at a pixel is the mean drop of the value over the occluder positions
  that cover it (positive: hiding the pixel lowers it).

Every map is (N, H, W) float32 at model-input resolution. Gradient methods
explain the class *score* (the logit), occlusion the class *probability*.

Captum's guided backprop and deconvnet only change ``nn.ReLU`` modules:
`backprop_ready` works on a copy of the model whose ReLUs are not in place and
refuses models that call ``torch.relu`` / ``F.relu`` as functions (their
backward pass would silently stay a plain gradient).
"""

from __future__ import annotations

import copy
import logging
import warnings

import torch
from captum.attr import (Deconvolution, GuidedBackprop, GuidedGradCam, LayerAttribution,
                         LayerGradCam, Saliency)
from torch import nn
from torch.nn import functional as F

from convscope.explain.occlusion import occlusion_sweep
from convscope.nn.hooks import capture_tensors
from convscope.nn.layers import get_module

__all__ = ["GRADIENT_METHODS", "METHODS", "FunctionalReluError", "backprop_ready",
           "saliency_map", "deconvnet_map", "guided_backprop_map", "gradcam_map",
           "guided_gradcam_map", "occlusion_map", "strongest_feature_maps", "zf_occlusion_map",
           "occlusion_maps"]

logger = logging.getLogger(__name__)

#: Methods that explain a class score through gradients.
GRADIENT_METHODS = ("saliency", "deconvnet", "guided_backprop", "gradcam", "guided_gradcam",
                    "integrated_gradients", "smoothgrad", "lrp")
#: Every method, in the order of the panels.
METHODS = (*GRADIENT_METHODS, "occlusion", "zf_occlusion")

# Captum warns on every call that it sets (and removes) backward hooks on the ReLUs: expected here
warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations",
                        module="captum")

_FUNCTIONAL_RELUS = {torch.relu, torch.relu_, F.relu, F.relu_, torch.nn.functional.relu}


class FunctionalReluError(ValueError):
    """The model applies ReLU as a function, so deconvnet / guided backprop cannot change it."""


def _functional_relus(model: nn.Module) -> list[str] | None:
    """Names of the graph nodes that call ReLU as a function; None when the model cannot be traced."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # a model with data-dependent control flow: checked by its modules only
        return None
    return [node.name for node in graph.nodes
            if (node.op == "call_function" and node.target in _FUNCTIONAL_RELUS)
            or (node.op == "call_method" and node.target in ("relu", "relu_"))]


def backprop_ready(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode, same device) whose ``nn.ReLU`` modules are not in place.

    Raises `FunctionalReluError` when the model calls ReLU as a function (found by
    tracing with ``torch.fx``) or has no ``nn.ReLU`` module at all: Captum's
    deconvnet and guided backprop rewrite only ``nn.ReLU`` modules.
    """
    ready = copy.deepcopy(model).eval()
    relus = [module for module in ready.modules() if isinstance(module, nn.ReLU)]
    functional = _functional_relus(ready)
    if functional or not relus:
        where = f" (graph nodes {', '.join(functional[:5])})" if functional else ""
        raise FunctionalReluError(
            f"the model applies ReLU as a function{where} or has no nn.ReLU module; deconvnet, "
            "guided backprop and guided Grad-CAM need every ReLU to be an nn.ReLU module. Use "
            "nn.ReLU modules in the model, or leave these methods out of "
            "explain.attribution.methods")
    for module in relus:
        module.inplace = False  # Captum's backward hooks cannot see through in-place outputs
    return ready


def _grad_input(inputs: torch.Tensor) -> torch.Tensor:
    """A leaf copy of ``inputs`` that requires gradients (Captum warns when it must set this)."""
    return inputs.detach().requires_grad_()


def _channel_absmax(attribution: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H, W) float32: maximum of the absolute value over channels (by hand)."""
    return attribution.detach().abs().amax(dim=1).float()


def saliency_map(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """|d score_target / d input|, maximum over colour channels: (N, H, W)."""
    return _channel_absmax(Saliency(model).attribute(_grad_input(inputs), target=target, abs=True))


def deconvnet_map(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Deconvnet projection of the class score, |.| maximum over channels: (N, H, W).

    ``model`` must come from `backprop_ready`.
    """
    return _channel_absmax(Deconvolution(model).attribute(_grad_input(inputs), target=target))


def guided_backprop_map(model: nn.Module, inputs: torch.Tensor,
                        target: torch.Tensor) -> torch.Tensor:
    """Guided backprop of the class score, |.| maximum over channels: (N, H, W).

    ``model`` must come from `backprop_ready`.
    """
    return _channel_absmax(GuidedBackprop(model).attribute(_grad_input(inputs), target=target))


def gradcam_map(model: nn.Module, layer: str, inputs: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
    """Grad-CAM at ``layer``: relu(sum_k mean(dY/dA_k) A_k), bilinearly upsampled: (N, H, W)."""
    cam = LayerGradCam(model, get_module(model, layer, key="explain.attribution.gradcam_layer"))
    maps = cam.attribute(_grad_input(inputs), target=target, relu_attributions=True)
    maps = LayerAttribution.interpolate(maps.detach(), tuple(inputs.shape[2:]),
                                        interpolate_mode="bilinear")
    return maps[:, 0].float()


def guided_gradcam_map(model: nn.Module, layer: str, inputs: torch.Tensor,
                       target: torch.Tensor) -> torch.Tensor:
    """Guided backprop times Grad-CAM (Captum ``GuidedGradCam``), |.| max over channels: (N, H, W).

    ``model`` must come from `backprop_ready`.
    """
    guided = GuidedGradCam(model, get_module(model, layer, key="explain.attribution.gradcam_layer"))
    maps = guided.attribute(_grad_input(inputs), target=target, interpolate_mode="bilinear")
    return _channel_absmax(maps)


def occlusion_map(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, *, size: int,
                  stride: int, fill: torch.Tensor, positions_per_pass: int = 16) -> torch.Tensor:
    """Mean drop of the target class's probability when a grey square covers a pixel: (N, H, W).

    Args:
        inputs: (N, C, H, W) normalised model input.
        target: (N,) class ids.
        size, stride: the occluder's side and step in input pixels.
        fill: (C,) the occluder's value per channel, normalised like the inputs.
        positions_per_pass: occluder positions evaluated in one forward pass.
    """
    def probability(x, rows):
        return torch.softmax(model(x), dim=1).gather(1, target[rows, None])

    return occlusion_sweep(probability, inputs, size=size, stride=stride, fill=fill,
                           positions_per_pass=positions_per_pass)[:, 0]


def _feature_map_totals(model: nn.Module, layer: str, inputs: torch.Tensor) -> torch.Tensor:
    """(N, C): the sum over positions of every feature map of ``layer``."""
    with capture_tensors(model, [layer], key="explain.attribution.zf_layer") as captured:
        model(inputs)
    maps = captured[layer]
    if maps.dim() != 4:
        raise ValueError(f"explain.attribution.zf_layer {layer!r} has output shape "
                         f"{tuple(maps.shape)}, not feature maps (N, C, H, W); choose a conv layer")
    return maps.flatten(2).sum(-1)


def strongest_feature_maps(model: nn.Module, layer: str, inputs: torch.Tensor) -> torch.Tensor:
    """(N,) int64: the channel of ``layer`` with the largest total activation on each image."""
    with torch.no_grad():
        return _feature_map_totals(model, layer, inputs).argmax(dim=1)


def zf_occlusion_map(model: nn.Module, layer: str, inputs: torch.Tensor, channels: torch.Tensor,
                     *, size: int, stride: int, fill: torch.Tensor,
                     positions_per_pass: int = 16) -> torch.Tensor:
    """Mean drop of the total activation of feature map ``channels[i]`` of ``layer``: (N, H, W).

    As `occlusion_map`, but the followed value is the sum over positions of one
    feature map (Zeiler & Fergus follow the strongest one, `strongest_feature_maps`).
    """
    def total(x, rows):
        return _feature_map_totals(model, layer, x).gather(1, channels[rows, None])

    return occlusion_sweep(total, inputs, size=size, stride=stride, fill=fill,
                           positions_per_pass=positions_per_pass)[:, 0]


def occlusion_maps(model: nn.Module, inputs: torch.Tensor, targets: dict[str, torch.Tensor],
                   zf_layer: str | None = None, zf_channels: torch.Tensor | None = None, *,
                   size: int, stride: int, fill: torch.Tensor,
                   positions_per_pass: int = 16) -> dict[str, torch.Tensor]:
    """`occlusion_map` of every target kind and `zf_occlusion_map` in ONE sweep.

    Returns ``{"occlusion/<kind>": (N, H, W), ..., "zf_occlusion": (N, H, W)}`` (the last
    only when ``zf_layer`` is given).
    """
    kinds = list(targets)
    ids = torch.stack([targets[kind] for kind in kinds], dim=1) if kinds else None

    def readouts(x, rows):
        if zf_layer is None:
            logits = model(x)
            values = []
        else:
            with capture_tensors(model, [zf_layer], key="explain.attribution.zf_layer") as captured:
                logits = model(x)
            values = [captured[zf_layer].flatten(2).sum(-1).gather(1, zf_channels[rows, None])]
        if ids is not None:
            values.insert(0, torch.softmax(logits, dim=1).gather(1, ids[rows]))
        return torch.cat(values, dim=1)

    maps = occlusion_sweep(readouts, inputs, size=size, stride=stride, fill=fill,
                           positions_per_pass=positions_per_pass)
    out = {f"occlusion/{kind}": maps[:, i] for i, kind in enumerate(kinds)}
    if zf_layer is not None:
        out["zf_occlusion"] = maps[:, -1]
    return out
