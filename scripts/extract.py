"""Snakemake script: extract one shard."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.extract.pipeline import extract_shard  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

with log_to_file(snakemake.log[0]):
    extract_shard(snakemake.config, snakemake.input.manifest,
                  json.loads(Path(snakemake.input.model_info).read_text()),
                  snakemake.params.shard_id, snakemake.output[0],
                  weights_file=snakemake.input.weights or None)
