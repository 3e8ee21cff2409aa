"""Dissection beyond the anchors: concept labels per unit (Network Dissection) and causal
ablation of units, each a workflow stage (`stage.run_dissect`, `ablation_stage.run_ablation`)."""
