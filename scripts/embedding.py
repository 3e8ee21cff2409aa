"""Snakemake script: t-SNE map of the CNN codes, mosaic and cloud."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.analysis.embedding import run_embedding  # noqa: E402
from convscope.config.sections import EmbeddingConfig  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_embedding(snakemake.input.shards, snakemake.input.manifest,
                  EmbeddingConfig.from_dict(snakemake.params.embedding),
                  coords=snakemake.output.coords, scatter=snakemake.output.scatter,
                  mosaic=snakemake.output.mosaic, cloud=snakemake.output.cloud,
                  summary=snakemake.output.summary, n_jobs=snakemake.threads)
