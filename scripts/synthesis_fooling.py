"""Snakemake script: fooling images from noise, one per class."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import FoolingConfig, ModelConfig, PreprocessConfig  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402
from convscope.synthesis.fooling import run_fooling  # noqa: E402

params, output = snakemake.params, snakemake.output
with log_to_file(snakemake.log[0]):
    run_fooling(ModelConfig.from_dict(params.model), snakemake.input.weights or None,
        PreprocessConfig.from_dict(params.preprocess), FoolingConfig.from_dict(params.fooling),
        snakemake.input.manifest, device=params.device, seed=params.seed,
        grid_png=output.grid, table_csv=output.table, h5_path=output.h5,
        summary_json=output.summary)
