"""Forward hooks: register several at once and always remove them.

Extraction, model description, activation maps, receptive-field measurement
and the explanation methods all read intermediate tensors of a model. They
do it through `forward_hooks` (arbitrary per-module callbacks) or
`capture_tensors` (keep the first tensor a module returns or receives).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from convscope.nn.layers import get_modules

__all__ = ["first_tensor", "forward_hooks", "capture_tensors"]


def first_tensor(value) -> torch.Tensor:
    """The tensor itself, or the first tensor inside a tuple/list output."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            if isinstance(item, torch.Tensor):
                return item
    raise TypeError(f"module output of type {type(value).__name__} holds no tensor")


@contextlib.contextmanager
def forward_hooks(model: nn.Module, hooks: Mapping[str, Callable], *, pre: Mapping[str, Callable]
                  | None = None, key: str = "layers") -> Iterator[None]:
    """Register ``hooks`` (name -> ``hook(module, inputs, output)``) and ``pre`` hooks
    (name -> ``hook(module, inputs)``) for the ``with`` block; removed on exit, even on error.

    Names are checked with `convscope.nn.layers.check_layer_names` (``key`` names
    the config key in the message).
    """
    pre = dict(pre or {})
    modules = get_modules(model, list(hooks) + [n for n in pre if n not in hooks], key=key)
    handles = []
    try:
        for name, hook in hooks.items():
            handles.append(modules[name].register_forward_hook(hook))
        for name, hook in pre.items():
            handles.append(modules[name].register_forward_pre_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def capture_tensors(model: nn.Module, names: Sequence[str], where: str = "output", *,
                    detach: bool = True, key: str = "layers") -> Iterator[dict[str, torch.Tensor]]:
    """Inside the block, a dict that fills with each module's ``output`` (or ``input``) tensor.

    A module called several times in one forward pass keeps its last tensor.
    ``detach=False`` keeps the autograd graph (for gradients w.r.t. a layer).
    """
    if where not in ("output", "input"):
        raise ValueError(f"where must be 'output' or 'input', not {where!r}")
    captured: dict[str, torch.Tensor] = {}

    def make(name):
        def keep(value):
            tensor = first_tensor(value)
            captured[name] = tensor.detach() if detach else tensor

        if where == "output":
            return lambda _module, _inputs, output: keep(output)
        return lambda _module, inputs: keep(inputs)

    hooks = {name: make(name) for name in names}
    with forward_hooks(model, hooks if where == "output" else {},
                       pre=hooks if where == "input" else None, key=key):
        yield captured
