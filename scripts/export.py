"""Snakemake script: the per-image table and the codes as Parquet (pandas, DuckDB, FiftyOne)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.analysis.export import export_tables  # noqa: E402
from convscope.config.sections import NeighboursConfig  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

with log_to_file(snakemake.log[0]):
    export_tables(snakemake.input.shards, snakemake.input.manifest, snakemake.input.coords,
                  NeighboursConfig.from_dict(snakemake.params.neighbours),
                  images=snakemake.output.images, codes=snakemake.output.codes)
