"""Snakemake script: deletion/insertion, ROAD and the randomisation test of the attribution maps."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import (ExplainAttributionConfig, FaithfulnessConfig,  # noqa: E402
                                       ModelConfig, PreprocessConfig)
from convscope.explain.faithfulness_stage import run_explain_faithfulness  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_explain_faithfulness(ModelConfig.from_dict(snakemake.params.model),
                             snakemake.input.weights or None,
                             PreprocessConfig.from_dict(snakemake.params.preprocess),
                             ExplainAttributionConfig.from_dict(snakemake.params.attribution),
                             FaithfulnessConfig.from_dict(snakemake.params.faithfulness),
                             device=snakemake.resources.explain_device,
                             batch_size=snakemake.resources.explain_batch_size,
                             images_csv=snakemake.input.images, maps_h5=snakemake.input.maps,
                             faithfulness_csv=snakemake.output.scores,
                             mprt_csv=snakemake.output.mprt, ranking_csv=snakemake.output.ranking,
                             curves_png=snakemake.output.curves,
                             summary_json=snakemake.output.summary)
