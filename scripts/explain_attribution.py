"""Snakemake script: the attribution chunks merged; the class Grad-CAM figure, summary."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import ExplainAttributionConfig, PreprocessConfig  # noqa: E402
from convscope.explain.attribution_stage import merge_explain_attribution  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402
from convscope.store.chunks import chunk_paths  # noqa: E402

with log_to_file(snakemake.log[0]):
    merge_explain_attribution(ExplainAttributionConfig.from_dict(snakemake.params.attribution),
                              PreprocessConfig.from_dict(snakemake.params.preprocess),
                              chunk_maps=chunk_paths(snakemake.input, "maps.h5"),
                              chunk_panels=chunk_paths(snakemake.input, "panels"),
                              images_csv=snakemake.input.images,
                              classes_json=snakemake.input.classes,
                              maps_h5=snakemake.output.maps, panels_dir=snakemake.output.panels,
                              class_gradcam_png=snakemake.output.class_gradcam,
                              summary_json=snakemake.output.summary)
