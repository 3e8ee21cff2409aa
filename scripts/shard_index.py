"""Snakemake script: check every shard against the config and index them."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.logs import log_to_file  # noqa: E402
from convscope.store.index import write_shard_index  # noqa: E402

with log_to_file(snakemake.log[0]):
    write_shard_index(list(snakemake.input.shards), snakemake.config, snakemake.input.manifest,
                      snakemake.output[0], weights_file=snakemake.input.weights or None)
