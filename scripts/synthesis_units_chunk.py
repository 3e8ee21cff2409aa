"""Snakemake script: unit images by gradient ascent, one chunk of the unit batches."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import (ModelConfig, PreprocessConfig,  # noqa: E402
                                       VisualisationConfig)
from convscope.logs import log_to_file  # noqa: E402
from convscope.store.chunks import batches_per_chunk  # noqa: E402
from convscope.synthesis.units import run_unit_chunk  # noqa: E402

with log_to_file(snakemake.log[0]):
    visualisation = VisualisationConfig.from_dict(snakemake.params.visualisation)
    run_unit_chunk(
        ModelConfig.from_dict(snakemake.params.model), snakemake.input.weights or None,
        PreprocessConfig.from_dict(snakemake.params.preprocess), visualisation,
        snakemake.params.device, snakemake.params.seed, snakemake.params.layers,
        stats_csv=snakemake.input.stats, images_h5=snakemake.output.images,
        png_dir=snakemake.output.png,
        chunk=snakemake.params.chunk,
        chunks_of=batches_per_chunk(snakemake.params.chunk_size, visualisation.batch_size))
