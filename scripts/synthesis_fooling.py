"""Snakemake script: fooling images from noise, one per class."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import ModelConfig, PreprocessConfig, SynthesisConfig  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402
from convscope.synthesis.fooling import run_fooling  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_fooling(ModelConfig.from_dict(snakemake.params.model), snakemake.input.weights or None,
                PreprocessConfig.from_dict(snakemake.params.preprocess),
                SynthesisConfig.from_dict(snakemake.params.synthesis),
                snakemake.input.manifest, grid_png=snakemake.output.grid,
                table_csv=snakemake.output.table, h5_path=snakemake.output.h5,
                summary_json=snakemake.output.summary)
