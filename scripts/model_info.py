"""Snakemake script: describe the model's analysed layers (shapes, receptive fields)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.logs import log_to_file  # noqa: E402
from convscope.nn.model_info import write_model_info  # noqa: E402

with log_to_file(snakemake.log[0]):
    write_model_info(snakemake.config, snakemake.output[0], snakemake.input.weights or None)
