"""Per-channel statistics of the analysed layers, computed on the device in forward hooks.

Only (N, C) summaries ever leave the device: for each layer the spatial
maximum, its flat position and the spatial mean of every channel, plus the
CNN code (N, D) and the top-5 predictions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from convscope.nn.hooks import first_tensor, forward_hooks
from convscope.store.shards import layer_key

__all__ = ["channel_summary", "top5", "ActivationSummaries", "summarize_activations"]


def channel_summary(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, C, ...) layer output -> per-channel ``(max, argmax, mean)``, each (N, C).

    ``max`` and ``mean`` are float32 (the mean accumulated in float32 whatever the
    output's dtype), ``argmax`` int32 is the flat spatial position (``y * W + x``)
    of the maximum. A (N, C) output is its own max and mean, at position 0.
    """
    flat = output.flatten(2) if output.ndim > 2 else output[:, :, None]
    unit_max, unit_argmax = flat.max(dim=2)
    unit_mean = flat.mean(dim=2, dtype=torch.float32)
    return unit_max.float(), unit_argmax.int(), unit_mean


def top5(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) logits -> the five most probable classes (N, 5) int32 and their softmax
    probabilities (N, 5) float32; with K < 5 the missing columns are class -1, prob 0."""
    probs = torch.softmax(logits.float(), dim=1)
    k = min(5, probs.shape[1])
    top_prob, top_class = probs.topk(k, dim=1)
    if k < 5:
        top_prob = torch.nn.functional.pad(top_prob, (0, 5 - k), value=0.0)
        top_class = torch.nn.functional.pad(top_class, (0, 5 - k), value=-1)
    return top_class.int(), top_prob


class ActivationSummaries:
    """What the hooks saw in the last forward pass: ``layers[name]`` = `channel_summary` of
    that layer's output, ``codes`` (N, D) float32."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.layers: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.codes: torch.Tensor | None = None

    def results(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """The shard's per-image datasets for this batch, by HDF5 path, on the device."""
        top_class, top_prob = top5(logits)
        out = {"topk/class": top_class, "topk/prob": top_prob, "codes": self.codes}
        for name in self.names:  # a layer the forward pass did not reach raises KeyError
            unit_max, unit_argmax, unit_mean = self.layers[name]
            key = layer_key(name)
            out[f"layers/{key}/max"] = unit_max
            out[f"layers/{key}/argmax"] = unit_argmax
            out[f"layers/{key}/mean"] = unit_mean
        return out


@contextlib.contextmanager
def summarize_activations(model: nn.Module, layers: Sequence[str], codes_module: str,
                          codes_where: str) -> Iterator[ActivationSummaries]:
    """Hooks that fill an `ActivationSummaries` on every forward pass of ``model``.

    ``codes_module``/``codes_where`` (``"input"`` | ``"output"``) say where the CNN
    code is read (`convscope.nn.models.codes_module_name`). Hooks are removed on exit.
    """
    seen = ActivationSummaries(layers)

    def keep_layer(name):
        def hook(_module, _inputs, output):
            seen.layers[name] = channel_summary(first_tensor(output))
        return hook

    def keep_codes(value):
        seen.codes = first_tensor(value).flatten(1).float()

    hooks = {name: keep_layer(name) for name in layers}
    pre = {}
    if codes_where == "input":
        pre[codes_module] = lambda _module, inputs: keep_codes(inputs)
    elif codes_module in hooks:  # one module, two jobs: one hook does both
        layer_hook = hooks[codes_module]

        def both(module, inputs, output):  # returns None: the output stays as it is
            layer_hook(module, inputs, output)
            keep_codes(output)

        hooks[codes_module] = both
    else:
        hooks[codes_module] = lambda _module, _inputs, output: keep_codes(output)  # None
    with forward_hooks(model, hooks, pre=pre):
        yield seen
