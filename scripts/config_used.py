"""Snakemake script: write the merged, validated configuration the run uses."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.validate import write_config_used  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

with log_to_file(snakemake.log[0]):
    write_config_used(dict(snakemake.params.config), snakemake.output.config)
