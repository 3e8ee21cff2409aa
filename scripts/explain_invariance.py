"""Snakemake script: feature distance and class probability under translation, scale, rotation."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import InvarianceConfig, ModelConfig, PreprocessConfig  # noqa: E402
from convscope.explain.invariance import run_explain_invariance  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_explain_invariance(ModelConfig.from_dict(snakemake.params.model),
                           snakemake.input.weights or None,
                           InvarianceConfig.from_dict(snakemake.params.invariance),
                           PreprocessConfig.from_dict(snakemake.params.preprocess),
                           snakemake.params.layers, snakemake.input.manifest,
                           device=snakemake.resources.explain_device,
                           batch_size=snakemake.resources.explain_batch_size,
                           curves_csv=snakemake.output.curves,
                           figures={"vertical_translation": snakemake.output.translation,
                                    "scale": snakemake.output.scale,
                                    "rotation": snakemake.output.rotation},
                           summary_json=snakemake.output.summary)
