"""Snakemake script: train the demo CNN."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import PreprocessConfig, TrainConfig  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402
from convscope.nn.train import train_demo_model  # noqa: E402

with log_to_file(snakemake.log[0]):
    train_demo_model(snakemake.input.manifest, TrainConfig.from_dict(snakemake.params.train),
                     PreprocessConfig.from_dict(snakemake.params.preprocess),
                     snakemake.output.weights, snakemake.output.metrics,
                     dict(zip(snakemake.params.checkpoint_epochs, snakemake.output.checkpoints)))
