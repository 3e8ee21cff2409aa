"""Snakemake script: chosen units across training checkpoints."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import (EvolutionConfig, ModelConfig,  # noqa: E402
                                       PreprocessConfig, VisualisationConfig)
from convscope.logs import log_to_file  # noqa: E402
from convscope.synthesis.evolution import run_evolution  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_evolution(
        ModelConfig.from_dict(snakemake.params.model),
        PreprocessConfig.from_dict(snakemake.params.preprocess),
        EvolutionConfig.from_dict(snakemake.params.evolution),
        VisualisationConfig.from_dict(snakemake.params.visualisation), snakemake.params.device,
        snakemake.params.seed, snakemake.input.manifest, snakemake.params.layers,
        list(snakemake.input.checkpoints), evolution_h5=snakemake.output.evolution,
        strips_dir=snakemake.output.strips, summary_json=snakemake.output.summary,
        skip_reason=snakemake.params.skip_reason)
