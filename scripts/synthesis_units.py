"""Snakemake script: unit images by gradient ascent, the chunks merged and judged."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import PreprocessConfig, VisualisationConfig  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402
from convscope.store.chunks import chunk_paths  # noqa: E402
from convscope.synthesis.units import merge_unit_visualisation  # noqa: E402

with log_to_file(snakemake.log[0]):
    merge_unit_visualisation(
        VisualisationConfig.from_dict(snakemake.params.visualisation),
        PreprocessConfig.from_dict(snakemake.params.preprocess),
        chunk_images=chunk_paths(snakemake.input, "images.h5"),
        chunk_png=chunk_paths(snakemake.input, "png"), shard_paths=list(snakemake.input.shards),
        images_h5=snakemake.output.images, curves_png=snakemake.output.curves,
        png_dir=snakemake.output.png, summary_json=snakemake.output.summary)
