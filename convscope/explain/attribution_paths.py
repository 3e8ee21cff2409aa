"""Attribution methods that integrate over many copies of an image, and LRP.

What comes from libraries and what is written here:

- integrated gradients (Sundararajan et al. 2017): Captum ``IntegratedGradients``
  (Gauss-Legendre steps from a grey baseline, ``internal_batch_size`` copies per
  pass); the sum over colour channels is ours (a signed map whose total is the
  score's change from the baseline, completeness).
- SmoothGrad (Smilkov et al. 2017): Captum ``NoiseTunnel`` over ``Saliency``
  (``nt_samples_batch_size`` noisy copies per pass); the noise is drawn from a
  generator seeded here, so a map does not depend on the batch it came in; the
  maximum of the absolute value over colour channels is ours.
- LRP (Bach et al. 2015): zennit's ``EpsilonPlusFlat`` composite (flat rule at
  the first layer, z+ at convolutions, epsilon at dense layers), batch norms
  merged into the layer before them (``SequentialMergeBatchNorm``), and zennit's
  ``ResNetCanonizer`` for torchvision ResNets; the relevance of the target
  class is propagated back with ``torch.autograd.grad`` and summed over colour
  channels (signed: positive = evidence for the class).
"""

from __future__ import annotations

import copy

import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
from torch import nn

__all__ = ["SIGNED_METHODS", "integrated_gradients_map", "smoothgrad_map", "lrp_map",
           "is_resnet"]

#: Methods whose maps are signed (shown with a diverging colour map).
SIGNED_METHODS = ("integrated_gradients", "lrp")


def integrated_gradients_map(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, *,
                             baseline: torch.Tensor, steps: int,
                             internal_batch_size: int) -> torch.Tensor:
    """Integrated gradients of the class score from ``baseline``, summed over channels: (N, H, W).

    ``baseline``: (C,) the normalised grey image's value per channel.
    """
    base = baseline.view(1, -1, 1, 1).expand_as(inputs).contiguous()
    ig = IntegratedGradients(model)
    maps = ig.attribute(inputs.detach().requires_grad_(), baselines=base, target=target,
                        n_steps=steps, internal_batch_size=internal_batch_size)
    return maps.detach().sum(dim=1).float()


def smoothgrad_map(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, *,
                   samples: int, noise: float, samples_per_pass: int,
                   seed: int = 0) -> torch.Tensor:
    """SmoothGrad: mean |gradient| over ``samples`` noisy copies, |.| max over channels: (N, H, W).

    ``noise``: the noise's standard deviation as a fraction of each image's value range
    (max - min), as Smilkov et al. choose it. The noise generator is seeded with ``seed``
    per image (`torch.random.fork_rng`), so the global random state is left as it was.
    """
    span = (inputs.flatten(1).amax(1) - inputs.flatten(1).amin(1)).clamp_min(1e-12)
    maps = []
    devices = [inputs.device.index or 0] if inputs.device.type == "cuda" else []
    tunnel = NoiseTunnel(Saliency(model))
    for i in range(len(inputs)):
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            one = tunnel.attribute(inputs[i:i + 1].detach().requires_grad_(), nt_type="smoothgrad",
                                   nt_samples=samples, nt_samples_batch_size=samples_per_pass,
                                   stdevs=float(noise * span[i]), target=target[i:i + 1],
                                   abs=True)
        maps.append(one.detach().abs().amax(dim=1).float())
    return torch.cat(maps)


def is_resnet(model: nn.Module) -> bool:
    """Whether ``model`` has torchvision ResNet blocks (BasicBlock / Bottleneck)."""
    from torchvision.models.resnet import BasicBlock, Bottleneck
    return any(isinstance(m, (BasicBlock, Bottleneck)) for m in model.modules())


def lrp_map(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """LRP relevance of the class score (zennit EpsilonPlusFlat), summed over channels: (N, H, W).

    Works on a copy of ``model`` whose ``nn.ReLU`` modules are not in place (zennit's
    canonizers and rule hooks change the copy while the relevance is computed).
    """
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer

    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    canonizer = ResNetCanonizer() if is_resnet(model) else SequentialMergeBatchNorm()
    composite = EpsilonPlusFlat(canonizers=[canonizer])
    x = inputs.detach().requires_grad_()
    with torch.enable_grad(), composite.context(model) as modified:
        logits = modified(x)
        chosen = torch.zeros_like(logits).scatter_(1, target[:, None], 1.0)
        (relevance,) = torch.autograd.grad(logits, x, grad_outputs=chosen * logits)
    return relevance.detach().sum(dim=1).float()
