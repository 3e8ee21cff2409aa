"""Where tensors go: ``auto | cpu | cuda | cuda:N`` from the config to a ``torch.device``."""

from __future__ import annotations

import torch

__all__ = ["DeviceError", "resolve_device", "model_device"]


class DeviceError(ValueError):
    """The config asks for a device this machine does not have."""


def resolve_device(name: str = "auto", key: str = "extract.device") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; a CUDA device that is not there raises
    `DeviceError` naming the config ``key``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"config key {key!r} is {name!r} but CUDA is not available here; "
                              "use 'auto' or 'cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"config key {key!r} is {name!r} but this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s); use 'auto', 'cuda' "
                              f"or cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return device


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
