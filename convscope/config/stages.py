"""Which optional stages (explanation, synthesis, dissection and similarity rules) a config
runs: key ``stages``.

``stages: auto`` (the default) runs every optional stage on the demo model and the
cheap ones (`CHEAP_STAGES`: the explanations, CKA and probes; no image synthesis, no
faithfulness scoring, no ablation) on a user's model, where the optimisation loops and the perturbation curves
cost the most time; ``all`` runs every one; a list names them. A stage that is off is
neither run nor shown in the report. With ``auto``, dissect runs only where there are
masks: ``dissect.concepts``, or the demo dataset's own.
No heavy imports: ``rules/common.smk`` calls `chosen_stages` while parsing.
"""

from __future__ import annotations

from collections.abc import Mapping

from convscope.config.validate import ConfigError

__all__ = ["OPTIONAL_STAGES", "CHEAP_STAGES", "chosen_stages"]

#: every optional stage, by rule name, in the order the report shows them
OPTIONAL_STAGES = ("explain_attribution", "explain_units", "explain_invariance",
                   "explain_correspondence", "explain_keypoints", "synthesis_classes",
                   "synthesis_units", "synthesis_inversion", "synthesis_evolution",
                   "synthesis_dream", "synthesis_style", "synthesis_adversarial",
                   "synthesis_fooling", "explain_faithfulness", "dissect", "ablation",
                   "cka", "probes")
#: ``stages: auto`` for a model other than the demo's: the explanations, CKA and probes
CHEAP_STAGES = ("explain_attribution", "explain_units", "explain_invariance",
                "explain_correspondence", "explain_keypoints", "cka", "probes")
#: stages that read another optional stage's output -> that stage
NEEDS = {"explain_faithfulness": "explain_attribution"}


def chosen_stages(config: Mapping) -> list[str]:
    """The optional stages ``config["stages"]`` turns on (`OPTIONAL_STAGES` order);
    `ConfigError` for a text other than auto / all (the schema checks list items)."""
    value = config.get("stages", "auto")
    if value == "auto":
        # dissect needs masks: dissect.concepts, or the demo dataset's own
        masks = bool((config.get("dissect") or {}).get("concepts")) or \
            config["dataset"]["kind"] == "demo"
        demo = config["model"]["kind"] == "demo"
        return [stage for stage in OPTIONAL_STAGES
                if (masks if stage == "dissect" else demo or stage in CHEAP_STAGES)]
    if value == "all":
        return list(OPTIONAL_STAGES)
    if isinstance(value, str):
        raise ConfigError(f"config key 'stages' is {value!r}; valid: 'auto', 'all', or a list "
                          f"of stages out of: {', '.join(OPTIONAL_STAGES)}")
    for stage, needed in NEEDS.items():
        if stage in value and needed not in value:
            raise ConfigError(f"config key 'stages' lists {stage} but not {needed}, whose "
                              f"output it reads; add {needed} or leave {stage} out")
    return [stage for stage in OPTIONAL_STAGES if stage in value]
