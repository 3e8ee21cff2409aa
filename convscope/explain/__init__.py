"""Per-image explanations: image sets, attribution maps (Captum), unit reconstructions.

- `image_sets`: which images are explained (``explain.images``);
- `attribution`: saliency, deconvnet, guided backprop, Grad-CAM, guided Grad-CAM,
  occlusion and the Zeiler & Fergus occlusion of one batch (Captum where it has the method);
- `occlusion`: the batched occlusion sweep (several readouts per forward pass);
- `reconstruct`: one unit's activation projected back to pixels;
- `panels`: the figures; `inputs`: model, pixels and layers shared by the stages;
- `attribution_stage`, `units_stage`: the workflow's entry points.
"""

from convscope.explain.attribution import (METHODS, FunctionalReluError, backprop_ready,
                                           deconvnet_map, gradcam_map, guided_backprop_map,
                                           guided_gradcam_map, occlusion_map, occlusion_maps,
                                           saliency_map,
                                           strongest_feature_maps, zf_occlusion_map)
from convscope.explain.attribution_stage import run_explain_attribution
from convscope.explain.image_sets import (IMAGE_SET_COLUMNS, read_predictions, run_explain_images,
                                          select_images)
from convscope.explain.reconstruct import crop_box, reconstruct_units
from convscope.explain.units_stage import choose_units, run_explain_units

__all__ = [
    "METHODS", "FunctionalReluError", "backprop_ready", "saliency_map", "deconvnet_map",
    "guided_backprop_map", "gradcam_map", "guided_gradcam_map", "occlusion_map", "occlusion_maps",
    "strongest_feature_maps", "zf_occlusion_map", "IMAGE_SET_COLUMNS", "read_predictions",
    "select_images", "crop_box", "reconstruct_units", "choose_units", "run_explain_images",
    "run_explain_attribution", "run_explain_units",
]
