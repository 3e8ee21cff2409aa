"""Which stage writes which file under ``results/``, what enables it, and paths stored inside.

`require` turns a missing file into one `StageMissingError` that names the
stage, the rule that writes the file and the config section or key that
enables it. `resolve` reads a path stored inside ``results/`` (relative to the
results folder, or absolute).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Stage", "STAGES", "StageMissingError", "require", "resolve", "stage_of"]


class StageMissingError(FileNotFoundError):
    """A results file is missing because the stage that writes it did not run (or not yet)."""


@dataclass(frozen=True)
class Stage:
    """A stage of the workflow: its results folder, rule(s) and what enables it in the config."""

    folder: str        # under results/, e.g. "explain/attribution"
    rules: str         # the Snakemake rule(s) writing it
    enabled_by: str    # config section or key that turns it on or configures it


_ALWAYS = "runs in every full run; configured by the `{}` config section"
_OPTIONAL = ("runs when the `stages` key turns it on (auto: every stage for the demo model, "
             "the explanations for your own); configured by the `{}` config section")
_EXPLAIN_RULES = {"attribution": ("explain_attribution", "explain.attribution"),
                  "units": ("explain_units", "explain.reconstructions"),
                  "invariance": ("explain_invariance", "explain.invariance")}
_SYNTHESIS_RULES = {"classes": ("synthesis_classes", "synthesis.visualisation"),
                    "units": ("synthesis_units", "synthesis.visualisation"),
                    "inversion": ("synthesis_inversion", "synthesis.inversion"),
                    "evolution": ("synthesis_evolution", "synthesis.evolution"),
                    "dream": ("synthesis_dream", "synthesis.dream"),
                    "style": ("synthesis_style", "synthesis.style"),
                    "adversarial": ("synthesis_adversarial", "synthesis.adversarial"),
                    "fooling": ("synthesis_fooling", "synthesis.fooling")}

#: stage name -> `Stage`; explanation and synthesis stages are named "explain/<x>", "synthesis/<x>"
STAGES: dict[str, Stage] = {
    "manifest": Stage("", "manifest", _ALWAYS.format("dataset")),
    "model": Stage("model", "model_info", _ALWAYS.format("model") + " and `layers`"),
    "features": Stage("features", "extract, shard_index",
                      _ALWAYS.format("extract") + " and `layers`"),
    "units": Stage("units", "unit_stats, topk_units",
                   _ALWAYS.format("units") + " and `unit_stats`"),
    "embedding": Stage("embedding", "embedding", _ALWAYS.format("embedding")),
    "neighbours": Stage("neighbours", "neighbours", _ALWAYS.format("neighbours")),
    "performance": Stage("performance", "performance", _ALWAYS.format("performance")),
    "export": Stage("export", "export", "runs in every full run; its neighbours column follows "
                    "`neighbours.k`"),
    "explain": Stage("explain", "explain_images", "runs with explain_attribution (key `stages`); "
                     "configured by the `explain.images` config section"),
    **{f"explain/{name}": Stage(f"explain/{name}", rule, _OPTIONAL.format(key))
       for name, (rule, key) in _EXPLAIN_RULES.items()},
    "explain/correspondence": Stage(
        "explain/correspondence", "explain_correspondence",
        "enabled by `stages` and `explain.correspondence.part_columns` (manifest columns "
        "locating the part; "
        "set by itself for the demo dataset)"),
    "explain/keypoints": Stage(
        "explain/keypoints", "explain_keypoints",
        "enabled by `stages` and `explain.keypoints.point_columns` (manifest columns "
        "locating the keypoint; "
        "set by itself for the demo dataset)"),
    **{f"synthesis/{name}": Stage(f"synthesis/{name}", rule, _OPTIONAL.format(key))
       for name, (rule, key) in _SYNTHESIS_RULES.items()},
    "explain/faithfulness": Stage(
        "explain/faithfulness", "explain_faithfulness",
        "enabled by `stages` (with explain_attribution, whose maps it scores); it also writes "
        "explain/faithfulness.csv and explain/mprt.csv"),
    "compare": Stage("compare", "cka", "enabled by `stages` (cka)"),
    "probes": Stage("probes", "probes", "enabled by `stages` (probes)"),
    "dissect": Stage("dissect", "dissect (and demo_concepts for the demo's masks)",
                     "enabled by `stages` (dissect; concept masks from `dissect.concepts`, "
                     "or the demo dataset's own)"),
    "ablation": Stage("ablation", "ablation", "enabled by `stages` (ablation)"),
}

#: files a stage writes outside its folder -> the stage
_LOOSE_FILES = {"explain/faithfulness.csv": "explain/faithfulness",
                "explain/mprt.csv": "explain/faithfulness"}


def stage_of(relative: str) -> str:
    """The stage writing ``relative`` (a path under results/), e.g. "units/stats.csv" -> "units"."""
    if Path(relative).as_posix() in _LOOSE_FILES:
        return _LOOSE_FILES[Path(relative).as_posix()]
    parts = Path(relative).parts
    for depth in (2, 1):
        name = "/".join(parts[:depth])
        if len(parts) > depth and name in STAGES:
            return name
    return "manifest" if parts[0].startswith("manifest") else parts[0]


def require(results_dir: Path, relative: str, what: str = "") -> Path:
    """``results_dir / relative``, or `StageMissingError` naming the stage that writes it.

    Example: ``require(Path("results"), "units/stats.csv", "stats('relu2')")``.
    """
    path = Path(results_dir) / relative
    if path.exists():
        return path
    name = stage_of(relative)
    stage = STAGES.get(name)
    how = (f"rule {stage.rules}; the stage {stage.enabled_by}" if stage
           else "no stage of this version of convscope writes it")
    needs = f"{what} needs" if what else "reading it needs"
    raise StageMissingError(
        f"{path} does not exist: {needs} the '{name}' stage ({how}). Run the workflow for this "
        f"config (e.g. `snakemake --cores 4 results/{relative}` in the run's folder) to make it.")


def resolve(results_dir: Path, stored: str | os.PathLike) -> Path:
    """A path stored inside ``results/``: absolute as it is, else relative to ``results_dir``.

    Results written before paths were stored relative to the results folder hold
    paths relative to the run's folder (``results/features/shard-00000.h5``); those
    are found in the results folder's parent when they are not inside it.
    """
    path = Path(stored)
    if path.is_absolute():
        return path
    inside = Path(results_dir) / path
    if not inside.exists():
        legacy = Path(results_dir).parent / path
        if legacy.exists():
            return legacy
    return inside
