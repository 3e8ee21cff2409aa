"""Snakemake script: unit images by gradient ascent, whole layers in batches."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import (ModelConfig, PreprocessConfig,  # noqa: E402
                                       VisualisationConfig)
from convscope.logs import log_to_file  # noqa: E402
from convscope.synthesis.units import run_unit_visualisation  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_unit_visualisation(
        ModelConfig.from_dict(snakemake.params.model), snakemake.input.weights or None,
        PreprocessConfig.from_dict(snakemake.params.preprocess),
        VisualisationConfig.from_dict(snakemake.params.visualisation), snakemake.params.device,
        snakemake.params.seed, snakemake.params.layers, stats_csv=snakemake.input.stats,
        shard_paths=list(snakemake.input.shards), images_h5=snakemake.output.images,
        curves_png=snakemake.output.curves, png_dir=snakemake.output.png,
        summary_json=snakemake.output.summary)
