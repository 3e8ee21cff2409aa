"""Per-image explanations: image sets, attribution maps (Captum), unit reconstructions.

- `image_sets`: which images are explained (``explain.images``);
- `attribution`: saliency, deconvnet, guided backprop, Grad-CAM, guided Grad-CAM,
  occlusion and the Zeiler & Fergus occlusion of one batch (Captum where it has the method);
- `occlusion`: the batched occlusion sweep (several readouts per forward pass);
- `attribution_paths`: integrated gradients, SmoothGrad (Captum) and LRP (zennit);
- `faithfulness`, `road`: deletion / insertion, ROAD, the randomisation test;
- `reconstruct`: one unit's activation projected back to pixels;
- `panels`: the figures; `inputs`: model, pixels and layers shared by the stages;
- `attribution_stage`, `units_stage`, `faithfulness_stage`: the workflow's entry points.
"""

import importlib

# Public name -> the module that defines it. Imported on first use (PEP 562), so the
# workflow can read `convscope.explain.columns` while it parses without importing torch
# and captum.
_HOMES = {
    "attribution": ["METHODS", "FunctionalReluError", "backprop_ready", "saliency_map",
                    "deconvnet_map", "guided_backprop_map", "gradcam_map", "guided_gradcam_map",
                    "occlusion_map", "occlusion_maps", "strongest_feature_maps",
                    "zf_occlusion_map"],
    "attribution_stage": ["run_explain_attribution", "merge_explain_attribution"],
    "attribution_paths": ["integrated_gradients_map", "smoothgrad_map", "lrp_map"],
    "faithfulness_stage": ["run_explain_faithfulness"],
    "image_sets": ["IMAGE_SET_COLUMNS", "read_predictions", "run_explain_images",
                   "select_images"],
    "reconstruct": ["crop_box", "reconstruct_units"],
    "units_stage": ["choose_units", "run_explain_units"],
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "METHODS", "FunctionalReluError", "backprop_ready", "saliency_map", "deconvnet_map",
    "guided_backprop_map", "gradcam_map", "guided_gradcam_map", "occlusion_map", "occlusion_maps",
    "strongest_feature_maps", "zf_occlusion_map", "IMAGE_SET_COLUMNS", "read_predictions",
    "select_images", "crop_box", "reconstruct_units", "choose_units", "run_explain_images",
    "run_explain_attribution", "merge_explain_attribution", "run_explain_units",
    "integrated_gradients_map", "smoothgrad_map", "lrp_map", "run_explain_faithfulness",
]


def __getattr__(name: str):
    if name in _HOME_OF:
        value = getattr(importlib.import_module(f"{__name__}.{_HOME_OF[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
