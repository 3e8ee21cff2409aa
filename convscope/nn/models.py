"""Build the model named in the config, load its weights, resolve layer names.

Three kinds of model:

- ``demo``: `DemoCNN`, a small CNN trained by the workflow on the demo data;
- ``torchvision``: any classification model of ``torchvision.models`` by name,
  with weights from a file or torchvision's own weights if already in the
  local cache (nothing is downloaded);
- ``timm``: a timm architecture by name (`convscope.nn.zoo`), never pretrained,
  with weights from a file;
- ``custom``: ``package.module:factory`` returning an ``nn.Module``, plus a
  checkpoint file.

Weights files are ``.safetensors`` or torch files for every kind; a torchvision model's
``model.weights`` may instead name its weights (``IMAGENET1K_V2``), read from the local
torch cache.
"""

from __future__ import annotations

import importlib
import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from convscope.config.auto import names_weights_enum
from convscope.config.sections import ModelConfig
from convscope.nn.device import resolve_device
from convscope.nn.hooks import logits_output
from convscope.nn.layers import check_layer_names, module_names
from convscope.nn.zoo import ZooError, build_timm, cached_weights_file, torchvision_weights
from convscope.store.hashes import file_sha256

__all__ = [
    "ModelError",
    "DemoCNN",
    "build_model",
    "load_checkpoint",
    "load_model",
    "load_stage_model",
    "codes_module_name",
    "model_identity",
]


class ModelError(ValueError):
    """A model, checkpoint or layer name in the config is not usable."""


class DemoCNN(nn.Module):
    """A small four-block CNN for the demo dataset.

    conv5x5(32) - bn - relu - maxpool2 - conv3x3(64) - bn - relu - maxpool2 -
    conv3x3(128) - bn - relu - maxpool2 - conv3x3(128) - bn - relu - global
    average pool - dropout - fc. Input (N, in_channels, H, W) with H, W >= 16.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 5, padding=2)
        self.bn1 = nn.BatchNorm2d(32)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(128)
        self.relu3 = nn.ReLU()
        self.pool3 = nn.MaxPool2d(2)
        self.conv4 = nn.Conv2d(128, 128, 3, padding=1)
        self.bn4 = nn.BatchNorm2d(128)
        self.relu4 = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) images -> (N, num_classes) logits."""
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        x = self.pool3(self.relu3(self.bn3(self.conv3(x))))
        x = self.relu4(self.bn4(self.conv4(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(self.dropout(x))


def _import_factory(spec: str):
    """The callable named by ``"package.module:function"``."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"model.factory {spec!r}: cannot import module {module_name!r} ({exc}); "
                         "is it installed or on PYTHONPATH?") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ModelError(f"model.factory {spec!r}: module {module_name!r} has no attribute "
                         f"{attr!r}") from None


def build_model(model_cfg: ModelConfig, num_classes: int | None = None,
                in_channels: int = 3) -> nn.Module:
    """An untrained instance of the configured architecture.

    ``num_classes`` is used when ``model.num_classes`` is null.
    """
    kind = model_cfg.kind
    n_classes = model_cfg.num_classes or num_classes
    if kind == "demo":
        return DemoCNN(num_classes=n_classes or 10, in_channels=in_channels)
    if kind == "torchvision":
        import torchvision

        name = model_cfg.name
        valid = torchvision.models.list_models(module=torchvision.models)
        if name not in valid:
            raise ModelError(f"model.name {name!r} is not a torchvision classification model; "
                             f"valid names include: {', '.join(sorted(valid))}")
        kwargs = dict(model_cfg.factory_kwargs or {})
        kwargs.setdefault("num_classes", model_cfg.num_classes or 1000)
        return torchvision.models.get_model(name, weights=None, **kwargs)
    if kind == "timm":
        try:
            return build_timm(model_cfg.name, n_classes, in_channels, model_cfg.factory_kwargs)
        except ZooError as exc:
            raise ModelError(str(exc)) from None
    if kind == "custom":
        spec = model_cfg.factory
        if not spec:
            raise ModelError('model.kind is "custom" but model.factory is not set; '
                             'give "package.module:function"')
        factory = _import_factory(spec)
        model = factory(**(model_cfg.factory_kwargs or {}))
        if not isinstance(model, nn.Module):
            raise ModelError(f"model.factory {spec!r} returned {type(model).__name__}, "
                             "not a torch.nn.Module")
        return model
    raise ModelError(f"model.kind {kind!r} is unknown; valid: demo, torchvision, timm, custom")


def _state_dict_from(obj, path) -> dict:
    """The state dict inside a loaded checkpoint object (a module, a dict of tensors or a wrapper)."""
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "net"):
            if key in obj and isinstance(obj[key], (dict, nn.Module)):
                return _state_dict_from(obj[key], path)
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise ModelError(f"checkpoint {path} holds no state dict (expected a dict of tensors, or one "
                     "under 'state_dict' / 'model')")


def _read_weights(path: Path):
    """The object in a weights file: ``.safetensors`` (a dict of tensors) or a torch file."""
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ModelError(f"model weights file {path} is a .safetensors file, which needs the "
                             "safetensors package: pip install safetensors") from None
        reader = load_file
    else:
        def reader(p, device):
            return torch.load(p, map_location=device, weights_only=True)
    try:
        return reader(path, device="cpu")
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise ModelError(f"cannot read model weights file {path}: {exc}") from exc


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a state dict file into ``model``; mismatches raise `ModelError` naming the keys."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model weights file {path} does not exist")
    state = _state_dict_from(_read_weights(path), path)
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = OrderedDict((k[len("module."):], v) for k, v in state.items())
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                   for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:10])}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:10])}")
        if wrong_shape:
            parts.append(f"shape mismatches ({len(wrong_shape)}): {'; '.join(wrong_shape[:10])}")
        raise ModelError(f"checkpoint {path} does not fit the configured model: "
                         + " | ".join(parts))
    model.load_state_dict(state)
    return model


def _weights_path(model_cfg: ModelConfig, weights_file):
    """The weights file to read: ``weights_file``; for a torchvision model, its weights named
    by enum (or its default ones when none is given) from the local torch cache."""
    if model_cfg.kind != "torchvision":
        return weights_file
    if weights_file is None:
        return _torchvision_cached_weights(model_cfg.name)
    if names_weights_enum(weights_file):
        try:
            return cached_weights_file(torchvision_weights(model_cfg.name, str(weights_file)))
        except ZooError as exc:
            raise ModelError(str(exc)) from None
    return weights_file


def _torchvision_cached_weights(name: str):
    """torchvision's default weights for ``name`` if the local cache has them."""
    import torchvision

    weights_enum = torchvision.models.get_model_weights(name)
    weights = weights_enum.DEFAULT
    filename = os.path.basename(weights.url)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not cached.exists():
        raise ModelError(
            f"model.weights is null, so torchvision's weights for {name!r} are used, but they are "
            f"not in the local cache ({cached}); convscope never downloads. Put the file there or "
            "set model.weights to a state-dict file.")
    return cached


def load_model(model_cfg: ModelConfig, weights_file: str | os.PathLike | None, *,
               in_channels: int = 3, device: str | torch.device = "cpu",
               num_classes: int | None = None) -> nn.Module:
    """The configured model with its weights, in eval mode on ``device``.

    ``weights_file`` is the checkpoint to load (the workflow passes
    ``model.weights``, or the demo model it trained); None takes torchvision's
    cached weights for a torchvision model and is an error otherwise. The demo
    model's class count is read from its checkpoint.
    """
    if num_classes is None and model_cfg.kind == "demo" and not model_cfg.num_classes:
        num_classes = _demo_num_classes(weights_file)
    model = build_model(model_cfg, num_classes=num_classes, in_channels=in_channels)
    path = _weights_path(model_cfg, weights_file)
    if path is None:
        raise ModelError("model.weights is not set; give the checkpoint file of your model")
    load_checkpoint(model, path)
    return model.eval().to(device)


def load_stage_model(model_cfg: ModelConfig, weights_file: str | os.PathLike | None,
                     preprocess, device: str | torch.device = "cpu",
                     key: str = "device") -> tuple[nn.Module, torch.device]:
    """The model a stage works with: `load_model` for ``preprocess.channels`` input channels,
    in eval mode, its parameters without gradients (a stage never trains it).

    ``device``: a ``torch.device``, or its config name (``auto | cpu | cuda[:N]``, from
    config ``key``, named when it does not exist). Returns ``(model, device)``.
    """
    where = device if isinstance(device, torch.device) else resolve_device(device, key)
    model = load_model(model_cfg, weights_file or None, in_channels=int(preprocess.channels),
                       device=where)
    return logits_output(model).requires_grad_(False), where


def _demo_num_classes(path: str | os.PathLike | None) -> int | None:
    """Output classes of a demo checkpoint (rows of ``fc.weight``); None without one."""
    if path and Path(path).exists():
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = _state_dict_from(state, path)
        if "fc.weight" in state:
            return int(state["fc.weight"].shape[0])
    return None


def codes_module_name(model: nn.Module, codes_layer: str | None) -> tuple[str, str]:
    """Where the CNN code is read: ``(module_name, "input" | "output")``.

    With ``codes_layer`` null, the input of the last ``nn.Linear`` (the
    penultimate representation); else the output of the named module.
    """
    if codes_layer:
        check_layer_names(model, [codes_layer], key="codes_layer")
        return codes_layer, "output"
    linear = module_names(model, nn.Linear)
    if not linear:
        raise ModelError("codes_layer is null but the model has no nn.Linear layer to take the "
                         "penultimate code from; set codes_layer to a module name")
    return linear[-1], "input"


def model_identity(model_cfg: ModelConfig, weights_file: str | os.PathLike | None) -> dict:
    """What identifies the model a shard came from: kind, name, weights hash."""
    path = _weights_path(model_cfg, weights_file)
    return {
        "kind": model_cfg.kind,
        "name": model_cfg.name or model_cfg.factory or "DemoCNN",
        "weights_sha256": file_sha256(path) if path and Path(path).exists() else None,
    }
