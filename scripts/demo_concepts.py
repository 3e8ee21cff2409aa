"""Snakemake script: the demo dataset's exact shape and colour masks (Broden-style index)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import DemoDatasetConfig  # noqa: E402
from convscope.data.demo import write_demo_concepts  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

with log_to_file(snakemake.log[0]):
    write_demo_concepts(DemoDatasetConfig.from_dict(snakemake.params.demo),
                        snakemake.output.index, snakemake.output.labels, snakemake.output.masks)
