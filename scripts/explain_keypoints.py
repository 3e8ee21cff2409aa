"""Snakemake script: keypoint transfer by feature matching, PCK per layer."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))
from convscope.config.sections import KeypointsConfig, ModelConfig, PreprocessConfig  # noqa: E402
from convscope.explain.keypoints import run_explain_keypoints  # noqa: E402
from convscope.logs import log_to_file  # noqa: E402

with log_to_file(snakemake.log[0]):
    run_explain_keypoints(ModelConfig.from_dict(snakemake.params.model),
                          snakemake.input.weights or None,
                          KeypointsConfig.from_dict(snakemake.params.keypoints),
                          PreprocessConfig.from_dict(snakemake.params.preprocess),
                          snakemake.params.layers, snakemake.input.manifest,
                          device=snakemake.resources.explain_device,
                          batch_size=snakemake.resources.explain_batch_size,
                          pck_csv=snakemake.output.pck, pairs_csv=snakemake.output.pairs,
                          panels_png=snakemake.output.panels,
                          summary_json=snakemake.output.summary)
