"""Snakemake script: filter-weight images and activation-map panels."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.analysis.filters import run_filters  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_filters(snakemake.config, snakemake.output[0], shard_paths=snakemake.input.shards,
                manifest_csv=snakemake.input.manifest, stats_csv=snakemake.input.stats,
                weights_file=snakemake.input.weights or None)
