"""Objectives: small composable functions of the hooked activations (after lucent).

An `Objective` maps the activations of one forward pass to one score per image, shape
(n,), to be *maximised* by `convscope.synthesis.render.render`. It names the modules it
reads (`Objective.layers`, which names `LOGITS` when it reads the model's output); the
loop hooks exactly those and, when the logits are not read, ends the forward pass after
them. `IMAGE` (the images in 0..1 before the robustness transforms, for regularisers) is
always there.

Objectives are batched: image ``i`` of the batch gets its own target (its own channel or
class), so a whole layer's units are optimised in one batch, one image per unit. Every
score of image ``i`` depends only on image ``i`` (the model is in eval mode), so the
gradient of the summed scores gives each image its own unit's gradient.

Build bigger ones with ``+``, ``-``, and multiplication by a number:
``channel("relu3", [0, 1, 2]) - 1e-3 * l2()``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

__all__ = ["LOGITS", "IMAGE", "Objective", "channel", "class_logit", "l2", "feature_match",
           "total_variation", "alpha_norm"]

#: Key of the model's output in the activations dict.
LOGITS = "<logits>"
#: Key of the images (n, C, H, W) in 0..1, before the robustness transforms.
IMAGE = "<image>"

Activations = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Objective:
    """``fn(activations) -> (n,)`` scores to maximise; ``layers``: the modules it reads."""

    fn: Callable[[Activations], torch.Tensor]
    layers: tuple[str, ...]
    name: str

    def __call__(self, activations: Activations) -> torch.Tensor:
        return self.fn(activations)

    def __add__(self, other: Objective) -> Objective:
        return Objective(lambda acts: self(acts) + other(acts),
                         tuple(dict.fromkeys(self.layers + other.layers)),
                         f"{self.name} + {other.name}")

    def __neg__(self) -> Objective:
        return -1.0 * self

    def __sub__(self, other: Objective) -> Objective:
        return self + (-other)

    def __rmul__(self, weight: float) -> Objective:
        weight = float(weight)
        return Objective(lambda acts: weight * self(acts), self.layers, f"{weight:g} * {self.name}")

    __mul__ = __rmul__


def _per_image(targets: int | Sequence[int], n: int, device) -> torch.Tensor:
    """(n,) long: one target per image (a single int repeats)."""
    targets = torch.as_tensor(targets, dtype=torch.long, device=device).reshape(-1)
    if targets.numel() == 1:
        return targets.expand(n)
    if targets.numel() != n:
        raise ValueError(f"the objective has {targets.numel()} targets for a batch of {n} images")
    return targets


def channel(layer: str, channels: int | Sequence[int], where: str = "mean") -> Objective:
    """Activation of channel ``channels[i]`` of ``layer`` for image ``i``.

    ``where``: ``mean`` over the feature map, or ``centre`` (the position
    ``(H // 2, W // 2)``). A (n, C) output (a linear layer) is read as it is.
    """
    if where not in ("mean", "centre"):
        raise ValueError(f"channel objective position {where!r} is unknown; valid: mean, centre")

    def fn(acts: Activations) -> torch.Tensor:
        act = acts[layer]
        picked = act[torch.arange(act.shape[0], device=act.device),
                     _per_image(channels, act.shape[0], act.device)]
        if picked.ndim == 1:
            return picked
        if where == "centre":
            return picked[:, picked.shape[-2] // 2, picked.shape[-1] // 2]
        return picked.flatten(1).mean(1)

    return Objective(fn, (layer,), f"channel({layer}, {where})")


def class_logit(classes: int | Sequence[int]) -> Objective:
    """The unnormalised score (logit) of class ``classes[i]`` for image ``i`` (Simonyan)."""
    def fn(acts: Activations) -> torch.Tensor:
        logits = acts[LOGITS]
        index = _per_image(classes, logits.shape[0], logits.device)
        return logits[torch.arange(logits.shape[0], device=logits.device), index]

    return Objective(fn, (LOGITS,), "class logit")


def l2() -> Objective:
    """Squared L2 norm of each image centred on mid grey, ``sum (x - 0.5)^2`` (subtract it
    with a weight for L2 decay)."""
    return Objective(lambda acts: (acts[IMAGE] - 0.5).pow(2).flatten(1).sum(1), (), "l2")


def feature_match(layer: str, target: torch.Tensor) -> Objective:
    """``||phi(x) - phi0||^2 / ||phi0||^2`` per image, ``target`` (n, ...) = phi0 (Mahendran
    & Vedaldi 2015's normalised reconstruction error; subtract it to minimise it)."""
    norm = target.flatten(1).pow(2).sum(1).clamp_min(1e-12)

    def fn(acts: Activations) -> torch.Tensor:
        diff = (acts[layer] - target.to(acts[layer])).flatten(1)
        return diff.pow(2).sum(1) / norm.to(diff)

    return Objective(fn, (layer,), f"feature loss({layer})")


def total_variation(beta: float) -> Objective:
    """TV^beta per image: the mean over channels and pixels (i < H-1, j < W-1) of
    ``((x[i, j+1] - x[i, j])^2 + (x[i+1, j] - x[i, j])^2) ^ (beta / 2)``."""
    def fn(acts: Activations) -> torch.Tensor:
        x = acts[IMAGE]
        dx = x[..., :-1, 1:] - x[..., :-1, :-1]
        dy = x[..., 1:, :-1] - x[..., :-1, :-1]
        return (dx * dx + dy * dy).clamp_min(1e-12).pow(beta / 2).flatten(1).mean(1)

    return Objective(fn, (), f"TV^{beta:g}")


def alpha_norm(alpha: float) -> Objective:
    """Mean of ``|x - 0.5| ^ alpha`` per image (Mahendran & Vedaldi's bounded-range prior)."""
    return Objective(lambda acts: (acts[IMAGE] - 0.5).abs().pow(alpha).flatten(1).mean(1), (),
                     f"alpha-norm({alpha:g})")
