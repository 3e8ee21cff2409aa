"""Snakemake script: the images the explanation stages explain."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import ExplainImagesConfig  # noqa: E402
from convscope.explain.image_sets import run_explain_images  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_explain_images(snakemake.input.shards, snakemake.input.manifest,
                       ExplainImagesConfig.from_dict(snakemake.params.images),
                       images_csv=snakemake.output.images, topk_csv=snakemake.input.get("topk") or None)
