"""Snakemake script: class-model images by gradient ascent."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import (ModelConfig, PreprocessConfig,  # noqa: E402
                                       VisualisationConfig)
from convscope.data.manifest import classes_path  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402
from convscope.synthesis.visualise import run_class_visualisation  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_class_visualisation(
        ModelConfig.from_dict(snakemake.params.model), snakemake.input.weights or None,
        PreprocessConfig.from_dict(snakemake.params.preprocess),
        VisualisationConfig.from_dict(snakemake.params.visualisation), snakemake.params.device,
        snakemake.params.seed, classes_path(snakemake.input.manifest),
        images_h5=snakemake.output.images, curves_png=snakemake.output.curves,
        grid_png=snakemake.output.grid, png_dir=snakemake.output.png,
        summary_json=snakemake.output.summary)
