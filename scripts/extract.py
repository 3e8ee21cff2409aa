"""Snakemake script: extract one shard."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config import ExtractConfig, ModelConfig, PreprocessConfig  # noqa: E402
from convscope.extract.pipeline import extract_shard  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

# The speed settings come as resources (changing them reruns nothing), the rest as params.
speed = {"batch_size": snakemake.resources.extract_batch_size,
         "num_workers": snakemake.resources.extract_num_workers,
         "device": snakemake.resources.extract_device}

with log_to_file(snakemake.log[0]):
    extract_shard(snakemake.input.manifest,
                  json.loads(Path(snakemake.input.model_info).read_text()),
                  snakemake.params.shard_id, snakemake.output[0],
                  model=ModelConfig.from_dict(snakemake.params.model),
                  preprocess=PreprocessConfig.from_dict(snakemake.params.preprocess),
                  extract=ExtractConfig.from_dict({**snakemake.params.extract, **speed}),
                  layers=snakemake.params.layers, codes_layer=snakemake.params.codes_layer,
                  weights_file=snakemake.input.weights or None)
