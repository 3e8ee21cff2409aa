import sys

sys.path.insert(0, workflow.basedir)

from convscope.config.validate import ConfigError, load_schema, validate_config
from convscope.config.preflight import (PreflightError, check_dataset, check_device,
                                        check_layers_set, check_model, class_names_required)
from convscope.store.hashes import cached_sha256
from convscope.store.rows import n_shards

# Validate the config (defaults from the schema) and check the dataset while
# parsing: cheap, so -n, --unlock and --lint pay almost nothing. Building the
# model to check layer names and checkpoint waits for `onstart`, which runs
# only when jobs are about to run (not for -n, --unlock, --lint, --list-rules),
# and so does the device check (it imports torch).
try:
    _validated = validate_config(config, load_schema())
    config.clear()
    config.update(_validated)
    if workflow.is_main_process:  # cluster jobs re-read this file; the checks ran already
        check_layers_set(config)
        check_dataset(config)
except (ConfigError, PreflightError) as exc:
    sys.exit(f"convscope: {exc}")  # the message alone, no traceback (a WorkflowError shows one)


onstart:
    if workflow.is_main_process:
        try:
            check_device(config)
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


def get_weights_sha256(wildcards=None):
    """SHA-256 of the weights file, a param of every rule that reads the weights.

    Snakemake's mtime trigger misses weights replaced by a file with an older
    modification time (``cp -p``); a params change is noticed on every run, so
    the content decides. Cached by (path, size, inode, mtime, ctime) in
    .snakemake/ so a large checkpoint is hashed once. None while the file does
    not exist yet (the demo model before training): Snakemake computes params
    again just before a job runs, so what it records is the real hash.
    """
    weights = get_weights_input()
    if not weights:
        return None
    return cached_sha256(weights, ".snakemake/convscope/sha256-cache.json")


def get_extract_settings(wildcards=None, speed=False):
    """The extract settings that can change a shard's numbers (the rule's params), or with
    ``speed=True`` the speed settings (batch_size, num_workers, device), which the rule
    passes as resources so that changing them does not re-extract finished shards."""
    speed_only = ("batch_size", "num_workers", "device")
    return {k: v for k, v in config["extract"].items() if (k in speed_only) == speed}


def get_config_used(wildcards=None):
    """The validated config without extract's speed settings (batch_size, num_workers,
    device): they change no result, so changing them must not rewrite this file (and so
    rerun the report)."""
    speed = get_extract_settings(speed=True)
    return {**config, "extract": {k: v for k, v in config["extract"].items() if k not in speed}}


def get_n_images():
    csv = checkpoints.manifest.get().output.csv
    with open(csv) as fh:
        return max(0, sum(1 for _ in fh) - 1)


def get_shard_paths(wildcards=None):
    """Every shard file of the dataset (known once the manifest exists)."""
    count = n_shards(get_n_images(), config["extract"]["shard_size"])
    return expand(rules.extract.output[0], shard=[f"{i:05d}" for i in range(count)])


def get_stage_summaries(wildcards=None):
    """The ``summary.json`` of every explanation and synthesis stage the report shows.

    Each stage writes one (contract in docs/design.md, "Stage summaries"): a title, a
    caption, its figures and tables, and per-unit images for the unit pages. New stages
    append their rule's ``summary`` output here.
    """
    return [
        rules.synthesis_dream.output.summary,
        rules.synthesis_style.output.summary,
        rules.synthesis_adversarial.output.summary,
        rules.synthesis_fooling.output.summary,
    ]


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
        "comparison": rules.performance.output.comparison,
        "agreement": rules.performance.output.agreement,
        "comparison_examples": rules.performance.output.comparison_examples,
        "comparison_panel": rules.performance.output.comparison_panel,
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
        "config_used": rules.config_used.output.config,
        "stage_summaries": get_stage_summaries(),
    }
    if config["model"]["kind"] == "demo" and not config["model"]["weights"]:
        inputs["train_metrics"] = rules.train_demo_model.output.metrics
    return inputs


def get_final_output(wildcards=None):
    """The report, and every intermediate file it is built from.

    Snakemake rebuilds a missing file only when something that needs it has to
    run; a deleted intermediate (a shard, the shard index, the manifest) under
    results that are present would go unnoticed. Listing them here makes
    ``all`` need them, so a rerun rebuilds whatever is missing, and then
    everything that depends on it.
    """
    report_inputs = []
    for value in get_report_inputs().values():
        report_inputs.extend([value] if isinstance(value, str) else list(value))
    produced = []  # inputs the workflow makes itself (the demo's data and model)
    if config["dataset"]["kind"] == "demo":
        produced += [rules.demo_dataset.output.manifest, rules.demo_dataset.output.images]
    if config["model"]["kind"] == "demo" and not config["model"]["weights"]:
        produced.append(rules.train_demo_model.output.weights)
    return [rules.report.output.html, *report_inputs, *produced, *rules.manifest.output,
            rules.model_info.output.info, rules.shard_index.output[0], *get_shard_paths()]
