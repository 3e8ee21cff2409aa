"""Snakemake script: nearest neighbours in code and pixel space, k-NN accuracy."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.analysis.neighbours import run_neighbours  # noqa: E402
from convscope.config.sections import NeighboursConfig, PreprocessConfig  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_neighbours(snakemake.input.shards, snakemake.input.manifest,
                   NeighboursConfig.from_dict(snakemake.params.neighbours),
                   queries=snakemake.output.queries, panels=snakemake.output.panels,
                   accuracy=snakemake.output.accuracy,
                   preprocess=PreprocessConfig.from_dict(snakemake.params.preprocess),
                   n_threads=snakemake.threads)
