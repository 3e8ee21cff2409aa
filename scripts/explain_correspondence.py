"""Snakemake script: sign consistency of feature changes when one part is occluded."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import (CorrespondenceConfig, ModelConfig,  # noqa: E402
                                       PreprocessConfig)
from convscope.explain.correspondence import run_explain_correspondence  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_explain_correspondence(ModelConfig.from_dict(snakemake.params.model),
                               snakemake.input.weights or None,
                               CorrespondenceConfig.from_dict(snakemake.params.correspondence),
                               PreprocessConfig.from_dict(snakemake.params.preprocess),
                               snakemake.params.layers, snakemake.input.manifest,
                               device=snakemake.resources.explain_device,
                               batch_size=snakemake.resources.explain_batch_size,
                               delta_csv=snakemake.output.delta,
                               examples_png=snakemake.output.examples,
                               summary_json=snakemake.output.summary)
