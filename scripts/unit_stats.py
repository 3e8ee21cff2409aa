"""Snakemake script: per-channel firing rates, activations, class selectivity, histograms."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.analysis.unit_stats import run_unit_stats  # noqa: E402
from convscope.config.sections import UnitStatsConfig  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_unit_stats(snakemake.input.shards, snakemake.input.manifest,
                   UnitStatsConfig.from_dict(snakemake.params.unit_stats),
                   stats_csv=snakemake.output.stats, summary_csv=snakemake.output.summary,
                   plot_png=snakemake.output.plot, histograms_h5=snakemake.output.histograms)
