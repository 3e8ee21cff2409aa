"""Snakemake script: accuracy overall, per class and per attribute."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.logs import log_to_file  # noqa: E402
from convscope.analysis.performance import run_performance  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_performance(snakemake.input.shards, snakemake.input.manifest,
                    Path(snakemake.output.overall).parent, snakemake.params.performance)
