"""Analytic receptive fields: trace the model with torch.fx and propagate fields node by node.

The traced graph runs once on a blank image (so every rule sees concrete shapes); each
node gets a :class:`~convscope.nn.receptive_field.values.FieldValue` from the rules in
:mod:`convscope.nn.receptive_field.rules`. A node whose op has no rule (or whose rule
cannot read it) gets an *unknown* field, and so does every node that depends on it:
only the layers downstream of that op lose their analytic field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.fx
from torch import nn

from convscope.nn.layers import check_layer_names
from convscope.nn.receptive_field.geometry import IDENTITY_FIELD, ReceptiveField, check_input_size
from convscope.nn.receptive_field.rules import field_of_call
from convscope.nn.receptive_field.values import FieldValue, NotAnalysable, OpCall, tensors_in

__all__ = ["AnalyticResult", "analyse", "analytic_receptive_fields", "as_layer_names",
           "check_layer_names_or_root"]


def as_layer_names(layer_names) -> list[str]:
    """A list of layer names from one name or a sequence."""
    if isinstance(layer_names, str):
        return [layer_names]
    return list(layer_names)


def check_layer_names_or_root(model: nn.Module, names: Sequence[str]) -> None:
    """LayerNameError for a name that is not a module; ``""`` (the model's output) passes."""
    check_layer_names(model, [name for name in names if name != ""])


class _Unknown(NamedTuple):
    """Field of a value that depends on an op without a usable rule; ``reason`` says which."""

    reason: str


class _RecordingTracer(torch.fx.Tracer):
    """fx tracer that remembers the output node of every module call (leaf or container)."""

    def __init__(self):
        super().__init__()
        self.module_outputs: dict[str, torch.fx.Node] = {}

    def call_module(self, m, forward, args, kwargs):
        try:
            name = self.path_of_module(m)
        except NameError:
            return super().call_module(m, forward, args, kwargs)
        if not self.is_leaf_module(m, name):
            forward = m.forward  # trace through without firing the module's own hooks
        out = super().call_module(m, forward, args, kwargs)
        node = _first_proxy_node(out)
        if node is not None:
            self.module_outputs.setdefault(name, node)
        return out


def _first_proxy_node(value) -> torch.fx.Node | None:
    if isinstance(value, torch.fx.Proxy):
        return value.node
    if isinstance(value, torch.fx.Node):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            node = _first_proxy_node(item)
            if node is not None:
                return node
    return None


class _FieldInterpreter(torch.fx.Interpreter):
    """Runs the traced graph on a blank image and attaches a field to every node.

    fields: node -> FieldValue, None (does not depend on the image) or _Unknown.
    """

    def __init__(self, gm: torch.fx.GraphModule):
        super().__init__(gm)
        self.fields: dict[torch.fx.Node, FieldValue | _Unknown | None] = {}
        self._seen_input = False

    def call_module(self, target, args, kwargs):
        # call forward directly: the user's hooks must not fire
        return self.fetch_attr(target).forward(*args, **kwargs)

    def run_node(self, n: torch.fx.Node):
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        value = getattr(self, n.op)(n.target, args, kwargs)
        try:
            self.fields[n] = self._propagate(n, args, kwargs, value)
        except NotAnalysable as reason:
            self.fields[n] = _Unknown(str(reason))
        except Exception as error:  # an op our rules misread: measure what depends on it
            self.fields[n] = _Unknown(f"cannot propagate the field through {n.op} {n.target!r}: "
                                      f"{type(error).__name__}: {error}")
        return value

    def _propagate(self, n, args, kwargs, value) -> FieldValue | _Unknown | None:
        if n.op == "placeholder":
            if self._seen_input or not isinstance(value, torch.Tensor):
                return None
            self._seen_input = True
            ndim = value.dim()
            return FieldValue(IDENTITY_FIELD, (ndim - 2, ndim - 1), tuple(value.shape))
        if n.op in ("get_attr", "output") or not tensors_in(value):
            return None
        unknown = [f for f in map(self.fields.get, n.all_input_nodes) if isinstance(f, _Unknown)]
        if unknown:
            return unknown[0]
        module = self.fetch_attr(n.target) if n.op == "call_module" else None
        call = OpCall(n, args, kwargs, value, self.fields, module)
        if not call.inputs:
            return None  # does not depend on the image (constants, parameters)
        return field_of_call(call)


class _Restored:
    """Context: model in eval mode, training flags restored afterwards."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        for m, flag in self.flags:
            m.training = flag
        return False


def _trace(model: nn.Module) -> tuple[torch.fx.GraphModule, dict[str, torch.fx.Node]]:
    """The traced graph and the output node of every module call ("" for the model)."""
    tracer = _RecordingTracer()
    try:
        graph = tracer.trace(model)
    except Exception as error:  # any tracing failure means "measure instead"
        raise NotAnalysable(
            f"torch.fx cannot trace {type(model).__name__}: {type(error).__name__}: {error}"
        ) from error
    gm = torch.fx.GraphModule(tracer.root, graph)
    outputs = dict(tracer.module_outputs)
    output_node = next(n for n in graph.nodes if n.op == "output")
    root_out = _first_proxy_node(output_node.args[0])
    if root_out is not None:
        outputs[""] = root_out
    return gm, outputs


def _model_tensor_kind(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


class AnalyticResult(NamedTuple):
    """fields: layer -> exact field; failures: layer -> why it has none (measure it instead)."""

    fields: dict[str, ReceptiveField]
    failures: dict[str, str]


def _run_fields(model: nn.Module, gm: torch.fx.GraphModule, input_size: tuple[int, int],
                in_channels: int) -> dict:
    """Node -> field, from one eval-mode run of ``gm`` on a blank (1, C, h, w) image."""
    device, dtype = _model_tensor_kind(model)
    image = torch.zeros(1, in_channels, *input_size, device=device, dtype=dtype)
    interpreter = _FieldInterpreter(gm)
    with _Restored(model), torch.no_grad():
        interpreter.run(image)
    return interpreter.fields


def analyse(model: nn.Module, layer_names: Sequence[str], input_size: tuple[int, int],
            in_channels: int = 3) -> AnalyticResult:
    """Analytic field of every layer that has one, and the reason for every layer that has not.

    Layer names are checked by the caller. ValueError when a layer is not called in
    forward() or its output does not depend on the image.
    """
    try:
        gm, module_outputs = _trace(model)
    except NotAnalysable as reason:
        return AnalyticResult({}, {name: str(reason) for name in layer_names})
    unused = [name for name in layer_names if name not in module_outputs]
    if unused:
        raise ValueError(f"layer(s) {unused} of {type(model).__name__} are not called in forward()")
    node_fields = _run_fields(model, gm, input_size, in_channels)
    fields, failures = {}, {}
    for name in layer_names:
        field = node_fields.get(module_outputs[name])
        if field is None:
            raise ValueError(f"the output of layer {name!r} does not depend on the input image")
        if isinstance(field, _Unknown):
            failures[name] = field.reason
        else:
            fields[name] = field.rf
    return AnalyticResult(fields, failures)


def analytic_receptive_fields(
    model: nn.Module,
    layer_names: Sequence[str],
    input_size: tuple[int, int],
    in_channels: int = 3,
) -> dict[str, ReceptiveField]:
    """Receptive field of each layer by tracing ``model`` with torch.fx.

    model:       any nn.Module taking one (1, in_channels, h, w) image batch.
    layer_names: module names from ``model.named_modules()``; a container (e.g.
                 ``"layer4"``) stands for its output, ``""`` for the model's output.
    input_size:  (h, w) of the model input in pixels; needed by global / adaptive pooling.

    Raises LayerNameError (a ValueError) for unknown layer names, and RuntimeError when the
    model cannot be traced or a layer depends on an op without a known rule (use
    :func:`~convscope.nn.receptive_field.receptive_fields` to measure those instead).
    Runs one forward pass of a blank image in eval mode; the model's modes, weights and
    hooks are left as they were (hooks do not fire).
    """
    names = as_layer_names(layer_names)
    check_layer_names_or_root(model, names)
    input_size = check_input_size(input_size)
    fields, failures = analyse(model, names, input_size, in_channels)
    if failures:
        reason = next(iter(failures.values()))
        raise NotAnalysable(f"no analytic receptive field for layer(s) {list(failures)}: {reason}")
    return fields
