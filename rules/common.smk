import sys

sys.path.insert(0, workflow.basedir)

from convscope.config.validate import ConfigError, load_schema, validate_config
from convscope.config.preflight import PreflightError, check_dataset, check_model
from convscope.store.rows import n_shards

# Validate the config (defaults from the schema) and check the dataset while
# parsing: cheap, so -n, --unlock and --lint pay almost nothing. Building the
# model to check layer names and checkpoint waits for `onstart`, which runs
# only when jobs are about to run (not for -n, --unlock, --lint, --list-rules).
try:
    _validated = validate_config(config, load_schema())
    config.clear()
    config.update(_validated)
    if workflow.is_main_process:  # cluster jobs re-read this file; the checks ran already
        check_dataset(config)
except (ConfigError, PreflightError) as exc:
    sys.exit(f"convscope: {exc}")  # the message alone, no traceback (a WorkflowError shows one)


onstart:
    if workflow.is_main_process:
        try:
            check_model(config)
        except PreflightError as exc:
            print(f"convscope: {exc}", file=sys.stderr)
            raise SystemExit(1)


wildcard_constraints:
    shard=r"\d{5}",


def get_dataset_source(wildcards=None):
    """The file or folder the manifest is built from."""
    if config["dataset"]["kind"] == "demo":
        return rules.demo_dataset.output.manifest
    return config["dataset"]["path"]


def get_weights_input(wildcards=None):
    """The model's weights file as a rule input (none for torchvision's cache)."""
    if config["model"]["weights"]:
        return config["model"]["weights"]
    if config["model"]["kind"] == "demo":
        return rules.train_demo_model.output.weights
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
    return expand(rules.extract.output[0], shard=[f"{i:05d}" for i in range(count)])


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
