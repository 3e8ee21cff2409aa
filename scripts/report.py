"""Snakemake script: write the HTML report."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.logs import log_to_file  # noqa: E402
from convscope.report.build import build_report  # noqa: E402

with log_to_file(snakemake.log[0]):
    build_report(snakemake.output[0], snakemake.config, snakemake.input.manifest,
                 list(snakemake.input.shards), snakemake.input.model_info,
                 list(snakemake.input.outputs))
