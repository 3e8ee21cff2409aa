"""Zero-ablation of units (Bau et al. 2020), batched: many ablations per forward pass.

An ablation is a keep-vector over the layer's channels (1 = kept, 0 = zeroed). The layer's
output (and whatever the layers above still need from below, `convscope.dissect.tail`) is
computed once per held-out image and cached; each forward pass then runs only the layers
above it, on the cached output multiplied by U keep-vectors at once (U x images in the
batch dimension). A model that cannot be cut runs whole forward passes with a hook that
applies the keep-vectors. For the layer whose spatial mean is the input of the final
linear layer, the logits are a closed form: ``logits - ((1 - keep) * mean_activation) @ W^T``,
checked against the forward pass.

Measures (per class c, held-out labels y, predictions = argmax of the logits):
balanced accuracy of class c = (recall of c + specificity of c) / 2; the change of the
class logit = mean over the images of class c of (ablated - baseline) logit c.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from convscope.dissect.tail import split_at
from convscope.nn.hooks import capture_tensors, forward_hooks

__all__ = ["LayerAblator", "balanced_accuracy", "class_logit_change"]

logger = logging.getLogger(__name__)


def balanced_accuracy(logits: torch.Tensor, labels: torch.Tensor, n_classes: int) -> np.ndarray:
    """(..., N, K) logits, (N,) labels -> (..., n_classes) per-class balanced accuracy
    (NaN for a class without images)."""
    pred = logits.argmax(dim=-1)
    out = np.full(pred.shape[:-1] + (n_classes,), np.nan)
    for c in range(n_classes):
        positive = labels == c
        if not positive.any():
            continue
        recall = (pred[..., positive] == c).double().mean(dim=-1)
        specificity = (pred[..., ~positive] != c).double().mean(dim=-1) if (~positive).any() \
            else torch.ones_like(recall)
        out[..., c] = ((recall + specificity) / 2).numpy()
    return out


def class_logit_change(logits: torch.Tensor, base: torch.Tensor, labels: torch.Tensor,
                       n_classes: int) -> np.ndarray:
    """(U, N, K) ablated and (N, K) baseline logits -> (U, n_classes) mean change of logit c
    over the images of class c (NaN without images)."""
    diff = (logits - base).double()
    out = np.full((logits.shape[0], n_classes), np.nan)
    for c in range(n_classes):
        positive = labels == c
        if positive.any():
            out[:, c] = diff[:, positive, c].mean(dim=1).numpy()
    return out


def _final_linear(model: nn.Module) -> nn.Linear | None:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


@dataclass
class LayerAblator:
    """Logits of the held-out ``inputs`` under batches of keep-vectors at one ``layer``."""

    model: nn.Module
    layer: str
    inputs: torch.Tensor
    batch_size: int
    device: torch.device

    def __post_init__(self):
        self.split = split_at(self.model, self.layer, self.inputs[:2].to(self.device))
        self.cache, self.base, layer_mean, fc_input = self._cache()
        self.channels = int(self.layer_shape[0])
        self.mean_activation = layer_mean
        fc = _final_linear(self.model)
        self.closed_form = (fc is not None and fc_input is not None
                            and fc_input.shape == layer_mean.shape
                            and torch.allclose(fc_input, layer_mean, rtol=1e-4, atol=1e-5))
        self.weight = fc.weight.detach().float().cpu() if self.closed_form else None
        self.method = ("closed form (final linear layer x mean activation)" if self.closed_form
                       else "forward passes of the layers above" if self.split
                       else "whole forward passes (the model cannot be cut at this layer)")

    @torch.no_grad()
    def _cache(self):
        """Per image batch: the cut's head outputs (or the inputs, without a cut); the
        baseline logits, the layer's per-image mean activation and the final layer's input."""
        fc = _final_linear(self.model)
        fc_name = next((n for n, m in self.model.named_modules() if m is fc), None)
        chunks, base, means, fc_inputs = [], [], [], []
        with capture_tensors(self.model, [self.layer], key="ablation.layers") as out, \
                capture_tensors(self.model, [fc_name] if fc_name else [], where="input",
                                key="ablation.layers") as into:
            for start in range(0, len(self.inputs), self.batch_size):
                batch = self.inputs[start:start + self.batch_size].to(self.device)
                base.append(self.model(batch).float().cpu())
                layer_out = out[self.layer].float()
                means.append(layer_out.flatten(2).mean(2).cpu() if layer_out.dim() > 2
                             else layer_out.cpu())
                if fc_name:
                    fc_inputs.append(into[fc_name].float().flatten(1).cpu())
                head = self.split.head(batch) if self.split is not None else (batch,)
                chunks.append(tuple(t.cpu() for t in head))
        self.layer_shape = tuple(layer_out.shape[1:])
        return (chunks, torch.cat(base), torch.cat(means),
                torch.cat(fc_inputs) if fc_inputs else None)

    def logits(self, keep: torch.Tensor, forward: bool = False) -> torch.Tensor:
        """(U, C) keep-vectors -> (U, N, K) logits (``forward``: never the closed form)."""
        keep = keep.float()
        if self.closed_form and not forward:
            removed = (1.0 - keep)[:, None, :] * self.mean_activation[None]
            return self.base[None] - removed @ self.weight.T
        parts = []
        for cached in self.cache:
            per_pass = max(1, self.batch_size // cached[0].shape[0])
            parts.append(torch.cat([self._run(cached, keep[u:u + per_pass])
                                    for u in range(0, len(keep), per_pass)]))
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def _run(self, cached, keep: torch.Tensor) -> torch.Tensor:
        """One forward pass: U keep-vectors x the n images of ``cached`` -> (U, n, K)."""
        units, n = len(keep), cached[0].shape[0]
        mask = keep.to(self.device).view((units, 1, self.channels)
                                         + (1,) * (len(self.layer_shape) - 1))
        repeated = [t.to(self.device).repeat(units, *[1] * (t.dim() - 1)) for t in cached]
        if self.split is not None:
            layer_out = cached[0].to(self.device)
            ablated = (layer_out[None] * mask).reshape(units * n, *layer_out.shape[1:])
            return self.split.tail(ablated, *repeated[1:]).float().cpu().view(units, n, -1)

        def apply(_module, _inputs, output):
            return (output.view(units, n, *output.shape[1:]) * mask).view(output.shape)

        with forward_hooks(self.model, {self.layer: apply}, key="ablation.layers"):
            return self.model(repeated[0]).float().cpu().view(units, n, -1)


def unit_effects(ablator: LayerAblator, units, labels: torch.Tensor,
                 n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Each of ``units`` zeroed alone: (U, classes) change of balanced accuracy and of the
    class logit."""
    keep = torch.ones(len(units), ablator.channels)
    keep[torch.arange(len(units)), torch.as_tensor(list(units), dtype=torch.long)] = 0.0
    logits = ablator.logits(keep)
    base = balanced_accuracy(ablator.base, labels, n_classes)
    return (balanced_accuracy(logits, labels, n_classes) - base,
            class_logit_change(logits, ablator.base, labels, n_classes))


def class_curves(ablator: LayerAblator, units, delta_logit: np.ndarray, labels: torch.Tensor,
                 n_classes: int, steps) -> list[tuple]:
    """``(class, mode, n_units, balanced_accuracy)`` rows: per class, its units ranked by
    logit change (most negative first, then unit index); ``remove`` zeroes the top N,
    ``keep_only`` zeroes every other channel of the layer."""
    units = np.asarray(list(units))
    plans = []
    for c in range(n_classes):
        if np.isnan(delta_logit[:, c]).all():
            continue
        order = units[np.lexsort((units, delta_logit[:, c]))]
        for n in [s for s in steps if s <= len(units)]:
            plans.append((c, "remove", n, order[:n]))
            plans.append((c, "keep_only", n, order[:n]))
    if not plans:
        return []
    keep = torch.ones(len(plans), ablator.channels)
    for row, (_, mode, _, chosen) in enumerate(plans):
        if mode == "keep_only":
            keep[row] = 0.0
        keep[row, torch.as_tensor(chosen, dtype=torch.long)] = 0.0 if mode == "remove" else 1.0
    accuracy = balanced_accuracy(ablator.logits(keep), labels, n_classes)
    return [(c, mode, n, float(accuracy[row, c])) for row, (c, mode, n, _) in enumerate(plans)]
