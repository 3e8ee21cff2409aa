"""Snakemake script: generate the embedded demo dataset."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import DemoDatasetConfig  # noqa: E402
from convscope.data.demo import generate_demo_dataset  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

with log_to_file(snakemake.log[0]):
    generate_demo_dataset(DemoDatasetConfig.from_dict(snakemake.params.demo),
                          snakemake.output.manifest, snakemake.output.images)
