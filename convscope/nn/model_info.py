"""What the analysed layers look like: output shapes, receptive fields, the CNN code.

`describe_model` runs one forward pass of a zero image through the model and
reads the analysed layers and the code module with
`convscope.nn.hooks.capture_tensors`; `write_model_info` loads the configured
model and writes that description as JSON (``results/model/model_info.json``
in the workflow), which extraction and the report read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from convscope.config.sections import ModelConfig, PreprocessConfig
from convscope.data.preprocess import as_preprocess_config, input_hw
from convscope.nn.hooks import capture_tensors
from convscope.nn.layers import check_layer_names, module_names
from convscope.nn.models import codes_module_name, load_stage_model, model_identity
from convscope.nn.receptive_field import receptive_fields
from convscope.store.atomic import write_text

__all__ = ["layer_output_shapes", "describe_model", "write_model_info"]


def _chw(shape: Sequence[int]) -> list[int]:
    """Shape of one image's output -> [C, H, W]; flat (C,) becomes [C, 1, 1]."""
    shape = list(shape)
    return (shape + [1, 1])[:3] if len(shape) < 3 else shape[:3]


def _zeros_input(model: nn.Module, input_size: tuple[int, int], in_channels: int) -> torch.Tensor:
    """(1, in_channels, H, W) zeros on the device of the model's first parameter (CPU if none)."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else "cpu"
    return torch.zeros(1, in_channels, *input_size, device=device)


@torch.no_grad()
def layer_output_shapes(model: nn.Module, layer_names: Sequence[str], input_size: tuple[int, int],
                        in_channels: int = 3) -> dict[str, list[int]]:
    """Per layer, the output shape of one image: [C, H, W] ([C, 1, 1] for flat outputs).

    ``input_size`` is the model input (H, W) in pixels. The model runs in eval
    mode and is put back in its previous mode.
    """
    was_training = model.training
    try:
        model.eval()
        with capture_tensors(model, list(layer_names)) as outputs:
            model(_zeros_input(model, input_size, in_channels))
    finally:
        model.train(was_training)
    return {name: _chw(outputs[name].shape[1:]) for name in layer_names}


def _geometry(preprocess: PreprocessConfig | Mapping) -> tuple[tuple[int, int], int]:
    """Model input (H, W) in pixels and channel count of the preprocessing section."""
    preprocess = as_preprocess_config(preprocess)
    return input_hw(preprocess), int(preprocess.channels)


@torch.no_grad()
def _forward_description(model: nn.Module, layers: Sequence[str], codes: tuple[str, str],
                         size: tuple[int, int], channels: int) -> dict:
    """One forward pass of a zero image: layer shapes, class count and code length."""
    codes_module, codes_where = codes
    with capture_tensors(model, list(layers)) as outputs, \
            capture_tensors(model, [codes_module], codes_where, key="codes_layer") as code:
        logits = model(torch.zeros(1, channels, *size))
    return {
        "shapes": {name: _chw(outputs[name].shape[1:]) for name in layers},
        "num_classes": int(logits.shape[1]),
        "codes_dim": int(code[codes_module].flatten(1).shape[1]),
    }


def describe_model(model: nn.Module, preprocess: PreprocessConfig | Mapping,
                   layers: Sequence[str], codes_layer: str | None) -> dict:
    """JSON-able description of ``model`` for the analysed ``layers``.

    Keys: ``input_size`` [H, W] and ``in_channels`` (from ``preprocess``),
    ``num_classes``, ``n_parameters``, ``layers`` (name -> ``shape`` [C, H, W]
    and ``receptive_field``, see `convscope.nn.receptive_field`), ``codes``
    (``module``, ``where`` = ``input``/``output``, ``dim`` = code length, see
    `convscope.nn.models.codes_module_name`) and ``module_names``. The model is
    moved to the CPU and put in eval mode.

    Raises `convscope.nn.layers.LayerNameError` for a layer name that is not a module.
    """
    layers = list(layers)
    check_layer_names(model, layers)
    size, channels = _geometry(preprocess)
    model = model.cpu().eval()
    fields = receptive_fields(model, layers, size, channels)
    codes = codes_module_name(model, codes_layer)
    found = _forward_description(model, layers, codes, size, channels)
    return {
        "input_size": list(size),
        "in_channels": channels,
        "num_classes": found["num_classes"],
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "layers": {name: {"shape": found["shapes"][name], "receptive_field": fields[name].to_dict()}
                   for name in layers},
        "codes": {"module": codes[0], "where": codes[1], "dim": found["codes_dim"]},
        "module_names": module_names(model),
    }


def write_model_info(model: ModelConfig, preprocess: PreprocessConfig, layers: Sequence[str],
                     codes_layer: str | None, weights_file: str | os.PathLike | None,
                     out_json: str | os.PathLike) -> dict:
    """Load the configured model from ``weights_file``, describe it and write ``out_json``.

    ``weights_file`` None means torchvision's cached weights (see
    `convscope.nn.models.load_stage_model`). The JSON is `describe_model`'s
    description plus ``model`` (`convscope.nn.models.model_identity`), written
    atomically; one line per layer is printed. Returns the description.
    """
    network = load_stage_model(model, weights_file, preprocess)[0]
    info = describe_model(network, preprocess, layers, codes_layer)
    info["model"] = model_identity(model, weights_file)
    write_text(out_json, json.dumps(info, indent=2))
    for name, layer in info["layers"].items():
        field = layer["receptive_field"]
        print(f"{name}: output {layer['shape']}, receptive field {field['size']} "
              f"stride {field['stride']} start {field['start']}")
    return info
