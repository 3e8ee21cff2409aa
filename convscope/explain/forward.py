"""Layer outputs of an explanation stage's model over batches of images.

Shared by the invariance, correspondence and keypoint stages (which load the
model with `convscope.nn.models.load_stage_model`): check the layer
names of a config key, and run batches of prepared images through it keeping
the chosen layers' outputs (`convscope.nn.hooks.capture_tensors`) and the
class probabilities.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from convscope.nn.hooks import capture_tensors
from convscope.nn.layers import check_layer_names

__all__ = ["chosen_layers", "layer_outputs"]


def chosen_layers(model: nn.Module, layers: Sequence[str] | None,
                  analysed: Sequence[str] | None, key: str) -> list[str]:
    """``layers`` (config ``key``), or the analysed layers when null; names checked."""
    names = list(layers or analysed or [])
    if not names:
        raise ValueError(f"config key {key!r} is null and no analysed layers are set "
                         "(key 'layers')")
    check_layer_names(model, names, key=key)
    return names


@torch.no_grad()
def layer_outputs(model: nn.Module, inputs: torch.Tensor, layers: Sequence[str],
                  batch_size: int, device: torch.device, key: str = "layers",
                  progress: str | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Outputs of ``layers`` and softmax probabilities for a batch of model inputs.

    Args:
        inputs: (N, C, H, W) float32 prepared images (on any device).
        layers: module names (checked, ``key`` names the config key in errors).
        batch_size: images per forward pass.
        progress: a tqdm description, or None for no progress bar.
    Returns:
        ``({layer: (N, ...) float32 on the CPU}, (N, classes) float32 probabilities on the CPU)``.
    """
    kept: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    probs = []
    starts = range(0, len(inputs), batch_size)
    if progress:
        starts = tqdm(starts, desc=progress, unit="batch", file=sys.stderr)
    with capture_tensors(model, list(layers), key=key) as captured:
        for start in starts:
            batch = inputs[start:start + batch_size].to(device, non_blocking=True)
            logits = model(batch)
            probs.append(torch.softmax(logits.float(), dim=1).cpu())
            for name in layers:
                kept[name].append(captured[name].float().cpu())
    if not probs:
        raise ValueError("layer_outputs needs at least one image")
    return {name: torch.cat(parts) for name, parts in kept.items()}, torch.cat(probs)
