"""The one optimisation loop of feature visualisation: objective + parametrisation +
transforms -> images and the objective's curve.

`render` optimises a batch of ``n`` images together with Adam. Each step: the
parametrisation gives the images in 0..1 (`convscope.synthesis.param`), the random
transforms move each image (`convscope.synthesis.transforms.random_affine`), the
preprocess section's mean/std turn them into model input, one forward pass fills the
activations the objective reads (`convscope.nn.hooks.capture_tensors`), and the sum of
the (n,) scores is maximised; each image gets the gradient of its own score only. With
the pixel parametrisation, the Yosinski et al. (2015) regularisers act on the raw pixels
after each step. During the first half of the steps every ReLU of the model passes
``relu_leak`` times the gradient where it is off (`leaky_relu_gradient`), so that units
silent on the starting image still get a gradient. Everything random comes from one
``torch.Generator`` seeded with
``seed``: the same call gives the same images.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from convscope.config.sections import PreprocessConfig
from convscope.data.preprocess import _per_channel, as_preprocess_config, input_hw
from convscope.nn.hooks import capture_tensors
from convscope.synthesis.objectives import IMAGE, LOGITS, Objective
from convscope.synthesis.param import PixelImage, make_param
from convscope.synthesis.transforms import (TransformSettings, blur, clip_small_contribution,
                                            clip_small_norm, random_affine)

__all__ = ["RenderSettings", "Rendered", "to_model_space", "leaky_relu_gradient", "render"]


@dataclass(frozen=True)
class RenderSettings:
    """How to optimise: see ``synthesis.visualisation`` in the schema for each field.

    ``transforms`` None: no random transforms. ``blur_every`` 0 and the percentiles 0
    switch the Yosinski regularisers off (they need ``parametrisation="pixels"``).
    """

    steps: int
    learning_rate: float
    parametrisation: str = "fourier"
    decorrelate: bool = True
    transforms: TransformSettings | None = None
    blur_every: int = 0
    blur_sigma: float = 0.5
    clip_norm_percentile: float = 0.0
    clip_contribution_percentile: float = 0.0
    relu_leak: float = 0.0

    def check(self, key: str = "synthesis.visualisation") -> None:
        """Raise ValueError when a Yosinski regulariser is asked of a Fourier image."""
        yosinski = (self.blur_every > 0 or self.clip_norm_percentile > 0
                    or self.clip_contribution_percentile > 0)
        if yosinski and self.parametrisation != "pixels":
            raise ValueError(f"{key}: blur_every, clip_norm_percentile and "
                             "clip_contribution_percentile act on pixels; set parametrisation "
                             f"to pixels or set them to 0 (parametrisation is "
                             f"{self.parametrisation!r})")


@dataclass(frozen=True)
class Rendered:
    """``images`` (n, H, W, C) float32 in 0..1; ``curves`` (n, steps) float32, the score of
    each image at each step (before that step's update)."""

    images: np.ndarray
    curves: np.ndarray


def to_model_space(images: torch.Tensor, preprocess: PreprocessConfig) -> torch.Tensor:
    """(n, C, H, W) in 0..1 -> model input, ``(x - mean) / std`` per channel."""
    channels = images.shape[1]
    mean = torch.as_tensor(_per_channel(preprocess.mean, channels, 0.0)).to(images)
    std = torch.as_tensor(_per_channel(preprocess.std, channels, 1.0)).to(images)
    return (images - mean[:, None, None]) / std[:, None, None]


def _scores(model: nn.Module, objective: Objective, images: torch.Tensor,
            preprocess: PreprocessConfig, settings: RenderSettings,
            generator: torch.Generator) -> torch.Tensor:
    """(n,) objective of ``images`` (n, C, H, W) in 0..1, after the random transforms."""
    moved = images if settings.transforms is None else \
        random_affine(images, settings.transforms, generator)
    hooked = [name for name in objective.layers if name not in (LOGITS, IMAGE)]
    # an objective that does not read the logits stops the pass after its layers
    stop = LOGITS not in objective.layers and bool(hooked)
    logits = None
    with capture_tensors(model, hooked, detach=False, key="synthesis objective layer",
                         stop=stop) as acts:
        logits = model(to_model_space(moved, preprocess))
    return objective({**acts, IMAGE: images} if logits is None
                     else {**acts, LOGITS: logits, IMAGE: images})


@torch.no_grad()
def _regularise(param: nn.Module, settings: RenderSettings, step: int) -> None:
    """Yosinski et al.'s regularisers on the raw pixels, after the update of ``step``."""
    if not isinstance(param, PixelImage):
        return
    pixels = param.pixels
    if settings.blur_every > 0 and (step + 1) % settings.blur_every == 0:
        pixels.copy_(blur(pixels, settings.blur_sigma))
    pixels.copy_(clip_small_norm(pixels, settings.clip_norm_percentile))
    if settings.clip_contribution_percentile > 0 and pixels.grad is not None:
        pixels.copy_(clip_small_contribution(pixels, pixels.grad,
                                             settings.clip_contribution_percentile))


@contextlib.contextmanager
def leaky_relu_gradient(model: nn.Module, leak: float) -> Iterator[None]:
    """Inside the block, every ``nn.ReLU`` of ``model`` passes ``leak`` times the gradient
    where its input is negative (its output values are unchanged).

    A unit that is 0 everywhere on the starting image (a ReLU whose input is negative
    there: mid grey often is) gets no gradient at all and its image would stay grey; the
    leak lets the optimisation find where it starts to fire. ``leak`` 0: nothing changes.
    """
    if leak <= 0:
        yield
        return
    inputs: dict[int, torch.Tensor] = {}

    def keep(module, args):
        inputs[id(module)] = args[0].clone()  # before an in-place ReLU overwrites it

    def redirect(module, args, output):
        x = inputs.pop(id(module))
        return output + leak * (x - x.detach()) * (x.detach() < 0)

    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    handles = [m.register_forward_pre_hook(keep) for m in relus]
    handles += [m.register_forward_hook(redirect) for m in relus]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def render(model: nn.Module, objective: Objective, n: int, settings: RenderSettings, *,
           preprocess: PreprocessConfig, seed: int, device: torch.device | str = "cpu",
           desc: str = "render") -> Rendered:
    """Optimise ``n`` images (the model's input size and channels) to maximise ``objective``.

    ``model`` must be in eval mode on ``device`` (BatchNorm must not mix images). Returns
    the final images and each image's score curve.
    """
    settings.check()
    preprocess = as_preprocess_config(preprocess)
    height, width = input_hw(preprocess)
    generator = torch.Generator().manual_seed(int(seed))
    param = make_param(settings.parametrisation, n, int(preprocess.channels), height, width,
                       decorrelate=settings.decorrelate, generator=generator).to(device)
    optimiser = torch.optim.Adam(param.parameters(), lr=settings.learning_rate)
    curves = []
    leak_until = settings.steps // 2 if settings.relu_leak > 0 else 0
    for step in tqdm(range(settings.steps), desc=desc, unit="step", file=sys.stderr,
                     mininterval=5):
        optimiser.zero_grad(set_to_none=True)
        with leaky_relu_gradient(model, settings.relu_leak if step < leak_until else 0.0):
            scores = _scores(model, objective, param(), preprocess, settings, generator)
        (-scores.sum()).backward()
        optimiser.step()
        _regularise(param, settings, step)
        curves.append(scores.detach())
    with torch.no_grad():
        images = param().permute(0, 2, 3, 1).float().cpu().numpy()
    curve = torch.stack(curves, 1).float().cpu().numpy() if curves else np.zeros((n, 0))
    return Rendered(images=images.astype(np.float32), curves=curve.astype(np.float32))
