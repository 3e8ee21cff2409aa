"""The render settings of the ``synthesis.visualisation`` section, shared by the stages that
optimise images (the model: `convscope.nn.models.load_stage_model`; pictures:
`convscope.synthesis.outputs`; HDF5 and summary: `convscope.store`)."""

from __future__ import annotations

from convscope.config.sections import VisualisationConfig
from convscope.synthesis.render import RenderSettings
from convscope.synthesis.transforms import TransformSettings

__all__ = ["render_settings"]


def render_settings(cfg: VisualisationConfig) -> RenderSettings:
    """The `RenderSettings` of the ``synthesis.visualisation`` section."""
    transforms = TransformSettings(cfg.jitter_px, tuple(cfg.scales), cfg.rotation_degrees) \
        if cfg.transforms else None
    return RenderSettings(steps=cfg.steps, learning_rate=cfg.learning_rate,
                          parametrisation=cfg.parametrisation, decorrelate=cfg.decorrelate,
                          transforms=transforms, blur_every=cfg.blur_every,
                          blur_sigma=cfg.blur_sigma,
                          clip_norm_percentile=cfg.clip_norm_percentile,
                          clip_contribution_percentile=cfg.clip_contribution_percentile,
                          relu_leak=cfg.relu_leak)
