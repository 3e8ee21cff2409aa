"""The models people already have: timm architectures, torchvision weights by name, and
the preprocessing that comes with them.

- `build_timm`: a ``timm`` architecture by name, never with pretrained weights (the
  weights come from ``model.weights``); an unknown name lists the closest ones;
- `torchvision_weights`: a torchvision weights enum named as ``ResNet50_Weights.IMAGENET1K_V2``
  or ``IMAGENET1K_V2`` (of ``model.name``), and `cached_weights_file`, the file of the
  local torch cache (``$TORCH_HOME/hub/checkpoints``) that holds it: never downloaded;
- `model_facts`: what the model brings along (``preprocess: auto``'s resize, crop, mean,
  std and input size; the class names of torchvision weights; the weights file), as plain
  JSON values. ``python -m convscope.nn.zoo`` prints them for the model section given as
  JSON on stdin: `convscope.config.auto` runs it in a child process so that reading a
  config never imports torch.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import sys
from pathlib import Path

from convscope.config.auto import names_weights_enum, no_transforms_message

__all__ = ["ZooError", "build_timm", "torchvision_weights",
           "cached_weights_file", "model_facts"]



class ZooError(ValueError):
    """A timm name, a torchvision weights name or the model's own preprocessing is not usable."""


def _timm():
    try:
        import timm
    except ImportError:
        raise ZooError("model.kind 'timm' needs the timm package, which is not installed: "
                       "pip install 'convscope[timm]' (or pip install timm safetensors)") from None
    return timm


def build_timm(name: str | None, num_classes: int | None = None, in_channels: int = 3,
               factory_kwargs: dict | None = None):
    """An untrained timm model ``name`` (``pretrained=False``: nothing is downloaded)."""
    timm = _timm()
    if not name:
        raise ZooError("model.kind is 'timm' but model.name is not set; give a timm model name "
                       "(timm.list_models(), e.g. resnet50 or convnext_tiny)")
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.5)
        hint = f"; closest names: {', '.join(close)}" if close else ""
        raise ZooError(f"model.name {name!r} is not a timm model{hint} "
                       "(timm.list_models() lists them all)")
    kwargs = dict(factory_kwargs or {})
    if num_classes:
        kwargs.setdefault("num_classes", num_classes)
    kwargs.setdefault("in_chans", in_channels)
    return timm.create_model(name, pretrained=False, **kwargs)


def torchvision_weights(model_name: str | None, weights: str):
    """The torchvision weights enum member ``weights`` names (for ``model.name``)."""
    import torchvision

    qualified = "." in weights
    try:
        if qualified:
            return torchvision.models.get_weight(weights)
        if not model_name:
            raise ZooError(f"model.weights {weights!r} names torchvision weights without their "
                           "model: set model.name, or write e.g. ResNet50_Weights.IMAGENET1K_V2")
        enum = torchvision.models.get_model_weights(model_name)
    except (ValueError, KeyError, AttributeError) as exc:
        raise ZooError(f"model.weights {weights!r}: not a torchvision weights name ({exc})") \
            from None
    members = [m.name for m in enum]
    if weights not in members:
        raise ZooError(f"model.weights {weights!r} is not one of {enum.__name__}'s weights; "
                       f"valid: {', '.join(members)} (or a weights file)")
    return enum[weights]


def cached_weights_file(weights) -> Path:
    """Where the local torch cache holds ``weights`` (a torchvision enum member); `ZooError`
    naming the file expected and the folder when it is not there (nothing is downloaded)."""
    import torch

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    path = folder / os.path.basename(weights.url)
    if not path.is_file():
        raise ZooError(
            f"model.weights {type(weights).__name__}.{weights.name}: the file "
            f"{path.name} is not in the local torch cache {folder} (convscope never downloads); "
            f"copy it there from a machine where torchvision downloaded it (or from "
            f"{weights.url}), or set $TORCH_HOME to the folder above hub/checkpoints")
    return path


def _torchvision_preprocess(weights) -> dict:
    transform = weights.transforms()
    crop, resize = list(transform.crop_size), list(transform.resize_size)
    return {"input_size": int(crop[0]), "resize": int(resize[0]), "crop": "center",
            "mean": [float(v) for v in transform.mean], "std": [float(v) for v in transform.std],
            "interpolation": str(transform.interpolation.value),
            "source": f"torchvision {type(weights).__name__}.{weights.name}.transforms()"}


def _timm_preprocess(model_cfg: dict) -> dict:
    timm = _timm()
    from timm.data import resolve_data_config

    model = build_timm(model_cfg["name"], model_cfg.get("num_classes"),
                       factory_kwargs=model_cfg.get("factory_kwargs"))
    data = resolve_data_config({}, model=model)
    _, height, width = data["input_size"]
    mode = data.get("crop_mode", "center")
    if mode not in ("center", "squash"):
        raise ZooError(f"timm model {model_cfg['name']!r} uses crop_mode {mode!r}, which "
                       "convscope does not reproduce; set preprocess.resize, crop, input_size, "
                       "mean and std explicitly")
    return {"input_size": [int(height), int(width)] if height != width else int(height),
            "resize": int(math.floor(min(height, width) / float(data["crop_pct"]))),
            "crop": "center" if mode == "center" else "none",
            "mean": [float(v) for v in data["mean"]], "std": [float(v) for v in data["std"]],
            "interpolation": str(data.get("interpolation", "bilinear")),
            "source": f"timm {timm.__version__} data config of {model_cfg['name']}"}


def model_facts(model_cfg: dict, preprocess: bool = True) -> dict:
    """What the configured model brings along, as JSON values: ``preprocess`` (with
    ``preprocess=True``; from the weights' transforms or timm's data config), ``class_names``
    and ``weights_file`` (torchvision weights named by enum). `ZooError` when the model has
    no known preprocessing."""
    kind, weights = model_cfg.get("kind"), model_cfg.get("weights")
    facts: dict = {}
    if kind == "torchvision" and names_weights_enum(weights):
        member = torchvision_weights(model_cfg.get("name"), str(weights))
        facts["class_names"] = list(member.meta.get("categories") or []) or None
        facts["weights_file"] = str(cached_weights_file(member))
        if preprocess:
            facts["preprocess"] = _torchvision_preprocess(member)
    elif preprocess and kind == "timm":
        facts["preprocess"] = _timm_preprocess(model_cfg)
    elif preprocess:
        raise ZooError(no_transforms_message(kind))
    return facts


def main() -> int:
    """Read ``{"model": {...}, "preprocess": bool}`` on stdin, print ``{"facts": ...}`` or
    ``{"error": message}`` on stdout."""
    request = json.load(sys.stdin)
    try:
        facts = model_facts(request["model"], preprocess=request.get("preprocess", True))
    except ZooError as exc:
        print(json.dumps({"error": str(exc)}))
        return 0
    print(json.dumps({"facts": facts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
