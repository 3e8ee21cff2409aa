"""The ``explain_attribution`` stage: map the chosen images, draw them.

Attribution runs in chunks of ``explain.chunk_size`` images (one job each, the number of
chunks fixed by ``explain.images.max_images``), then a merge job joins them; within a chunk,
in batches of ``batch_size`` on ``device`` (``explain.batch_size`` and
``explain.device``, which the rule passes as resources: speed settings rerun nothing);
each batch's maps are written into ``maps.h5`` and its panels drawn before
the next batch, so memory does not grow with the number of images.

``maps.h5`` (N images, H x W model input):

| dataset | shape, dtype | meaning |
| --- | --- | --- |
| ``index`` | (N,) int64 | manifest rows |
| ``target/true``, ``target/predicted`` | (N,) int64 | the class each map explains (true: -1 unknown) |
| ``prob/true``, ``prob/predicted`` | (N,) float32 | softmax probability of that class |
| ``<method>/<target>`` | (N, H, W) float32 | the map (NaN where the true class is unknown) |
| ``zf_occlusion``, ``zf_channel`` | (N, H, W), (N,) | Zeiler & Fergus occlusion and its feature map |

File attributes: ``gradcam_layer``, ``zf_layer``, ``methods``, ``targets`` and the occluder settings.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from convscope.analysis.common import class_name, save_placeholder
from convscope.config.sections import ExplainAttributionConfig, ModelConfig, PreprocessConfig
from convscope.data.images import read_prepared
from convscope.data.preprocess import input_hw
from convscope.explain import attribution as attr
from convscope.explain import attribution_paths as paths
from convscope.explain.inputs import display_rgb, occluder_fill, spatial_layers, to_input
from convscope.explain.panels import (class_map_figure, heat_cell, image_cell, labelled_grid,
                                      overlay_cell)
from convscope.nn.device import resolve_device
from convscope.nn.layers import check_layer_names
from convscope.nn.models import load_stage_model
from convscope.store.atomic import atomic_path, save_image
from convscope.store.chunks import concat_h5, merge_folders
from convscope.store.paths import resolved_paths
from convscope.store.summary import figure_entry, write_summary
from convscope.store.tables import read_table

__all__ = ["explain_layers", "attribution_batch", "run_explain_attribution",
           "merge_explain_attribution"]

logger = logging.getLogger(__name__)

_PANEL_PX = 96
_SIGNED = {"occlusion", "zf_occlusion", *paths.SIGNED_METHODS}


def explain_layers(attribution: ExplainAttributionConfig, model_info_json,
                   layers) -> tuple[str, str]:
    """(Grad-CAM layer, ZF layer): the configured ones, or the last analysed layer with feature maps."""
    spatial = spatial_layers(model_info_json, layers or [])
    gradcam = attribution.gradcam_layer or (spatial[-1] if spatial else None)
    if gradcam is None:
        raise ValueError("explain.attribution.gradcam_layer is null and no analysed layer (config "
                         f"key 'layers': {layers}) has feature maps; name a conv layer")
    return gradcam, attribution.zf_layer or gradcam


def _target_ids(table: pd.DataFrame, kind: str) -> np.ndarray:
    """(n,) class ids a target kind explains; unknown true labels fall back to the prediction."""
    if kind == "predicted":
        return table["predicted"].to_numpy(np.int64)
    labels = table["label"].to_numpy(np.int64)
    return np.where(labels >= 0, labels, table["predicted"].to_numpy(np.int64))


def _method_map(method: str, model, ready, x: torch.Tensor, target: torch.Tensor,
                gradcam_layer: str, cfg: ExplainAttributionConfig | None = None,
                fill: torch.Tensor | None = None) -> torch.Tensor:
    """One gradient map (n, H, W) of ``method`` for the classes ``target``.

    ``cfg`` (the settings of integrated gradients and SmoothGrad) and ``fill`` (the (C,)
    normalised grey, integrated gradients' baseline) are needed by those two methods only.
    """
    if method in ("integrated_gradients", "smoothgrad", "lrp"):
        return _path_map(method, model, ready, x, target, cfg, fill)
    if method == "saliency":
        return attr.saliency_map(model, x, target)
    if method == "deconvnet":
        return attr.deconvnet_map(ready, x, target)
    if method == "guided_backprop":
        return attr.guided_backprop_map(ready, x, target)
    if method == "gradcam":
        return attr.gradcam_map(model, gradcam_layer, x, target)
    if method == "guided_gradcam":
        return attr.guided_gradcam_map(ready, gradcam_layer, x, target)
    raise ValueError(f"explain.attribution.methods: {method!r} is unknown; valid: "
                     f"{', '.join(attr.METHODS)}")


def _path_map(method: str, model, ready, x: torch.Tensor, target: torch.Tensor,
              cfg: ExplainAttributionConfig, fill: torch.Tensor) -> torch.Tensor:
    """Integrated gradients, SmoothGrad or LRP (`convscope.explain.attribution_paths`)."""
    if method == "integrated_gradients":
        return paths.integrated_gradients_map(model, x, target, baseline=fill, steps=cfg.ig_steps,
                                              internal_batch_size=cfg.samples_per_pass)
    if method == "smoothgrad":
        return paths.smoothgrad_map(model, x, target, samples=cfg.smoothgrad_samples,
                                    noise=cfg.smoothgrad_noise,
                                    samples_per_pass=cfg.samples_per_pass)
    return paths.lrp_map(model, x, target)


def attribution_batch(model, ready, x: torch.Tensor, targets: dict[str, torch.Tensor],
                      attribution: ExplainAttributionConfig, layers: tuple[str, str],
                      fill: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every configured map of one batch: ``<method>/<target>`` and ``zf_occlusion`` -> (n, H, W).

    ``model`` is the plain model, ``ready`` its `backprop_ready` copy (or the model itself
    when no method needs one); ``targets`` maps target kind -> (n,) class ids; ``layers``
    is (Grad-CAM layer, ZF layer); ``fill`` the (C,) normalised occluder value.
    ``zf_channel`` (n,) holds the feature map zf_occlusion follows.
    """
    cfg = attribution
    occlusion = dict(size=cfg.occlusion_size, stride=cfg.occlusion_stride, fill=fill,
                     positions_per_pass=cfg.occlusion_batch_size)
    maps = {f"{method}/{kind}": _method_map(method, model, ready, x, target, layers[0], cfg, fill)
            for kind, target in targets.items() for method in cfg.methods
            if method not in ("occlusion", "zf_occlusion")}
    zf_layer, channels = None, None
    if "zf_occlusion" in cfg.methods:
        zf_layer, channels = layers[1], attr.strongest_feature_maps(model, layers[1], x)
        maps["zf_channel"] = channels
    occluded = targets if "occlusion" in cfg.methods else {}
    if occluded or zf_layer:
        maps.update(attr.occlusion_maps(model, x, occluded, zf_layer, channels, **occlusion))
    return maps


def _map_names(attribution: ExplainAttributionConfig) -> list[str]:
    cfg = attribution
    names = [f"{m}/{t}" for t in cfg.targets for m in cfg.methods if m != "zf_occlusion"]
    return names + (["zf_occlusion"] if "zf_occlusion" in cfg.methods else [])


def _create_datasets(f: h5py.File, attribution: ExplainAttributionConfig, n: int,
                     hw: tuple[int, int]) -> None:
    for name in ("index", "target/true", "target/predicted", "zf_channel"):
        f.create_dataset(name, (n,), dtype="int64")
    for name in ("prob/true", "prob/predicted"):
        f.create_dataset(name, (n,), dtype="float32")
    # compressed by image (an empty chunk of the stage: no HDF5 chunk larger than the data)
    packed = dict(chunks=(1, *hw), compression="gzip", compression_opts=1) if n else {}
    for name in _map_names(attribution):
        f.create_dataset(name, (n, *hw), dtype="float32", **packed)


def _panel(pixels: np.ndarray, maps: dict[str, np.ndarray], row: pd.Series, names: list[str],
           attribution: ExplainAttributionConfig, class_names: list[str]) -> "Image":
    """One image's panel: rows = target kinds; image, each map, Grad-CAM (or first map) overlay."""
    rows = []
    for kind in attribution.targets:
        target = int(row["label"]) if kind == "true" else int(row["predicted"])
        label = (f"{kind}: {class_name(class_names, target)} p={row[f'prob_{kind}']:.2f}"
                 if target >= 0 else f"{kind}: unknown")
        keys = [k for k in names if k.endswith(f"/{kind}")] + \
            (["zf_occlusion"] if "zf_occlusion" in names else [])
        cells = [image_cell(pixels, _PANEL_PX)]
        cells += [heat_cell(maps[k], _PANEL_PX, signed=k.split("/")[0] in _SIGNED) for k in keys]
        over = f"gradcam/{kind}" if f"gradcam/{kind}" in maps else keys[0]
        cells.append(overlay_cell(pixels, maps[over], _PANEL_PX))
        rows.append((label, cells))
        header = ["image", *[k.split("/")[0] for k in keys], "overlay"]
    title = f"row {int(row['index'])}: {row['reason']}"
    return labelled_grid(title, header, rows, _PANEL_PX)


def _class_gradcam(attribution: ExplainAttributionConfig) -> str | None:
    """The map averaged per class: Grad-CAM of the true class (else of the predicted one)."""
    if "gradcam" not in attribution.methods:
        return None
    kind = "true" if "true" in attribution.targets else "predicted"
    return f"gradcam/{kind}"


def _write_batch(f: h5py.File, rows: slice, batch: pd.DataFrame, maps: dict,
                 probs: dict[str, np.ndarray]) -> None:
    f["index"][rows] = batch["index"].to_numpy(np.int64)
    f["target/true"][rows] = batch["label"].to_numpy(np.int64)
    f["target/predicted"][rows] = batch["predicted"].to_numpy(np.int64)
    for kind, values in probs.items():
        f[f"prob/{kind}"][rows] = values
    unknown = batch["label"].to_numpy() < 0
    for name, values in maps.items():
        values = values.cpu().numpy()
        if name.endswith("/true") and unknown.any():
            values = values.astype(np.float32)
            values[unknown] = np.nan
        f[name][rows] = values


def _explain_all(model, ready, table: pd.DataFrame, attribution: ExplainAttributionConfig,
                 preprocess: PreprocessConfig, layers: tuple[str, str], f: h5py.File,
                 panels_dir: Path, class_names: list[str], device: torch.device,
                 batch_size: int) -> None:
    """Map every image of ``table``, ``batch_size`` at a time, into ``f`` and ``panels_dir``."""
    fill = occluder_fill(attribution.occlusion_fill, preprocess).to(device)
    names = _map_names(attribution)
    for start in tqdm(range(0, len(table), batch_size), desc="attribution", unit="batch",
                      file=sys.stderr):
        batch = table.iloc[start:start + batch_size]
        pixels = read_prepared(batch["path"], batch["slot"], preprocess)
        x = to_input(pixels, preprocess, device)
        targets = {kind: torch.tensor(_target_ids(batch, kind), device=device)
                   for kind in ("true", "predicted")}
        with torch.no_grad():
            probs = torch.softmax(model(x), dim=1)
        probs = {kind: probs.gather(1, t[:, None])[:, 0].cpu().numpy() for kind, t in targets.items()}
        wanted = {kind: targets[kind] for kind in attribution.targets}
        maps = attribution_batch(model, ready, x, wanted, attribution, layers, fill)
        _write_batch(f, slice(start, start + len(batch)), batch, maps, probs)
        shown = {k: v.cpu().numpy() for k, v in maps.items() if k != "zf_channel"}
        rgb = display_rgb(pixels)
        batch = batch.assign(**{f"prob_{kind}": values for kind, values in probs.items()})
        for i, (_, row) in enumerate(batch.iterrows()):
            one = {k: v[i] for k, v in shown.items()}
            save_image(panels_dir / f"row-{int(row['index']):05d}.png",
                       _panel(rgb[i], one, row, names, attribution, class_names))


def _class_sums(maps_h5, averaged: str) -> dict:
    """Class id -> [sum (H, W), count] of the map ``averaged`` over the rows of ``maps_h5``
    whose class is known, summed row by row in file order."""
    sums: dict[int, list] = {}
    with h5py.File(maps_h5, "r") as f:
        classes = f[f"target/{averaged.split('/')[1]}"][()]
        for i, key in enumerate(classes):
            if key >= 0:
                total = sums.setdefault(int(key), [0.0, 0])
                total[0] = total[0] + f[averaged][i]
                total[1] += 1
    return sums


def _write_class_gradcam(maps_h5, attribution: ExplainAttributionConfig,
                         class_names: list[str], hw: tuple[int, int], path) -> None:
    averaged = _class_gradcam(attribution)
    if averaged is None:
        save_placeholder(path, "Grad-CAM is not in explain.attribution.methods")
        return
    sums = _class_sums(maps_h5, averaged)
    n_classes = max([len(class_names), *[k + 1 for k in sums]])
    means = np.zeros((n_classes, *hw))
    counts = np.zeros(n_classes, dtype=np.int64)
    for k, (total, count) in sums.items():
        means[k], counts[k] = total / count, count
    class_map_figure(means, counts, class_names,
                     f"mean Grad-CAM ({averaged.split('/')[1]} class) per class", path)


def _read_images(images_csv, classes_json) -> tuple[pd.DataFrame, list[str]]:
    """The explained images (paths resolved) and the class names."""
    table = read_table(images_csv)
    # images.csv stores paths as the manifest does: relative to the results folder, which
    # holds the manifest and its class list (convscope.store.paths)
    table["path"] = resolved_paths(table["path"].astype(str), Path(classes_json).parent)
    return table, [str(n) for n in json.loads(Path(classes_json).read_text())]


def run_explain_attribution(model_cfg: ModelConfig, weights_file, preprocess: PreprocessConfig,
                            attribution: ExplainAttributionConfig, layers, *, device: str,
                            batch_size: int, images_csv, model_info_json, classes_json, maps_h5,
                            panels_dir, chunk: int = 0, chunk_size: int | None = None) -> None:
    """One chunk of the attribution stage: the maps of rows ``chunk * chunk_size`` up to
    ``(chunk + 1) * chunk_size`` of ``images_csv`` (all of them when ``chunk_size`` is None)
    into ``maps_h5`` (zero rows past the end) and a panel per image into ``panels_dir``;
    `merge_explain_attribution` joins the chunks. Each image's maps depend on it alone.

    ``device`` ("auto", "cpu", "cuda[:N]") and ``batch_size`` (images per pass) are the
    speed settings ``explain.device`` and ``explain.batch_size``; they change no number.
    """
    table, class_names = _read_images(images_csv, classes_json)
    if chunk_size is not None:
        table = table.iloc[chunk * chunk_size:(chunk + 1) * chunk_size]
    chosen = explain_layers(attribution, model_info_json, layers)
    panels_dir = Path(panels_dir)
    panels_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(maps_h5) as tmp, h5py.File(tmp, "w") as f:
        _create_datasets(f, attribution, len(table), input_hw(preprocess))
        f.attrs.update({"gradcam_layer": chosen[0], "zf_layer": chosen[1],
                        "methods": list(attribution.methods),
                        "targets": list(attribution.targets),
                        "occlusion": json.dumps({k: getattr(attribution, k) for k in (
                            "occlusion_size", "occlusion_stride", "occlusion_fill")})})
        if len(table):
            torch_device = resolve_device(device, "explain.device")
            model = load_stage_model(model_cfg, weights_file, preprocess, torch_device)[0]
            check_layer_names(model, list(chosen),
                              key="explain.attribution.gradcam_layer / zf_layer")
            needs_ready = {"deconvnet", "guided_backprop", "guided_gradcam"} & \
                set(attribution.methods)
            ready = attr.backprop_ready(model) if needs_ready else model
            _explain_all(model, ready, table, attribution, preprocess, chosen, f, panels_dir,
                         class_names, torch_device, batch_size)
    logger.info("explain: %d images attributed (chunk %d)", len(table), chunk)


def merge_explain_attribution(attribution: ExplainAttributionConfig, preprocess: PreprocessConfig,
                              *, chunk_maps, chunk_panels, images_csv, classes_json, maps_h5,
                              panels_dir, class_gradcam_png, summary_json) -> None:
    """The attribution stage's files from its chunks (`run_explain_attribution`, in chunk
    order): ``maps.h5`` (the chunks' rows one after the other), every panel, the class
    Grad-CAM figure (summed from the merged maps in row order) and summary.json."""
    table, class_names = _read_images(images_csv, classes_json)
    concat_h5(chunk_maps, maps_h5)
    with h5py.File(maps_h5, "r") as f:
        if len(f["index"]) != len(table):
            raise ValueError(f"the chunks of {maps_h5} hold {len(f['index'])} images, "
                             f"{images_csv} {len(table)}: a chunk is missing or stale")
        chosen = (str(f.attrs["gradcam_layer"]), str(f.attrs["zf_layer"]))
    Path(panels_dir).mkdir(parents=True, exist_ok=True)
    merge_folders(chunk_panels, panels_dir)
    _write_class_gradcam(maps_h5, attribution, class_names, input_hw(preprocess),
                         class_gradcam_png)
    _write_attribution_summary(summary_json, table, attribution, chosen, Path(panels_dir),
                               class_gradcam_png)


def _write_attribution_summary(summary_json, table: pd.DataFrame,
                               attribution: ExplainAttributionConfig,
                               chosen: tuple[str, str], panels_dir: Path,
                               class_gradcam_png) -> None:
    root = Path(summary_json).parent
    cfg = attribution
    figures = [figure_entry(class_gradcam_png, root, "Mean Grad-CAM per class",
                            f"Grad-CAM at {chosen[0]}, averaged over the explained images of "
                            "each class.")]
    for _, row in table.iterrows():
        figures.append(figure_entry(panels_dir / f"row-{int(row['index']):05d}.png", root,
                                    f"Image {int(row['index'])}", str(row["reason"])))
    write_summary(
        summary_json, "explain_attribution", "Attribution maps",
        ("Which pixels each class score depends on, for the images chosen by "
         "explain.images: per image, one row per target class (true, predicted) with "
         "saliency (|gradient|), deconvnet, guided backprop, Grad-CAM at "
         f"{chosen[0]}, guided Grad-CAM, occlusion (drop of the class probability when "
         "a grey square hides the pixel; red = the class needs it) and the Zeiler & "
         f"Fergus occlusion of the strongest feature map of {chosen[1]}. Each map is "
         "scaled to its own maximum; raw maps are in maps.h5."),
        numbers=[("images explained", len(table)),
                 ("methods", ", ".join(cfg.methods)),
                 ("Grad-CAM layer", chosen[0]),
                 ("occluder", (f"{cfg.occlusion_size} px, stride {cfg.occlusion_stride}, "
                               f"grey {cfg.occlusion_fill}"))],
        figures=figures)
