"""Checks run when the workflow starts, before any job: fail fast on user mistakes.

`preflight` looks at what the (already schema-validated) config points to and
raises `PreflightError` with one message naming the config key, the file or
the layer at fault and what would be valid:

- the dataset: ``dataset.path`` exists and has the right type; a folder has
  class subfolders holding at least one image (the walk stops at the first
  one); a manifest table has the ``path_column`` and ``label_column`` and at
  least one row (only the CSV header and first row, or the Parquet schema, are
  read); an array file has a non-empty ``images`` array;
- the model: it can be built (torchvision name, custom factory and its
  kwargs), a checkpoint given in ``model.weights`` loads and fits it (keys and
  shapes), it runs on one input of ``preprocess.input_size`` / ``channels``
  and returns (N, classes) logits;
- layer names: ``layers`` (which must be given: no default fits every model),
  ``codes_layer``, ``unit_stats.layers``, ``filters.layers`` (convolutions) and
  ``filters.panel_layers``;
- class names: labels are mapped through ``dataset.class_names`` (only the label
  column or the folder names are read); unknown names, a column mixing names and
  integer ids, and names without that list for a model not trained by the workflow
  are refused, naming the values; the list has one name per model output;
- devices (`check_device`): ``extract.device`` and ``neighbours.device`` exist here.

The demo model (``model.kind: demo`` without ``model.weights``) is trained by
the workflow, so only its architecture is checked, and the dataset must have
``train`` and ``test`` splits: a folder has none, a table needs a ``split`` column.
"""

from __future__ import annotations

import os
from pathlib import Path

from convscope.config.auto import is_weights_enum
from convscope.nn.layers import did_you_mean as _hint
from convscope.nn.layers import listing as _listing

__all__ = ["PreflightError", "preflight", "check_dataset", "check_model", "check_device",
           "check_layers_set", "class_names_required"]

_TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
_ARRAY_SUFFIXES = (".npz", ".h5", ".hdf5")


class PreflightError(ValueError):
    """A config value points at something that is not there or does not fit."""


# --------------------------------------------------------------------------
# dataset


def _check_folder(root: Path) -> None:
    from convscope.data.manifest import IMAGE_EXTENSIONS

    classes = sorted(entry.name for entry in os.scandir(root)
                     if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise PreflightError(f"config key 'dataset.path': folder {root} has no class subfolders; "
                             "dataset.kind 'folder' expects <path>/<class name>/<image files>")
    for name in classes:
        for _folder, subfolders, files in os.walk(root / name, followlinks=True):
            subfolders[:] = [d for d in subfolders if not d.startswith(".")]
            if any(not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS
                   for f in files):
                return
    raise PreflightError(f"config key 'dataset.path': folder {root} holds no images (zero "
                         f"files with extensions {', '.join(IMAGE_EXTENSIONS)} in its class "
                         f"folders {_listing(classes, 10)})")


def _table_columns_and_rows(path: Path) -> tuple[list[str], int]:
    """Column names of a manifest table and its row count (0, 1 or more for CSV: capped at 1)."""
    if path.suffix.lower() == ".csv":
        import pandas as pd

        try:
            head = pd.read_csv(path, nrows=1)
        except pd.errors.EmptyDataError:
            return [], 0
        return [str(c) for c in head.columns], len(head)
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    return list(parquet.schema_arrow.names), int(parquet.metadata.num_rows)


def _check_table(path: Path, dataset: dict) -> None:
    try:
        columns, n_rows = _table_columns_and_rows(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable table is the user's to fix
        raise PreflightError(f"config key 'dataset.path': cannot read manifest table {path} "
                             f"({type(exc).__name__}: {exc})") from None
    if not columns:
        raise PreflightError(f"config key 'dataset.path': manifest {path} is empty; expected a "
                             f"header row (with a {dataset['path_column']!r} column) and one "
                             "row per image")
    for key in ("path_column", "label_column"):
        column = dataset[key]
        if column is not None and column not in columns:
            unset = " or null for an unlabelled dataset" if key == "label_column" else ""
            raise PreflightError(
                f"config key 'dataset.{key}' is {column!r}, but manifest {path} has no such "
                f"column{_hint(column, columns)}; columns present: {_listing(columns)} "
                f"(set dataset.{key} to one of them{unset})")
    if n_rows == 0:
        raise PreflightError(f"config key 'dataset.path': manifest {path} has a header but no "
                             "rows: the dataset has zero images")


def _check_array(path: Path) -> None:
    from convscope.data.manifest import DatasetError, build_manifest

    try:
        build_manifest("array", path)  # reads shapes and 1-D columns, not the images
    except DatasetError as exc:
        raise PreflightError(f"config key 'dataset.path': {exc}") from None


def class_names_required(config: dict) -> bool:
    """Whether label names need ``dataset.class_names``: yes unless the workflow trains the
    model on them (the demo model without weights) or the dataset is the demo's."""
    model = config["model"]
    trained_here = model["kind"] == "demo" and not model["weights"]
    return not trained_here and config["dataset"]["kind"] != "demo"


def _check_labels(path: Path, config: dict) -> None:
    """Labels against ``dataset.class_names``: reads the label column (or folder names) only."""
    from convscope.data.manifest import DatasetError, check_labels

    dataset = config["dataset"]
    try:
        check_labels(dataset["kind"], path, label_column=dataset["label_column"],
                     class_names=dataset["class_names"],
                     names_required=class_names_required(config))
    except DatasetError as exc:
        text = str(exc)
        key = "dataset.class_names" if dataset["kind"] == "folder" else "dataset.label_column"
        raise PreflightError(text if text.startswith("config key")
                             else f"config key {key!r}: {text}") from None


def check_dataset(config: dict) -> None:
    """Check ``config["dataset"]``; raise `PreflightError` or return."""
    dataset = config["dataset"]
    kind = dataset["kind"]
    if kind == "demo":
        return
    raw = dataset["path"]
    if not raw:
        raise PreflightError(f"config key 'dataset.path' must be set for dataset.kind {kind!r} "
                             "(a folder, a .csv/.parquet manifest or a .npz/.h5 array file)")
    if kind in ("webdataset", "huggingface"):
        _check_containers(dataset)
        return
    if not isinstance(raw, str):
        raise PreflightError(f"config key 'dataset.path' is a list, but a list of files is "
                             f"read only for dataset.kind 'webdataset' (not {kind!r})")
    path = Path(os.path.expanduser(str(raw)))
    if not path.exists():
        raise PreflightError(f"config key 'dataset.path': {path} does not exist (relative paths "
                             f"are taken from the working directory {os.getcwd()})")
    if kind == "folder":
        if not path.is_dir():
            raise PreflightError(f"config key 'dataset.path': {path} is not a folder, but "
                                 "dataset.kind is 'folder' (use 'manifest' for a .csv/.parquet "
                                 "table, 'array' for a .npz/.h5 file)")
        _check_folder(path)
        _check_labels(path, config)
        _check_trainable(path, config)
        return
    valid = _TABLE_SUFFIXES if kind == "manifest" else _ARRAY_SUFFIXES
    if path.is_dir() or path.suffix.lower() not in valid:
        raise PreflightError(f"config key 'dataset.path': {path} should be a file ending in one "
                             f"of {', '.join(valid)} for dataset.kind {kind!r}")
    if kind == "manifest":
        _check_table(path, dataset)
    else:
        _check_array(path)
    _check_labels(path, config)
    _check_trainable(path, config)


def _check_containers(dataset: dict) -> None:
    """Webdataset tars: each exists and is a complete tar holding images (headers only);
    huggingface: its data files have an image column (schemas only)."""
    from convscope.data.errors import DatasetError

    try:
        if dataset["kind"] == "webdataset":
            from convscope.data.tars import expand_tar_pattern, tar_index

            for file in expand_tar_pattern(dataset["path"]):
                tar_index(file)
        elif not isinstance(dataset["path"], str):
            raise DatasetError("a huggingface dataset is one folder or .parquet file, not a list")
        else:
            from convscope.data.hfdata import check_huggingface

            check_huggingface(dataset["path"], dataset["label_column"], dataset["path_column"])
    except DatasetError as exc:
        raise PreflightError(f"config key 'dataset.path': {exc}") from None


def _check_trainable(path: Path, config: dict) -> None:
    """The demo model trained here needs 'train' and 'test' rows: a folder has no split, a
    table needs a ``split`` column (its values are checked by the training job)."""
    model, kind = config["model"], config["dataset"]["kind"]
    if model["kind"] != "demo" or model["weights"]:
        return
    if kind == "folder":
        where = f"folder dataset {path} has no split (every image's split is 'all')"
    elif kind == "manifest" and "split" not in _table_columns_and_rows(path)[0]:
        where = f"manifest {path} has no 'split' column"
    else:
        return
    raise PreflightError("config key 'model.weights' is null, so the workflow trains the demo "
                         "model on the labelled 'train' images and tests it on the 'test' ones, "
                         f"but the {where}; give model.weights (a checkpoint of your model), or "
                         "a manifest table whose 'split' column holds train and test")


# --------------------------------------------------------------------------
# model and layers


def _model_or_error(config: dict):
    """The configured model; with a user checkpoint (or torchvision's cached one) loaded."""
    from convscope.config.sections import ModelConfig
    from convscope.nn.models import ModelError, build_model, load_model

    model_cfg = ModelConfig.from_dict(config["model"])
    in_channels = int(config["preprocess"]["channels"])
    weights = model_cfg.weights
    if weights and not Path(weights).is_file() and not is_weights_enum(config["model"]):
        what = "is a folder, not a file" if Path(weights).is_dir() else "does not exist"
        raise PreflightError(f"config key 'model.weights': {weights} {what} (give a checkpoint "
                             "file: a state dict, or a dict holding one under 'state_dict')")
    if model_cfg.kind in ("torchvision", "timm") and not model_cfg.name:
        example = "resnet18" if model_cfg.kind == "torchvision" else "convnext_tiny"
        raise PreflightError(f"config key 'model.name' must name a {model_cfg.kind} model when "
                             f"model.kind is {model_cfg.kind!r} (e.g. {example})")
    try:
        if weights or model_cfg.kind == "torchvision":
            return load_model(model_cfg, weights, in_channels=in_channels)
        # the demo model is trained by the workflow: only its architecture can be checked
        return build_model(model_cfg, num_classes=model_cfg.num_classes or 10,
                           in_channels=in_channels)
    except ModelError as exc:
        raise PreflightError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - the user's factory or kwargs failed
        what = {"custom": f"model.factory {model_cfg.factory!r}",
                "torchvision": f"model.name {model_cfg.name!r}",
                "timm": f"timm model.name {model_cfg.name!r}"}.get(model_cfg.kind, "the demo model")
        raise PreflightError(f"{what} with model.factory_kwargs "
                             f"{dict(model_cfg.factory_kwargs)} could not be built: "
                             f"{type(exc).__name__}: {exc}") from None


def _check_analysed(names, layers) -> None:
    """``unit_stats.layers`` must name analysed layers (a subset of ``layers``)."""
    bad = [name for name in names or [] if name not in layers]
    if bad:
        raise PreflightError(f"config key 'unit_stats.layers': {bad[0]!r} is not an analysed "
                             f"layer (one of 'layers'){_hint(bad[0], layers)}; valid names: "
                             f"{_listing(layers)}")


def _check_forward(model, config: dict) -> None:
    import torch

    from convscope.data.preprocess import input_hw, normalize

    preprocess_cfg = config["preprocess"]
    height, width = input_hw(preprocess_cfg)
    channels = int(preprocess_cfg["channels"])
    try:
        x = normalize(torch.zeros(1, height, width, channels, dtype=torch.uint8), preprocess_cfg)
    except ValueError as exc:
        raise PreflightError(f"config keys 'preprocess.mean' / 'preprocess.std': {exc} "
                             "(give 1 value, or one per channel)") from None
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            logits = model(x)
    except Exception as exc:  # noqa: BLE001 - the configured input does not fit the model
        raise PreflightError(
            f"the model cannot run on one input of shape (1, {channels}, {height}, {width}) "
            "made from 'preprocess.input_size' and 'preprocess.channels': "
            f"{type(exc).__name__}: {exc}") from None
    finally:
        model.train(was_training)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise PreflightError(f"the model returns {shape} for one input; convscope needs class "
                             "scores of shape (N, classes)")
    if class_names_required(config) or config["model"]["weights"]:  # not trained here
        _check_class_count(config, int(logits.shape[1]))


def check_layers_set(config: dict) -> None:
    """``layers`` has no default that could fit an arbitrary model: it must be given."""
    if not config.get("layers"):
        hint = ("the demo's are [relu1, relu2, relu3, relu4] (config/config.yaml)"
                if config["model"]["kind"] == "demo" else
                "e.g. [layer1, layer2, layer3, layer4] for a torchvision ResNet")
        raise PreflightError("config key 'layers' is not set: list the module names to analyse "
                             f"(model.named_modules(); {hint})")


def check_device(config: dict) -> None:
    """``extract.device``, ``neighbours.device``, ``explain.device`` and ``synthesis.device``
    name devices this machine has (imports torch: run it when jobs are about to start, not
    while the workflow is parsed)."""
    from convscope.nn.device import DeviceError, resolve_device

    for key in ("extract", "neighbours", "explain", "synthesis"):
        try:
            resolve_device(config[key]["device"], key=f"{key}.device")
        except DeviceError as exc:
            raise PreflightError(str(exc)) from None


def _check_class_count(config: dict, n_outputs: int) -> None:
    """``dataset.class_names`` has one name per model output."""
    from convscope.data.manifest import DatasetError, load_class_names

    try:
        names = load_class_names(config["dataset"]["class_names"])
    except DatasetError as exc:
        raise PreflightError(str(exc)) from None
    if names is not None and len(names) != n_outputs:
        raise PreflightError(f"config key 'dataset.class_names' gives {len(names)} names but the "
                             f"model has {n_outputs} outputs; give one name per output, in the "
                             "model's output order")


def check_model(config: dict) -> None:
    """Check the model, its checkpoint and every layer name; raise `PreflightError` or return."""
    from torch import nn

    from convscope.nn.layers import LayerNameError, check_layer_names, module_names

    check_layers_set(config)
    model = _model_or_error(config)
    filters_cfg = config["filters"]
    try:
        check_layer_names(model, config["layers"], key="layers")
        if config["codes_layer"]:
            check_layer_names(model, config["codes_layer"], key="codes_layer")
        elif not any(isinstance(m, nn.Linear) for m in model.modules()):
            raise PreflightError("config key 'codes_layer' is null, which takes the CNN code "
                                 "from the input of the last nn.Linear, but the model has none; "
                                 f"set codes_layer to a module name: {_listing(module_names(model))}")
        _check_analysed(config["unit_stats"]["layers"], list(config["layers"]))
        check_layer_names(model, filters_cfg["layers"], key="filters.layers", kind=nn.Conv2d,
                          what="an nn.Conv2d module of the model")
        check_layer_names(model, filters_cfg["panel_layers"], key="filters.panel_layers")
    except LayerNameError as exc:
        raise PreflightError(str(exc)) from None
    _check_forward(model, config)


def preflight(config: dict) -> None:
    """Raise `PreflightError` naming the key and what would be valid, or return.

    ``config`` is a config validated by `convscope.config.validate_config`.
    """
    check_layers_set(config)
    check_dataset(config)
    check_device(config)
    check_model(config)
