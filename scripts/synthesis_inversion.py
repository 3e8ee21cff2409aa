"""Snakemake script: feature inversion of a sample of images from chosen layers."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import (InversionConfig, ModelConfig,  # noqa: E402
                                       PreprocessConfig)
from convscope.logs import log_to_file  # noqa: E402
from convscope.synthesis.inversion import run_inversion  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_inversion(
        ModelConfig.from_dict(snakemake.params.model), snakemake.input.weights or None,
        PreprocessConfig.from_dict(snakemake.params.preprocess),
        InversionConfig.from_dict(snakemake.params.inversion), snakemake.params.device,
        snakemake.params.seed, snakemake.input.manifest, snakemake.params.layers,
        inversion_h5=snakemake.output.inversion, figure_png=snakemake.output.figure,
        summary_json=snakemake.output.summary)
