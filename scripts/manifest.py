"""Snakemake script: build the manifest, one row per image."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import DatasetConfig  # noqa: E402
from convscope.data.manifest import write_dataset_manifest  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

with log_to_file(snakemake.log[0]):
    write_dataset_manifest(DatasetConfig.from_dict(snakemake.params.dataset), snakemake.input.source,
                           snakemake.output.csv, snakemake.output.classes,
                           names_required=snakemake.params.names_required)
