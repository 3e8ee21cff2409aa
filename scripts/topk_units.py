"""Snakemake script: top-k images per unit, with receptive-field patches."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.analysis.topk_units import run_topk_units  # noqa: E402
from convscope.config.sections import UnitsConfig  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_topk_units(snakemake.input.shards, snakemake.input.manifest,
                   UnitsConfig.from_dict(snakemake.params.units),
                   table_csv=snakemake.output.table, index_json=snakemake.output.index,
                   pages_dir=snakemake.output.pages, layers=snakemake.params.layers)
