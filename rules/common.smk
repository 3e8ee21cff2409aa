import json
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from convscope.config.validate import ConfigError, load_schema, validate_config
from convscope.extract.pipeline import n_shards
from convscope.config.preflight import PreflightError, preflight

try:
    _validated = validate_config(config, load_schema())
    config.clear()
    config.update(_validated)
    if workflow.is_main_process:  # cluster jobs re-read this file; the checks ran already
        preflight(config)
except (ConfigError, PreflightError) as exc:
    sys.exit(f"convscope: {exc}")  # the message alone, no traceback (a WorkflowError shows one)


wildcard_constraints:
    shard=r"\d{5}",


def get_dataset_source(wildcards=None):
    """The file or folder the manifest is built from."""
    if config["dataset"]["kind"] == "demo":
        return "results/demo/manifest.csv"
    return config["dataset"]["path"]


def get_weights_input(wildcards=None):
    """The model's weights file as a rule input (none for torchvision's cache)."""
    if config["model"]["weights"]:
        return config["model"]["weights"]
    if config["model"]["kind"] == "demo":
        return "results/model/demo_model.pt"
    return []


def get_extract_settings(wildcards=None):
    """The extract settings that can change a shard's numbers (speed settings excluded,
    so changing them does not re-extract finished shards)."""
    speed_only = ("batch_size", "num_workers", "device")
    return {k: v for k, v in config["extract"].items() if k not in speed_only}


def get_n_images():
    csv = checkpoints.manifest.get().output.csv
    with open(csv) as fh:
        return max(0, sum(1 for _ in fh) - 1)


def get_shard_paths(wildcards=None):
    """Every shard file of the dataset (known once the manifest exists)."""
    count = n_shards(get_n_images(), config["extract"]["shard_size"])
    return [f"results/features/shard-{i:05d}.h5" for i in range(count)]


def get_report_inputs(wildcards=None):
    """Every analysis output the report shows."""
    outputs = [
        "results/units/topk.csv",
        "results/units/stats.csv",
        "results/units/filters",
        "results/performance/tables.md",
        "results/embedding/embedding.json",
        "results/neighbours/knn_accuracy.json",
    ]
    if config["model"]["kind"] == "demo" and not config["model"]["weights"]:
        outputs.append("results/model/train_metrics.json")
    return outputs


def get_final_output(wildcards=None):
    return ["results/report/index.html"]
