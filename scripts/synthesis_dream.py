"""Snakemake script: deep dream on a seeded sample of images."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import DreamConfig, ModelConfig, PreprocessConfig  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402
from convscope.synthesis.dream import run_dream  # noqa: E402

params, output = snakemake.params, snakemake.output
with log_to_file(snakemake.log[0]):
    run_dream(ModelConfig.from_dict(params.model), snakemake.input.weights or None,
        PreprocessConfig.from_dict(params.preprocess), DreamConfig.from_dict(params.dream),
        params.layers, snakemake.input.manifest, device=params.device, seed=params.seed,
        images_dir=output.images, grid_png=output.grid, h5_path=output.h5,
        summary_json=output.summary)
