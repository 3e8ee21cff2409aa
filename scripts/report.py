"""Snakemake script: write the report site."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import DatasetConfig, ReportConfig  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402
from convscope.report import ReportInputs, build_report  # noqa: E402

with log_to_file(snakemake.log[0]):
    build_report(ReportConfig.from_dict(snakemake.params.report),
                 DatasetConfig.from_dict(snakemake.params.dataset),
                 ReportInputs.from_mapping(snakemake.input.items()),
                 index_html=snakemake.output.html, pages_dir=snakemake.params.pages,
                 assets_dir=snakemake.params.assets)
