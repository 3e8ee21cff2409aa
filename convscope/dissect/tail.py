"""The network cut at one layer: a head that computes the layer's output (and every value
a later operation still needs, such as a residual branch), and a tail that runs only the
layers above it. Built with ``torch.fx``; `split_at` returns None when the model cannot be
traced or calls the layer more than once, and the caller then runs whole forward passes.
"""

from __future__ import annotations

import logging

import torch
import torch.fx as fx
from torch import nn

__all__ = ["SplitModel", "split_at"]

logger = logging.getLogger(__name__)


class SplitModel:
    """``head(x) -> (layer output, *others)``; ``tail(layer output, *others) -> logits``."""

    def __init__(self, head: fx.GraphModule, tail: fx.GraphModule):
        self.head, self.tail = head, tail


def _descendants(graph: fx.Graph, start: fx.Node) -> set[fx.Node]:
    found = {start}
    for node in graph.nodes:
        if any(arg in found for arg in node.all_input_nodes):
            found.add(node)
    return found


def _build(gm: fx.GraphModule, node: fx.Node) -> SplitModel | None:
    below = _descendants(gm.graph, node)
    frontier = []
    for n in gm.graph.nodes:
        if n in below and n is not node:
            frontier += [a for a in n.all_input_nodes
                         if a not in below and a.op != "get_attr" and a not in frontier]
    tail_graph, env = fx.Graph(), {}
    env[node] = tail_graph.placeholder("layer_output")
    for i, value in enumerate(frontier):
        env[value] = tail_graph.placeholder(f"kept_{i}")
    for n in gm.graph.nodes:
        if n.op == "get_attr" and any(user in below for user in n.users):
            env[n] = tail_graph.node_copy(n, lambda a: env[a])
        elif n in below and n is not node:
            env[n] = tail_graph.node_copy(n, lambda a: env[a])
    head_graph, head_env = fx.Graph(), {}
    for n in gm.graph.nodes:
        if n.op == "output":
            break
        head_env[n] = head_graph.node_copy(n, lambda a: head_env[a])
    head_graph.output((head_env[node], *[head_env[v] for v in frontier]))
    head = fx.GraphModule(gm, head_graph)
    head.graph.eliminate_dead_code()
    head.recompile()
    return SplitModel(head, fx.GraphModule(gm, tail_graph))


class _Tracer(fx.Tracer):
    """Keeps module ``layer`` whole (a block such as ``layer2.0`` becomes one call)."""

    def __init__(self, layer: str):
        super().__init__()
        self.layer = layer

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return qualified_name == self.layer or super().is_leaf_module(module, qualified_name)


@torch.no_grad()
def split_at(model: nn.Module, layer: str, example: torch.Tensor) -> SplitModel | None:
    """The model cut after module ``layer``, checked on ``example`` inputs (the tail of the
    head's outputs gives the model's logits); None when that cannot be done."""
    try:
        gm = fx.GraphModule(model, _Tracer(layer).trace(model))
        calls = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == layer]
        if len(calls) != 1:
            logger.info("ablation: %s is called %d times in the traced model: whole forward "
                        "passes", layer, len(calls))
            return None
        split = _build(gm, calls[0])
        outputs = split.head(example)
        logits = split.tail(*outputs)
        if not torch.allclose(logits, model(example), rtol=1e-4, atol=1e-5):
            logger.info("ablation: the model cut at %s does not give its logits: whole forward "
                        "passes", layer)
            return None
        return split
    except Exception as exc:  # noqa: BLE001 - any tracing failure means: no cut, say so
        logger.info("ablation: cannot cut the model at %s (%s): whole forward passes", layer, exc)
        return None
