"""Snakemake script: generate the embedded demo dataset."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.data.demo import generate_demo_dataset  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

demo = snakemake.params.demo
with log_to_file(snakemake.log[0]):
    generate_demo_dataset(Path(snakemake.output.manifest).parent, n_images=demo["n_images"],
                          image_size=demo["image_size"], seed=demo["seed"],
                          test_fraction=demo["test_fraction"])
