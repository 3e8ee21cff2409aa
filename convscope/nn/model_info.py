"""What the analysed layers look like: output shapes and receptive fields."""

from __future__ import annotations

import torch
from torch import nn

from convscope.nn.layers import check_layer_names
from convscope.nn.models import codes_module_name
from convscope.data.preprocess import input_hw
from convscope.nn.receptive_field import receptive_fields

__all__ = ["layer_output_shapes", "describe_model", "write_model_info"]


@torch.no_grad()
def layer_output_shapes(model: nn.Module, layer_names, input_size: tuple[int, int],
                        in_channels: int = 3) -> dict[str, list[int]]:
    """Per layer, the output shape of one image: [C, H, W] ([C, 1, 1] for flat outputs)."""
    modules = dict(model.named_modules())
    shapes: dict[str, list[int]] = {}
    handles = []
    for name in layer_names:
        def hook(_module, _inputs, output, name=name):
            shape = list(output.shape[1:])
            shapes[name] = (shape + [1, 1])[:3] if len(shape) < 3 else shape[:3]
        handles.append(modules[name].register_forward_hook(hook))
    param = next(model.parameters(), None)
    device = param.device if param is not None else "cpu"
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(1, in_channels, *input_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return shapes


@torch.no_grad()
def _codes_dim(model: nn.Module, module_name: str, where: str, input_size, in_channels) -> int:
    module = dict(model.named_modules())[module_name]
    dims = []
    if where == "input":
        handle = module.register_forward_pre_hook(
            lambda _m, inputs: dims.append(inputs[0].flatten(1).shape[1]))
    else:
        handle = module.register_forward_hook(
            lambda _m, _i, output: dims.append(output.flatten(1).shape[1]))
    try:
        model(torch.zeros(1, in_channels, *input_size))
    finally:
        handle.remove()
    return int(dims[0])


def describe_model(model: nn.Module, config: dict) -> dict:
    """JSON-able description of the model for the config's layers and preprocessing.

    Raises `convscope.nn.models.ModelError` for a layer name that is not a module.
    """
    layers = list(config["layers"])
    check_layer_names(model, layers)
    size = input_hw(config["preprocess"])
    channels = int(config["preprocess"]["channels"])
    model = model.cpu().eval()
    shapes = layer_output_shapes(model, layers, size, channels)
    fields = receptive_fields(model, layers, size, channels)
    codes_module, codes_where = codes_module_name(model, config.get("codes_layer"))
    logits = model(torch.zeros(1, channels, *size))
    return {
        "input_size": list(size),
        "in_channels": channels,
        "num_classes": int(logits.shape[1]),
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "layers": {name: {"shape": shapes[name], "receptive_field": fields[name].to_dict()}
                   for name in layers},
        "codes": {"module": codes_module, "where": codes_where,
                  "dim": _codes_dim(model, codes_module, codes_where, size, channels)},
        "module_names": [name for name, _ in model.named_modules() if name],
    }


def write_model_info(config: dict, out_json, weights_file=None) -> dict:
    """Load the configured model, describe it and write the JSON to ``out_json``."""
    import json
    from pathlib import Path

    from convscope.config.sections import ModelConfig
    from convscope.nn.models import load_model, model_identity

    model_cfg = ModelConfig.from_dict(config["model"])
    model = load_model(model_cfg, weights_file, in_channels=int(config["preprocess"]["channels"]))
    info = describe_model(model, config)
    info["model"] = model_identity(model_cfg, weights_file)
    Path(out_json).parent.mkdir(parents=True, exist_ok=True)
    Path(out_json).write_text(json.dumps(info, indent=2))
    for name, layer in info["layers"].items():
        field = layer["receptive_field"]
        print(f"{name}: output {layer['shape']}, receptive field {field['size']} "
              f"stride {field['stride']} start {field['start']}")
    return info
