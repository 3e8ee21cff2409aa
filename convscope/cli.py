"""The ``convscope`` command: helps set up a run; running it stays ``snakemake``.

- ``convscope layers CONFIG``: every module of the configured model with its output shape
  and receptive field, marking the names ``layers`` (a feature map) and ``codes_layer``
  (any tensor) can take;
- ``convscope init --model NAME --data PATH``: a starter config for that model and data
  (``preprocess: auto`` where the model carries its preprocessing);
- ``convscope report``: regenerates the report only (``snakemake`` forced to run the
  ``report`` rule, and no other).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["main", "module_table", "guess_layers", "starter_config"]

_TABLES = (".csv", ".parquet", ".pq")
_ARRAYS = (".npz", ".h5", ".hdf5")


def _load_model(config: dict, architecture_only: bool = False):
    """The configured model: with its weights when there are some (and not
    ``architecture_only``), else untrained."""
    from convscope.config.auto import weights_file
    from convscope.config.sections import ModelConfig
    from convscope.nn.models import build_model, load_model

    model_cfg = ModelConfig.from_dict(config["model"])
    channels = int(config["preprocess"]["channels"])
    weights = None if architecture_only else weights_file(config)
    if not architecture_only and (weights or model_cfg.kind == "torchvision"):
        return load_model(model_cfg, weights, in_channels=channels)
    return build_model(model_cfg, num_classes=model_cfg.num_classes or 10,
                       in_channels=channels).eval()


def module_table(model, input_hw: tuple[int, int], channels: int) -> list[dict]:
    """One row per module (forward order of ``named_modules``): name, type, output shape of
    one image, ``nameable`` (``layers``: a 4-D feature map; ``codes``: another tensor; ``""``)
    and the receptive field of the feature maps (None where it could not be had)."""
    import torch

    from convscope.nn.receptive_field import receptive_fields

    shapes, hooks = {}, []

    def record(name):
        def hook(_module, _inputs, output):  # returns None: the output is left as it is
            shapes.setdefault(name, tuple(output.shape[1:])
                              if isinstance(output, torch.Tensor) else None)
        return hook

    for name, module in model.named_modules():
        if name:
            hooks.append(module.register_forward_hook(record(name)))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, channels, *input_hw))
    finally:
        for hook in hooks:
            hook.remove()
    maps = [name for name, shape in shapes.items() if shape is not None and len(shape) == 3]
    try:
        fields = receptive_fields(model, maps, input_hw, channels) if maps else {}
    except Exception:  # noqa: BLE001 - the table is still useful without them
        fields = {}
    rows = []
    for name, module in model.named_modules():
        if not name:
            continue
        shape = shapes.get(name)
        kind = "" if shape is None else ("layers" if len(shape) == 3 else "codes")
        field = fields.get(name)
        rows.append({"name": name, "type": type(module).__name__,
                     "shape": list(shape) if shape is not None else None, "nameable": kind,
                     "receptive_field": field.to_dict() if field is not None else None})
    return rows


def _format_rows(rows: list[dict]) -> str:
    lines = [f"{'module':40} {'type':22} {'output (C, H, W)':18} {'receptive field':16} name as"]
    for row in rows:
        shape = "not run" if row["shape"] is None else str(tuple(row["shape"]))
        field = row["receptive_field"]
        where = f"{field['size'][0]}x{field['size'][1]} /{field['stride'][0]}" if field else ""
        mark = {"layers": "layers, codes_layer", "codes": "codes_layer"}.get(row["nameable"], "")
        lines.append(f"{row['name']:40} {row['type']:22} {shape:18} {where:16} {mark}")
    return "\n".join(lines)


def _layers(args) -> int:
    from convscope.config.validate import load_config
    from convscope.data.preprocess import input_hw

    config = load_config(args.config)
    model = _load_model(config)
    rows = module_table(model, input_hw(config["preprocess"]),
                        int(config["preprocess"]["channels"]))
    print(_format_rows(rows))
    return 0


def guess_layers(rows: list[dict], n: int = 4) -> list[str]:
    """Up to ``n`` analysed layers for a starter config: the feature-map blocks of the
    shallowest module that holds at least three (a ResNet's ``layer1..4``, a ConvNeXt's
    ``stages.0..3``), else the feature-map activations (ReLU, GELU, SiLU...), evenly spaced."""
    names = [row["name"] for row in rows]
    maps = [row for row in rows if row["nameable"] == "layers"]
    containers = [r for r in maps if any(other.startswith(r["name"] + ".") for other in names)]
    siblings: dict[str, list[str]] = {}  # parent -> its children that are feature-map blocks
    for row in containers:
        siblings.setdefault(row["name"].rpartition(".")[0], []).append(row["name"])
    groups = sorted((g for g in siblings.values() if len(g) >= 3),
                    key=lambda g: (g[0].count("."), -len(g)))
    chosen = groups[0] if groups else None
    if chosen is None:
        activations = ("ReLU", "ReLU6", "GELU", "SiLU", "LeakyReLU", "Hardswish", "Mish")
        chosen = [r["name"] for r in maps if r["type"] in activations] or \
            [r["name"] for r in maps]
    if len(chosen) > n:
        step = (len(chosen) - 1) / (n - 1)
        chosen = [chosen[round(i * step)] for i in range(n)]
    return chosen


def _model_section(spec: str, weights: str | None) -> dict:
    """``model`` section of ``--model``: ``timm:NAME``, ``torchvision:NAME``,
    ``custom:package.module:function``, or a bare name (torchvision's first, then timm's)."""
    kind, _, rest = spec.partition(":")
    if kind == "custom":
        return {"kind": "custom", "factory": rest, "weights": weights}
    if kind in ("timm", "torchvision"):
        return {"kind": kind, "name": rest, "weights": weights}
    import torchvision

    if spec in torchvision.models.list_models(module=torchvision.models):
        return {"kind": "torchvision", "name": spec, "weights": weights}
    try:
        import timm
    except ImportError:
        timm = None
    if timm is not None and timm.is_model(spec):
        return {"kind": "timm", "name": spec, "weights": weights}
    raise SystemExit(f"convscope init: --model {spec!r} is neither a torchvision nor a timm "
                     "model name; write timm:NAME, torchvision:NAME or "
                     "custom:package.module:function")


def _dataset_section(path: str) -> dict:
    suffix = Path(path).suffix.lower()
    if suffix == ".tar":  # one tar, a list is not a path here; a brace pattern works
        return {"kind": "webdataset", "path": path}
    if (Path(path) / "state.json").is_file():  # written by datasets' save_to_disk
        return {"kind": "huggingface", "path": path}
    if Path(path).is_dir():
        return {"kind": "folder", "path": path}
    if suffix in (".parquet", ".pq") and Path(path).is_file():
        from convscope.data.hfdata import parquet_holds_images

        if parquet_holds_images(path):  # image bytes, not paths
            return {"kind": "huggingface", "path": path}
    if suffix in _TABLES:
        return {"kind": "manifest", "path": path}
    if suffix in _ARRAYS:
        return {"kind": "array", "path": path}
    raise SystemExit(f"convscope init: --data {path} is not a folder, a {'/'.join(_TABLES)} "
                     f"manifest, a {'/'.join(_ARRAYS)} array file, .tar shards (a brace "
                     "pattern such as shards-{000..009}.tar) or a save_to_disk folder")


def _carries_preprocessing(model: dict) -> bool:
    from convscope.config.auto import is_weights_enum

    return model["kind"] == "timm" or is_weights_enum(model)


def starter_config(model: dict, dataset: dict, layers: list[str]) -> str:
    """The YAML text of a starter config (comments say what to check)."""
    import yaml

    def block(key, value):
        return yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=False)

    text = ["# convscope starter config (convscope init); check every value, then run\n"
            "#   convscope layers <this file>      (the module names `layers` can take)\n"
            "#   snakemake --cores 4 --configfile <this file>\n",
            block("dataset", dataset), block("model", {k: v for k, v in model.items()})]
    if _carries_preprocessing(model):
        text.append("# taken from the model (its weights' transforms / timm's data config);\n"
                    "# keys written under `preprocess: {auto: true, ...}` win\n"
                    "preprocess: auto\n")
    else:
        text.append("# this model carries no preprocessing: give it as the model was trained\n"
                    + block("preprocess", {"input_size": 224, "resize": 256, "crop": "center",
                                           "mean": [0.485, 0.456, 0.406],
                                           "std": [0.229, 0.224, 0.225]}))
    text.append("# a guess: the model's main blocks (convscope layers lists the others)\n"
                + block("layers", layers))
    return "\n".join(text)


def _init(args) -> int:
    from convscope.config.validate import ConfigError, validate_config
    from convscope.data.preprocess import input_hw

    out = Path(args.out)
    if out.exists() and not args.force:
        raise SystemExit(f"convscope init: {out} exists; give --out or --force")
    model, dataset = _model_section(args.model, args.weights), _dataset_section(args.data)
    raw = {"dataset": dataset, "model": model,
           "preprocess": "auto" if _carries_preprocessing(model) else {}}
    try:
        config = validate_config(raw)
    except ConfigError as exc:
        raise SystemExit(f"convscope init: {exc}") from None
    rows = module_table(_load_model(config, architecture_only=True), input_hw(config["preprocess"]),
                        int(config["preprocess"]["channels"]))
    layers = args.layers or guess_layers(rows)
    out.write_text(starter_config({k: v for k, v in model.items() if v is not None}, dataset,
                                  layers))
    print(f"wrote {out} (layers {', '.join(layers)})")
    return 0


def _report(args) -> int:
    snakefile = Path("Snakefile")
    if not snakefile.exists():
        snakefile = Path(__file__).resolve().parent.parent / "Snakefile"
    # the target first: --forcerun, --allowed-rules and --configfile take several values
    command = [shutil.which("snakemake") or "snakemake", "results/report/index.html",
               "--snakefile", str(snakefile), "--cores", str(args.cores), *args.snakemake_args,
               "--forcerun", "report", "--allowed-rules", "report"]
    if args.configfile:
        command += ["--configfile", args.configfile]
    print(" ".join(command), file=sys.stderr)
    return subprocess.run(command, check=False, env=dict(os.environ)).returncode


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convscope", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    layers = sub.add_parser("layers", help="list the model's modules, shapes, receptive fields")
    layers.add_argument("config", help="the config file (a --configfile of the workflow)")
    layers.set_defaults(run=_layers)
    init = sub.add_parser("init", help="write a starter config for a model and a dataset")
    init.add_argument("--model", required=True,
                      help="resnet50, timm:convnext_tiny, custom:package.module:function")
    init.add_argument("--weights", help="weights file, or torchvision weights (IMAGENET1K_V2)")
    init.add_argument("--data", required=True, help="image folder, manifest or array file")
    init.add_argument("--layers", nargs="+", help="analysed layers (default: a guess)")
    init.add_argument("--out", default="my.yaml", help="config file written")
    init.add_argument("--force", action="store_true", help="overwrite --out")
    init.set_defaults(run=_init)
    report = sub.add_parser("report", help="regenerate the report only (via snakemake)")
    report.add_argument("--configfile", help="the run's config (none: the demo's)")
    report.add_argument("--cores", type=int, default=1)
    report.add_argument("snakemake_args", nargs="*", help="passed on to snakemake (after --)")
    report.set_defaults(run=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``convscope`` command."""
    from convscope.config.validate import ConfigError

    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (ConfigError, ValueError) as exc:
        print(f"convscope {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
