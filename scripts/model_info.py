"""Snakemake script: describe the model's analysed layers (shapes, receptive fields)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import ModelConfig, PreprocessConfig  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402
from convscope.nn.model_info import write_model_info  # noqa: E402

with log_to_file(snakemake.log[0]):
    write_model_info(ModelConfig.from_dict(snakemake.params.model),
                     PreprocessConfig.from_dict(snakemake.params.preprocess),
                     snakemake.params.layers, snakemake.params.codes_layer,
                     snakemake.input.weights or None, snakemake.output.info)
