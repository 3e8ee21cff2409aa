"""Snakemake script: write the HTML report."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import DatasetConfig, ReportConfig  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402
from convscope.report.build import ReportInputs, build_report  # noqa: E402

with log_to_file(snakemake.log[0]):
    build_report(ReportConfig.from_dict(snakemake.params.report),
                 DatasetConfig.from_dict(snakemake.params.dataset),
                 ReportInputs.from_mapping(snakemake.input.items()),
                 snakemake.output.html)
