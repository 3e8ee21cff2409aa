"""Snakemake script: linear CKA between the analysed layers and across checkpoints."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.analysis.similarity import run_cka  # noqa: E402
from convscope.config.sections import CkaConfig, ModelConfig, PreprocessConfig  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_cka(list(snakemake.input.shards), snakemake.params.layers,
            CkaConfig.from_dict(snakemake.params.cka),
            ModelConfig.from_dict(snakemake.params.model), snakemake.input.weights or None,
            PreprocessConfig.from_dict(snakemake.params.preprocess),
            list(snakemake.input.checkpoints), snakemake.input.manifest,
            device=snakemake.resources.explain_device,
            batch_size=snakemake.resources.explain_batch_size,
            cka_csv=snakemake.output.table, heatmap_png=snakemake.output.heatmap,
            summary_json=snakemake.output.summary)
