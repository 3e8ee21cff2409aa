"""Snakemake script: check every shard against the config and index them."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config import ModelConfig, PreprocessConfig  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402
from convscope.extract.index import write_shard_index  # noqa: E402

with log_to_file(snakemake.log[0]):
    write_shard_index(list(snakemake.input.shards), snakemake.input.manifest, snakemake.output[0],
                      model=ModelConfig.from_dict(snakemake.params.model),
                      weights_file=snakemake.input.weights or None,
                      preprocess=PreprocessConfig.from_dict(snakemake.params.preprocess),
                      layers=snakemake.params.layers, codes_layer=snakemake.params.codes_layer,
                      shard_size=snakemake.params.shard_size)
