"""Forward hooks: register several at once and always remove them.

Extraction, model description, activation maps, receptive-field measurement
and the explanation methods all read intermediate tensors of a model. They
do it through `forward_hooks` (arbitrary per-module callbacks) or
`capture_tensors` (keep the first tensor a module returns or receives).
`capture_tensors(..., stop=True)` also ends the forward pass once every named
module has run, so a stage that reads a layer never runs the layers after it:
a head that accepts one input size only (``Flatten`` + ``Linear``) never sees
the other sizes a stage feeds (dream octaves), and the pass costs less.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from convscope.nn.layers import get_modules

__all__ = ["first_tensor", "forward_hooks", "capture_tensors", "stop_after", "logits_of",
           "logits_output"]


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


def logits_of(output) -> torch.Tensor:
    """The class scores inside a model's output: the tensor itself, a dict's ``logits``
    entry (else its first tensor), or a tuple's or list's first tensor."""
    if isinstance(output, Mapping):
        if isinstance(output.get("logits"), torch.Tensor):
            return output["logits"]
        output = list(output.values())
    try:
        return first_tensor(output)
    except TypeError:
        raise TypeError(f"the model's output ({type(output).__name__}) holds no tensor of class "
                        "scores; return a tensor, a tuple whose first item is one, or a dict "
                        "with a 'logits' tensor") from None


def logits_output(model: nn.Module) -> nn.Module:
    """``model``, its forward pass returning `logits_of` its output (a root forward hook),
    so that every stage reads a model with a dict or tuple output as (N, classes) logits.
    Layer names and the state dict are unchanged."""
    model.register_forward_hook(lambda _module, _inputs, output: logits_of(output))
    return model


class _ForwardStopped(Exception):
    """Raised by `stop_after`'s hook to leave the forward pass; never escapes `stop_after`."""


@contextlib.contextmanager
def stop_after(model: nn.Module, names: Sequence[str], key: str = "layers") -> Iterator[None]:
    """The forward pass run in the block ends once every module in ``names`` has run.

    The rest of the block is skipped, without error (what the block needs from the
    pass must come from hooks registered before this one, e.g. `capture_tensors`,
    whose hooks on the same module run first). A module called several times in one
    pass stops it at its first call. Without ``names`` the pass runs whole.
    """
    remaining: set[str] = set()

    def make(name):
        def hook(_module, _inputs, _output):
            remaining.discard(name)
            if not remaining:
                raise _ForwardStopped

        return hook

    try:
        with forward_hooks(model, {name: make(name) for name in names}, key=key):
            remaining.update(names)
            yield
    except _ForwardStopped:
        pass


@contextlib.contextmanager
def capture_tensors(model: nn.Module, names: Sequence[str], where: str = "output", *,
                    detach: bool = True, key: str = "layers",
                    stop: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Inside the block, a dict that fills with each module's ``output`` (or ``input``) tensor.

    A module called several times in one forward pass keeps its last tensor.
    ``detach=False`` keeps the autograd graph (for gradients w.r.t. a layer).
    ``stop=True`` (outputs only): the forward pass ends once every named module has
    run (`stop_after`), and the rest of the block is skipped; a module called several
    times then keeps its first tensor.
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
                       pre=hooks if where == "input" else None, key=key), \
            stop_after(model, names if stop and where == "output" else (), key=key):
        yield captured
