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


def get_extract_settings(wildcards=None, speed=False):
    """The extract settings that can change a shard's numbers (the rule's params), or with
    ``speed=True`` the speed settings (batch_size, num_workers, device), which the rule
    passes as resources so that changing them does not re-extract finished shards."""
    speed_only = ("batch_size", "num_workers", "device")
    return {k: v for k, v in config["extract"].items() if (k in speed_only) == speed}


def get_n_images():
    csv = checkpoints.manifest.get().output.csv
    with open(csv) as fh:
        return max(0, sum(1 for _ in fh) - 1)


def get_shard_paths(wildcards=None):
    """Every shard file of the dataset (known once the manifest exists)."""
    count = n_shards(get_n_images(), config["extract"]["shard_size"])
    return expand(rules.extract.output[0], shard=[f"{i:05d}" for i in range(count)])


def get_report_inputs(wildcards=None):
    """The analysis outputs the report shows, by the names `convscope.report.ReportInputs` uses."""
    inputs = {
        "overall": rules.performance.output.overall,
        "per_class": rules.performance.output.per_class,
        "per_attribute": rules.performance.output.per_attribute,
        "performance_tables": rules.performance.output.tables,
        "confusion": rules.performance.output.confusion,
        "confusion_plot": rules.performance.output.confusion_plot,
        "attribute_plots": rules.performance.output.plots,
        "embedding_summary": rules.embedding.output.summary,
        "coords": rules.embedding.output.coords,
        "scatter": rules.embedding.output.scatter,
        "mosaic": rules.embedding.output.mosaic,
        "cloud": rules.embedding.output.cloud,
        "knn_accuracy": rules.neighbours.output.accuracy,
        "queries": rules.neighbours.output.queries,
        "panels": rules.neighbours.output.panels,
        "topk_table": rules.topk_units.output.table,
        "topk_index": rules.topk_units.output.index,
        "topk_pages": rules.topk_units.output.pages,
        "unit_stats": rules.unit_stats.output.stats,
        "unit_summary": rules.unit_stats.output.summary,
        "firing_rate": rules.unit_stats.output.plot,
        "filters": rules.filters.output[0],
    }
    if config["model"]["kind"] == "demo" and not config["model"]["weights"]:
        inputs["train_metrics"] = rules.train_demo_model.output.metrics
    return inputs


def get_final_output(wildcards=None):
    return [rules.report.output.html]
