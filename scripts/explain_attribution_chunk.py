"""Snakemake script: attribution maps and panels of one chunk of the explained images."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import (ExplainAttributionConfig, ModelConfig,  # noqa: E402
                                       PreprocessConfig)
from convscope.explain.attribution_stage import run_explain_attribution  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

# The speed settings come as resources (changing them reruns nothing), the rest as params.
with log_to_file(snakemake.log[0]):
    run_explain_attribution(ModelConfig.from_dict(snakemake.params.model),
                            snakemake.input.weights or None,
                            PreprocessConfig.from_dict(snakemake.params.preprocess),
                            ExplainAttributionConfig.from_dict(snakemake.params.attribution),
                            snakemake.params.layers, device=snakemake.resources.explain_device,
                            batch_size=snakemake.resources.explain_batch_size,
                            images_csv=snakemake.input.images,
                            model_info_json=snakemake.input.model_info,
                            classes_json=snakemake.input.classes, maps_h5=snakemake.output.maps,
                            panels_dir=snakemake.output.panels, chunk=snakemake.params.chunk,
                            chunk_size=snakemake.params.chunk_size)
