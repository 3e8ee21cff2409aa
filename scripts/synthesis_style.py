"""Snakemake script: texture synthesis and style transfer (Gatys et al.)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import StyleConfig, ModelConfig, PreprocessConfig  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402
from convscope.synthesis.style import run_style  # noqa: E402

params, output = snakemake.params, snakemake.output
with log_to_file(snakemake.log[0]):
    run_style(ModelConfig.from_dict(params.model), snakemake.input.weights or None,
        PreprocessConfig.from_dict(params.preprocess), StyleConfig.from_dict(params.style),
        params.layers, snakemake.input.manifest, device=params.device, seed=params.seed,
        texture_png=output.texture, transfer_png=output.transfer,
        losses_png=output.losses_png, losses_csv=output.losses_csv, h5_path=output.h5,
        summary_json=output.summary)
