"""Snakemake script: t-SNE map of the CNN codes, mosaic and cloud."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.analysis.embedding import run_embedding  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_embedding(snakemake.input.shards, snakemake.input.manifest,
                  Path(snakemake.output.coords).parent, snakemake.params.embedding,
                  n_jobs=snakemake.threads)
