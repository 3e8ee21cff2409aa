"""Snakemake script: linear probes of every analysed layer for the class and the attributes."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.analysis.probes import run_probes  # noqa: E402
from convscope.config.sections import ProbesConfig  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_probes(list(snakemake.input.shards), snakemake.params.layers,
               ProbesConfig.from_dict(snakemake.params.probes), snakemake.input.manifest,
               probes_csv=snakemake.output.table, plot_png=snakemake.output.plot,
               summary_json=snakemake.output.summary)
