"""Snakemake script: filter-weight images and activation-map panels."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.analysis.filters import run_filters  # noqa: E402
from convscope.config.sections import FiltersConfig, ModelConfig, PreprocessConfig  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_filters(ModelConfig.from_dict(snakemake.params.model), snakemake.input.weights or None,
                FiltersConfig.from_dict(snakemake.params.filters), snakemake.params.layers,
                PreprocessConfig.from_dict(snakemake.params.preprocess), snakemake.output[0],
                shard_paths=snakemake.input.shards, manifest_csv=snakemake.input.manifest,
                stats_csv=snakemake.input.stats)
