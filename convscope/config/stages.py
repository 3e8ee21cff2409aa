"""Which optional stages (the explanation and synthesis rules) a config runs: key ``stages``.

``stages: auto`` (the default) runs every optional stage on the demo model and the
cheap ones (`CHEAP_STAGES`: the explanations, no image synthesis) on a user's model,
where the synthesis stages' optimisation loops cost the most time; ``all`` runs every
one; a list names them. A stage that is off is neither run nor shown in the report.
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
                   "synthesis_fooling")
#: ``stages: auto`` for a model other than the demo's: the explanations, no synthesis
CHEAP_STAGES = ("explain_attribution", "explain_units", "explain_invariance",
                "explain_correspondence", "explain_keypoints")


def chosen_stages(config: Mapping) -> list[str]:
    """The optional stages ``config["stages"]`` turns on (`OPTIONAL_STAGES` order);
    `ConfigError` for a text other than auto / all (the schema checks list items)."""
    value = config.get("stages", "auto")
    if value == "auto":
        demo = config["model"]["kind"] == "demo"
        return list(OPTIONAL_STAGES if demo else CHEAP_STAGES)
    if value == "all":
        return list(OPTIONAL_STAGES)
    if isinstance(value, str):
        raise ConfigError(f"config key 'stages' is {value!r}; valid: 'auto', 'all', or a list "
                          f"of stages out of: {', '.join(OPTIONAL_STAGES)}")
    return [stage for stage in OPTIONAL_STAGES if stage in value]
