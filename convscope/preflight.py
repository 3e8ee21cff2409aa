"""Checks run when the workflow starts, before any job: fail fast on user mistakes."""

from __future__ import annotations

from pathlib import Path

__all__ = ["PreflightError", "preflight"]


class PreflightError(ValueError):
    """A config value points at something that is not there or does not fit."""


def _check_dataset(config: dict) -> None:
    dataset = config["dataset"]
    if dataset["kind"] == "demo":
        return
    path = dataset.get("path")
    if not path:
        raise PreflightError(f"config key 'dataset.path' must be set for dataset.kind "
                             f"{dataset['kind']!r} (a folder, a .csv/.parquet manifest or a "
                             ".npz/.h5 array file)")
    path = Path(path)
    if not path.exists():
        raise PreflightError(f"config key 'dataset.path': {path} does not exist")
    if dataset["kind"] == "folder" and not path.is_dir():
        raise PreflightError(f"config key 'dataset.path': {path} is not a folder, but "
                             "dataset.kind is 'folder'")
    suffixes = {"manifest": {".csv", ".parquet", ".pq"}, "array": {".npz", ".h5", ".hdf5"}}
    valid = suffixes.get(dataset["kind"])
    if valid and path.suffix.lower() not in valid:
        raise PreflightError(f"config key 'dataset.path': {path} should end in one of "
                             f"{', '.join(sorted(valid))} for dataset.kind {dataset['kind']!r}")


def _check_model(config: dict) -> None:
    from .models import ModelError, build_model, check_layer_names, codes_module_name

    model_cfg = config["model"]
    if model_cfg.get("weights") and not Path(model_cfg["weights"]).exists():
        raise PreflightError(f"config key 'model.weights': {model_cfg['weights']} does not exist")
    if model_cfg["kind"] == "torchvision" and not model_cfg.get("name"):
        raise PreflightError("config key 'model.name' must name a torchvision model when "
                             "model.kind is 'torchvision' (e.g. resnet18)")
    try:
        model = build_model(model_cfg, num_classes=model_cfg.get("num_classes") or 10,
                            in_channels=int(config["preprocess"]["channels"]))
        check_layer_names(model, config["layers"])
        codes_module_name(model, config.get("codes_layer"))
    except ModelError as exc:
        raise PreflightError(str(exc)) from None


def preflight(config: dict) -> None:
    """Raise `PreflightError` naming the key and what would be valid, or return."""
    _check_dataset(config)
    _check_model(config)
