"""Snakemake script: texture synthesis and style transfer (Gatys et al.)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import ModelConfig, PreprocessConfig, SynthesisConfig  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402
from convscope.synthesis.style import run_style  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_style(ModelConfig.from_dict(snakemake.params.model), snakemake.input.weights or None,
              PreprocessConfig.from_dict(snakemake.params.preprocess),
              SynthesisConfig.from_dict(snakemake.params.synthesis), snakemake.params.layers,
              snakemake.input.manifest, texture_png=snakemake.output.texture,
              transfer_png=snakemake.output.transfer, losses_png=snakemake.output.losses_png,
              losses_csv=snakemake.output.losses_csv, h5_path=snakemake.output.h5,
              summary_json=snakemake.output.summary)
