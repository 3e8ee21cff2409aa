"""Snakemake script: accuracy overall, per class and per attribute; other predictions."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.analysis.performance import run_performance  # noqa: E402
from convscope.config.sections import PerformanceConfig  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_performance(snakemake.input.shards, snakemake.input.manifest,
                    PerformanceConfig.from_dict(snakemake.params.performance),
                    overall=snakemake.output.overall, per_class=snakemake.output.per_class,
                    per_attribute=snakemake.output.per_attribute,
                    tables=snakemake.output.tables, confusion=snakemake.output.confusion,
                    confusion_plot=snakemake.output.confusion_plot,
                    plots=snakemake.output.plots, comparison=snakemake.output.comparison,
                    agreement=snakemake.output.agreement,
                    comparison_examples=snakemake.output.comparison_examples,
                    comparison_panel=snakemake.output.comparison_panel)
