"""Snakemake script: deep dream on a seeded sample of images."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import ModelConfig, PreprocessConfig, SynthesisConfig  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402
from convscope.synthesis.dream import run_dream  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_dream(ModelConfig.from_dict(snakemake.params.model), snakemake.input.weights or None,
              PreprocessConfig.from_dict(snakemake.params.preprocess),
              SynthesisConfig.from_dict(snakemake.params.synthesis), snakemake.params.layers,
              snakemake.input.manifest, images_dir=snakemake.output.images,
              grid_png=snakemake.output.grid, h5_path=snakemake.output.h5,
              summary_json=snakemake.output.summary)
