"""Snakemake script: nearest neighbours in code and pixel space, k-NN accuracy."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.logs import log_to_file  # noqa: E402
from convscope.analysis.neighbours import run_neighbours  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_neighbours(snakemake.input.shards, snakemake.input.manifest,
                   Path(snakemake.output.queries).parent, snakemake.params.neighbours,
                   n_threads=snakemake.threads)
