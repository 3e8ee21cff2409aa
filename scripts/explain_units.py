"""Snakemake script: deconvnet and guided-backprop reconstructions of units on their top images."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import (ExplainReconstructionsConfig, ModelConfig,  # noqa: E402
                                       PreprocessConfig)
from convscope.explain.units_stage import run_explain_units  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

# The speed settings come as resources (changing them reruns nothing), the rest as params.
with log_to_file(snakemake.log[0]):
    run_explain_units(ModelConfig.from_dict(snakemake.params.model), snakemake.input.weights or None,
                      PreprocessConfig.from_dict(snakemake.params.preprocess),
                      ExplainReconstructionsConfig.from_dict(snakemake.params.reconstructions),
                      snakemake.params.layers, device=snakemake.resources.explain_device,
                      batch_size=snakemake.resources.explain_batch_size,
                      topk_csv=snakemake.input.topk, manifest_csv=snakemake.input.manifest,
                      model_info_json=snakemake.input.model_info,
                      reconstructions_h5=snakemake.output.reconstructions,
                      figures_dir=snakemake.output.figures, summary_json=snakemake.output.summary)
