"""Snakemake script: causal ablation of units on held-out images."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import AblationConfig, ModelConfig, PreprocessConfig  # noqa: E402
from convscope.dissect.ablation_stage import run_ablation  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_ablation(ModelConfig.from_dict(snakemake.params.model), snakemake.input.weights or None,
                 AblationConfig.from_dict(snakemake.params.ablation),
                 PreprocessConfig.from_dict(snakemake.params.preprocess),
                 snakemake.params.layers, snakemake.input.manifest,
                 layer_csvs=snakemake.params.layer_csvs, curves_csv=snakemake.output.curves,
                 curves_png=snakemake.output.curves_png, units_csv=snakemake.output.units,
                 summary_json=snakemake.output.summary, topk_csv=snakemake.input.topk,
                 dissect_summaries=snakemake.params.dissect_summaries)
