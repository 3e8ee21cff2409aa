"""Snakemake script: top-k images per unit, with receptive-field patches."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.logs import log_to_file  # noqa: E402
from convscope.analysis.topk_units import run_topk_units  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_topk_units(snakemake.input.shards, snakemake.input.manifest,
                   Path(snakemake.output.table).parent, k=snakemake.params.topk,
                   patch_px=snakemake.params.patch_px,
                   max_channels=snakemake.params.max_channels)
