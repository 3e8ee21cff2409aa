"""Snakemake script: adversarial examples (fast gradient sign, iterative targeted attack)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import AdversarialConfig, ModelConfig, PreprocessConfig  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402
from convscope.synthesis.adversarial import run_adversarial  # noqa: E402

params, output = snakemake.params, snakemake.output
with log_to_file(snakemake.log[0]):
    run_adversarial(ModelConfig.from_dict(params.model), snakemake.input.weights or None,
        PreprocessConfig.from_dict(params.preprocess),
        AdversarialConfig.from_dict(params.adversarial),
        snakemake.input.manifest, device=params.device, panels_dir=output.panels,
        table_csv=output.table, h5_path=output.h5, summary_json=output.summary)
