import json
import os
import sys

# the repository root (rules/..): also right when the workflow runs as a module, where
# workflow.basedir is the deploying project's folder
sys.path.insert(0, os.path.dirname(str(workflow.current_basedir)))

from convscope.config.auto import weights_file as model_weights_file
from convscope.config.stages import chosen_stages
from convscope.config.validate import ConfigError, load_schema, validate_config
from convscope.preflight import (
    PreflightError,
    check_dataset,
    check_device,
    check_layers_set,
    check_model,
    class_names_required,
)
from convscope.store.hashes import cached_sha256
from convscope.analysis.layer_names import layer_file_names
from convscope.explain.columns import (
    DEMO_PART_COLUMNS,
    DEMO_POINT_COLUMNS,
    stage_columns,
)
from convscope.data.tars import expand_tar_pattern
from convscope.store.chunks import chunk_names, n_batch_chunks, n_chunks
from convscope.store.rows import manifest_paths, manifest_shards
from convscope.synthesis.checkpoints import (
    demo_checkpoint_epochs,
    demo_checkpoint_paths,
)

# Validate the config (defaults from the schema) and check the dataset while
# parsing: cheap, so -n, --unlock and --lint pay almost nothing. Building the
# model to check layer names and checkpoint waits for `onstart`, which runs
# only when jobs are about to run (not for -n, --unlock, --lint, --list-rules),
# and so does the device check (it imports torch).
try:
    _validated = validate_config(config, load_schema())
    config.clear()
    config.update(_validated)
    chosen_stages(config)  # a `stages` text other than auto / all stops here
    # cluster jobs re-read this file; the checks ran already
    if workflow.is_main_process:
        check_layers_set(config)
        check_dataset(config)
except (ConfigError, PreflightError) as exc:
    # the message alone, no traceback (a WorkflowError shows one)
    sys.exit(f"convscope: {exc}")


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
    chunk=r"\d{5}",


def get_dataset_source(wildcards=None):
    """The file or folder the manifest is built from."""
    if config["dataset"]["kind"] == "demo":
        return rules.demo_dataset.output.manifest
    if config["dataset"]["kind"] == "webdataset":
        return expand_tar_pattern(config["dataset"]["path"])
    return config["dataset"]["path"]


def get_weights_input(wildcards=None):
    """The model's weights file as a rule input (none for torchvision's default cached
    weights; the cached file for torchvision weights named by enum)."""
    if config["model"]["weights"]:
        return model_weights_file(config)
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
    speed_only = SPEED_SETTINGS["extract"]
    return {k: v for k, v in config["extract"].items() if (k in speed_only) == speed}


#: section -> its speed settings: passed to the jobs as resources, left out of config_used
SPEED_SETTINGS = {
    "extract": ("batch_size", "num_workers", "device"),
    "explain": ("batch_size", "device", "chunk_size"),
    "synthesis": ("chunk_size",),
}


def get_config_used(wildcards=None):
    """The validated config without the speed settings (`SPEED_SETTINGS`: extract's
    batch_size, num_workers, device; explain's batch_size, device and chunk_size): they change no
    result, so changing them must not rewrite this file (and so rerun the report)."""
    used = dict(config)
    for section, keys in SPEED_SETTINGS.items():
        used[section] = {k: v for k, v in config[section].items() if k not in keys}
    return used


def get_shard_paths(wildcards=None):
    """Every shard file of the dataset (known once the manifest exists): one per tar for
    webdataset, else one per extract.shard_size rows."""
    paths = manifest_paths(checkpoints.manifest.get().output.csv)
    count = len(manifest_shards(paths, config["extract"]["shard_size"]))
    return expand(rules.extract.output[0], shard=[f"{i:05d}" for i in range(count)])


def get_chunks(stage):
    """The chunk names (00000, ...) of a stage split into cluster-sized jobs, from the config
    alone (`convscope.store.chunks`): explain_attribution, ``explain.chunk_size`` images of
    at most ``explain.images.max_images`` (a chunk past the last image is empty)."""
    if stage == "explain_attribution":
        explain = config["explain"]
        return chunk_names(
            n_chunks(explain["images"]["max_images"], explain["chunk_size"])
        )
    if stage == "synthesis_units":
        vis = config["synthesis"]["visualisation"]
        counts = [len(units) for units in get_visualised_units().values()]
        size = config["synthesis"]["chunk_size"]
        return chunk_names(n_batch_chunks(counts, vis["batch_size"], size))
    raise ValueError(f"no chunked stage {stage!r}")


def get_model_info_checkpoint(wildcards=None):
    """The model_info checkpoint's output, as an input of the target rule ``all``.

    Jobs that wait for a checkpoint are re-planned only when they are inputs of a job that
    waits for it too: the unit images' merge, planned while ``all`` is resolved after the
    manifest checkpoint, would otherwise keep its chunk inputs unresolved (``<TBD>``)
    whenever model_info does not rerun (a deleted shard, say)."""
    return checkpoints.model_info.get().output.info


def get_visualised_units():
    """synthesis_units' layer -> its units (their number is what counts): the listed channels;
    a layer's ``all``, every channel of it (from results/model/model_info.json, the one case
    that waits for that file: model_info is a checkpoint); no units, ``units_per_layer`` of
    each analysed layer (an upper bound: a layer with fewer channels leaves chunks empty).
    """
    vis = config["synthesis"]["visualisation"]
    if not vis["units"]:
        return {layer: range(vis["units_per_layer"]) for layer in config["layers"]}
    units = dict(vis["units"])
    if "all" in units.values():
        with open(checkpoints.model_info.get().output.info) as fh:
            shapes = {k: v["shape"] for k, v in json.load(fh)["layers"].items()}
        for layer, chosen in units.items():
            if chosen == "all" and layer not in shapes:
                sys.exit(
                    f"convscope: synthesis.visualisation.units: {layer!r}: all needs the "
                    f"layer's channel count; add {layer!r} to `layers` (analysed: "
                    f"{', '.join(shapes)}) or list its channels"
                )
            if chosen == "all":
                units[layer] = range(shapes[layer][0])
    return units


def get_chunk_outputs(stage, name):
    """Input function of a chunked stage's merge rule: output ``name`` of every chunk job
    (rule ``<stage>_chunk``), in chunk order."""

    def chunk_outputs(wildcards=None):
        chunk_rule = getattr(rules, f"{stage}_chunk")
        return expand(getattr(chunk_rule.output, name), chunk=get_chunks(stage))

    return chunk_outputs


def get_stage_rules():
    """The explanation and synthesis rules this config runs: those the ``stages`` key turns
    on (`convscope.config.stages`), correspondence and keypoints only with manifest columns
    that locate the part / keypoint, or on the demo dataset. A new stage is appended to this
    list and to OPTIONAL_STAGES; `all` then asks for every output (a deleted file is
    rebuilt), the report gets its ``summary.json`` and its benchmark file."""
    chosen = chosen_stages(config)
    names = [
        name for name in chosen if name.removeprefix("explain_") not in _EXPLAIN_COLUMNS
    ]
    for stage in _EXPLAIN_COLUMNS:
        name = f"explain_{stage}"
        if name in chosen and explain_stage_runs(stage):
            names.append(name)
        elif name in chosen and not isinstance(config["stages"], str):
            sys.exit(
                f"convscope: stages lists {name} but "
                f"explain.{stage}.{_EXPLAIN_COLUMNS[stage][0]} is not set (the manifest "
                "columns that locate it); set them or leave the stage out"
            )
    if "dissect" in names:
        get_dissect_concepts()  # stops here, before any job, without masks to read
    return [getattr(rules, name) for name in names]


def attribution_runs():
    """Whether explain_attribution runs, and so the image set it explains is made."""
    return rules.explain_attribution in get_stage_rules()


def get_stage_layers(stage):
    """The layers of the dissect / ablation stage: its own ``layers``, else the analysed ones."""
    return list(config[stage]["layers"] or config["layers"] or [])


def get_layer_files(stage):
    """File-name-safe names of the stage's layers (`layer_file_names`), in order."""
    names = layer_file_names(get_stage_layers(stage))
    return [names[layer] for layer in get_stage_layers(stage)]


def get_layer_folders(stage, folder, suffix=""):
    """Layer -> ``<folder>/<safe name><suffix>`` for the stage's layers."""
    names = layer_file_names(get_stage_layers(stage))
    return {layer: f"{folder}/{name}{suffix}" for layer, name in names.items()}


def dissect_runs():
    """Whether the ``stages`` key turns the dissect stage on."""
    return "dissect" in chosen_stages(config)


def uses_demo_concepts():
    """Whether the dissect stage reads the demo dataset's own masks (no dissect.concepts)."""
    return (
        dissect_runs()
        and not config["dissect"]["concepts"]
        and config["dataset"]["kind"] == "demo"
    )


def get_dissect_concepts(wildcards=None):
    """The concept masks of the dissect stage: ``dissect.concepts``, or the demo's index."""
    if config["dissect"]["concepts"]:
        return config["dissect"]["concepts"]
    if config["dataset"]["kind"] == "demo":
        return rules.demo_concepts.output.index
    sys.exit(
        "convscope: stages turns dissect on but dissect.concepts is not set; give a "
        "Broden-style index.csv or a folder of concept folders (only the demo dataset "
        "brings its own masks)"
    )


def get_ablation_dissect_summaries(wildcards=None):
    """Layer -> the dissect stage's summary.csv, for the layers both stages analyse (the
    ablation's units table joins each unit's concept label); empty without dissect."""
    if not dissect_runs():
        return {}
    folders = get_layer_folders("dissect", "results/dissect")
    return {
        layer: os.path.join(folders[layer], "summary.csv")
        for layer in get_stage_layers("ablation")
        if layer in folders
    }


def get_ablation_dissect_input(wildcards=None):
    """The dissect summaries the ablation stage reads (`get_ablation_dissect_summaries`)."""
    return list(get_ablation_dissect_summaries().values())


def get_stage_summaries(wildcards=None):
    """The ``summary.json`` of every explanation and synthesis stage the report shows.

    Each stage writes one (contract in docs/design.md, "Stage summaries"): a title, a
    caption, its figures and tables, and per-unit images for the unit pages.
    """
    return [stage.output.summary for stage in get_stage_rules()]


def get_stage_outputs(wildcards=None):
    """Every output of the explanation and synthesis stages that run, and their inputs made
    by the workflow alone (the explain image set): `all` asks for them so that a deleted
    table or figure is rebuilt (the report reads only the summaries). Not the chunk files
    of chunked stages: their number may wait for the model_info checkpoint, and `all`
    (so a dry run) must not wait for it; the merge rules ask for them."""
    outputs = [rules.explain_images.output.images] if attribution_runs() else []
    for stage in get_stage_rules():
        outputs += list(stage.output)
    return outputs


def get_benchmark_files(wildcards=None):
    """The ``benchmark:`` files (wall time, peak memory) of every rule `all` runs for this
    config, for the report's provenance: one per shard for `extract`, the demo's data and
    model only when the workflow makes them. The report's own benchmark is left out (the
    report cannot read a file written after it). New rules that are not stages of
    `get_stage_rules` append their rule's ``benchmark`` here (``rules.<rule>.benchmark``).
    """
    shards = [f"{i:05d}" for i in range(len(get_shard_paths()))]
    files = []
    if config["dataset"]["kind"] == "demo":
        files.append(rules.demo_dataset.benchmark)
    if config["model"]["kind"] == "demo" and not config["model"]["weights"]:
        files.append(rules.train_demo_model.benchmark)
    if uses_demo_concepts():
        files.append(rules.demo_concepts.benchmark)
    files += [
        rules.manifest.benchmark,
        rules.model_info.benchmark,
        *expand(rules.extract.benchmark, shard=shards),
        rules.shard_index.benchmark,
        rules.topk_units.benchmark,
        rules.unit_stats.benchmark,
        rules.filters.benchmark,
        rules.performance.benchmark,
        rules.embedding.benchmark,
        rules.neighbours.benchmark,
        rules.config_used.benchmark,
        rules.export.benchmark,
    ]
    if attribution_runs():
        files.append(rules.explain_images.benchmark)
    files += [stage.benchmark for stage in get_stage_rules()]
    # the attribution chunks' files (their number comes from the config alone); not the
    # unit images' chunks, whose number may wait for the model_info checkpoint: the report
    # must not wait for it
    chunked = [
        stage.rule.name
        for stage in get_stage_rules()
        if stage.rule.name == "explain_attribution"
    ]
    for stage in chunked:
        files += expand(
            getattr(rules, f"{stage}_chunk").benchmark, chunk=get_chunks(stage)
        )
    return files


#: stages split into chunk jobs (rule ``<stage>_chunk``) and a merge job (rule ``<stage>``)
CHUNKED_STAGES = ("explain_attribution", "synthesis_units")


#: explain stage -> (its manifest-columns key, units key, the demo dataset's columns)
_EXPLAIN_COLUMNS = {
    "correspondence": ("part_columns", "part_units", DEMO_PART_COLUMNS),
    "keypoints": ("point_columns", "point_units", DEMO_POINT_COLUMNS),
}


def get_explain_section(stage):
    """``explain.<stage>`` (correspondence or keypoints) as the rule's param: null manifest
    columns become the demo shape's for the demo dataset (`convscope.explain.columns`).
    """
    columns_key, units_key, demo_columns = _EXPLAIN_COLUMNS[stage]
    section = stage_columns(
        config["explain"][stage],
        columns_key,
        units_key,
        config["dataset"]["kind"],
        demo_columns,
    )
    return section if section is not None else config["explain"][stage]


def explain_stage_runs(stage):
    """Whether the correspondence / keypoint stage is part of the run: its manifest columns
    are set, or the dataset is the demo's (whose generator knows where each shape is).
    """
    columns_key = _EXPLAIN_COLUMNS[stage][0]
    return bool(get_explain_section(stage)[columns_key])


def get_demo_checkpoint_epochs(wildcards=None):
    """Epochs after which the demo training also saves its weights
    (model.train.checkpoint_epochs)."""
    try:
        return demo_checkpoint_epochs(config["model"]["train"])
    except ValueError as exc:
        sys.exit(f"convscope: {exc}")


def get_demo_checkpoints(wildcards=None):
    """The demo training's checkpoint files, in epoch order (outputs of train_demo_model)."""
    get_demo_checkpoint_epochs()  # stops with the message if the epochs are wrong
    return demo_checkpoint_paths(config["model"]["train"])


def _trains_demo_model():
    return config["model"]["kind"] == "demo" and not config["model"]["weights"]


def get_evolution_checkpoints(wildcards=None):
    """Weights files for synthesis_evolution: synthesis.evolution.checkpoints, or for the
    demo model the training's saved epochs and its final weights; else none (skipped).
    """
    given = config["synthesis"]["evolution"]["checkpoints"]
    if given:
        return list(given)
    if _trains_demo_model():
        return [*get_demo_checkpoints(), rules.train_demo_model.output.weights]
    return []


def get_evolution_checkpoints_sha256(wildcards=None):
    """SHA-256 of each checkpoint (None while one does not exist yet); see get_weights_sha256."""
    return [
        (
            cached_sha256(path, ".snakemake/convscope/sha256-cache.json")
            if os.path.exists(path)
            else None
        )
        for path in get_evolution_checkpoints()
    ]


def get_cka_checkpoints(wildcards=None):
    """The checkpoints the cka stage compares the model with (those of synthesis_evolution,
    without the final weights, which are the model itself), or none when
    similarity.cka.checkpoints is off."""
    if not config["similarity"]["cka"]["checkpoints"]:
        return []
    final = rules.train_demo_model.output.weights if _trains_demo_model() else None
    return [path for path in get_evolution_checkpoints() if path != final]


def get_cka_checkpoints_sha256(wildcards=None):
    """SHA-256 of each checkpoint of the cka stage (None while one does not exist yet)."""
    return [
        (
            cached_sha256(path, ".snakemake/convscope/sha256-cache.json")
            if os.path.exists(path)
            else None
        )
        for path in get_cka_checkpoints()
    ]


def get_evolution_skip_reason(wildcards=None):
    """Why synthesis_evolution has no checkpoints to show (written in its summary)."""
    return (
        "synthesis.evolution.checkpoints is empty and the model is not the demo model the "
        "workflow trains; list the weight files of your model's checkpoints there"
    )


def get_synthesis_layers(stage):
    """The analysed layers (``layers``) for a synthesis stage that takes its units or layers
    from them (its own setting is empty), else None, so that changing ``layers`` reruns only
    the stages that use them. ``stage``: units, inversion, evolution, dream or style."""
    synthesis = config["synthesis"]
    own = {
        "units": synthesis["visualisation"]["units"],
        "inversion": synthesis["inversion"]["layers"],
        "evolution": synthesis["evolution"]["units"],
        "dream": synthesis["dream"]["layer"],
        "style": synthesis["style"]["content_layers"]
        and synthesis["style"]["style_layers"],
    }
    return None if own[stage] else config["layers"]


def get_synthesis_model_info(stage):
    """``results/model/model_info.json`` as an input of a synthesis stage that uses the
    analysed layers (`get_synthesis_layers`), else none: like every rule that uses the
    layers, it then reruns with the model description they change."""
    return (
        [] if get_synthesis_layers(stage) is None else "results/model/model_info.json"
    )


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
        "unit_histograms": rules.unit_stats.output.histograms,
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
        produced += [
            rules.demo_dataset.output.manifest,
            rules.demo_dataset.output.images,
        ]
    if config["model"]["kind"] == "demo" and not config["model"]["weights"]:
        produced += [rules.train_demo_model.output.weights, *get_demo_checkpoints()]
    if uses_demo_concepts():
        produced += list(rules.demo_concepts.output)
    produced += get_stage_outputs()
    produced += list(rules.export.output)
    return [
        rules.report.output.html,
        *report_inputs,
        *produced,
        *rules.manifest.output,
        rules.model_info.output.info,
        rules.shard_index.output[0],
        *get_shard_paths(),
    ]
