# convscope: what has this CNN learned, over a whole image dataset.
# Usage: see README.md. The embedded default config runs the demo.

from snakemake.utils import min_version

min_version("8.0")


# The demo's config, only when no --configfile is given: Snakemake would merge a user's
# file over it, and the user's run would inherit the demo's preprocessing and layers.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/demo_dataset.smk"
include: "rules/manifest.smk"
include: "rules/train_demo_model.smk"
include: "rules/model_info.smk"
include: "rules/extract.smk"
include: "rules/shard_index.smk"
include: "rules/topk_units.smk"
include: "rules/unit_stats.smk"
include: "rules/filters.smk"
include: "rules/performance.smk"
include: "rules/embedding.smk"
include: "rules/neighbours.smk"
include: "rules/export.smk"
include: "rules/explain_images.smk"
include: "rules/explain_attribution_chunk.smk"
include: "rules/explain_attribution.smk"
include: "rules/explain_units.smk"
include: "rules/explain_invariance.smk"
include: "rules/explain_correspondence.smk"
include: "rules/explain_keypoints.smk"
include: "rules/explain_faithfulness.smk"
include: "rules/cka.smk"
include: "rules/probes.smk"
include: "rules/synthesis_classes.smk"
include: "rules/synthesis_units_chunk.smk"
include: "rules/synthesis_units.smk"
include: "rules/synthesis_inversion.smk"
include: "rules/synthesis_evolution.smk"
include: "rules/synthesis_dream.smk"
include: "rules/synthesis_style.smk"
include: "rules/synthesis_adversarial.smk"
include: "rules/synthesis_fooling.smk"
include: "rules/demo_concepts.smk"
include: "rules/dissect.smk"
include: "rules/ablation.smk"
include: "rules/report.smk"
include: "rules/config_used.smk"


rule all:
    default_target: True
    input:
        get_final_output,
        model_info=get_model_info_checkpoint,
