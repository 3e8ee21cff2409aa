"""Snakemake script: concept labels per unit (Network Dissection)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import DissectConfig, ModelConfig, PreprocessConfig  # noqa: E402
from convscope.dissect.stage import run_dissect  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_dissect(ModelConfig.from_dict(snakemake.params.model), snakemake.input.weights or None,
                DissectConfig.from_dict(snakemake.params.dissect),
                PreprocessConfig.from_dict(snakemake.params.preprocess),
                snakemake.params.layers, snakemake.input.manifest, snakemake.input.concepts,
                layer_dirs=snakemake.params.layer_dirs,
                image_concepts_csv=snakemake.output.image_concepts,
                detectors_png=snakemake.output.detectors, summary_json=snakemake.output.summary)
