"""Receptive fields of a model's layers: analytic where possible, measured where not."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from torch import nn

from convscope.nn.receptive_field.analytic import analyse, as_layer_names, check_layer_names_or_root
from convscope.nn.receptive_field.geometry import ReceptiveField, check_input_size
from convscope.nn.receptive_field.measured import infer_field, linearised_copy

__all__ = ["receptive_fields"]


def _warn_measured(model: nn.Module, failures: dict[str, str]) -> None:
    """One warning per distinct reason, naming the layers it sends to measurement."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in failures.items():
        by_reason.setdefault(reason, []).append(name)
    for reason, names in by_reason.items():
        warnings.warn(
            f"receptive fields of {type(model).__name__} layer(s) {names} measured by gradient "
            f"instead: {reason}",
            stacklevel=3,
        )


def receptive_fields(
    model: nn.Module,
    layer_names: Sequence[str],
    input_size: tuple[int, int],
    in_channels: int = 3,
) -> dict[str, ReceptiveField]:
    """Receptive field of each layer: analytic, or measured for the layers that need it.

    model:       any nn.Module taking one (1, in_channels, h, w) image batch.
    layer_names: module names from ``model.named_modules()`` (``""``: the model's output).
    input_size:  (h, w) of the model input in pixels.

    A layer gets its exact analytic field unless the model cannot be traced or the layer's
    output depends on an op without a known rule; such layers (only those) are measured
    instead, with a warning: gradient boxes at a few positions give size, stride and start
    (see :func:`~convscope.nn.receptive_field.measured.infer_field`). The model is left
    unchanged.
    """
    names = as_layer_names(layer_names)
    check_layer_names_or_root(model, names)
    input_size = check_input_size(input_size)
    fields, failures = analyse(model, names, input_size, in_channels)
    if failures:
        _warn_measured(model, failures)
        linear = linearised_copy(model)
        for name in failures:
            fields[name] = infer_field(linear, name, input_size, in_channels)
    return {name: fields[name] for name in names}
