"""Keypoint transfer by feature matching (Long et al. 2014, "Do ConvNets learn correspondence?").

For ordered pairs (A, B) of images of one class with a known keypoint in each
(manifest columns, `convscope.explain.columns.keypoints_xy`):

1. A's keypoint goes from original-image pixels to model-input pixels through
   the preprocessing (`convscope.explain.transforms.original_to_input`) and
   picks the nearest feature-map cell of each layer: the cell whose receptive
   field centre (``start + j * stride + size / 2``, `cell_centres`) is closest.
2. That cell's feature vector (C,) is compared with every cell of B's map at
   the same layer; the nearest (Euclidean) is the match.
3. The match's receptive-field centre is mapped back to B's original pixels,
   and the error is its distance to B's true keypoint. PCK@a is the fraction
   of pairs whose error is at most ``a * max(width, height)`` of image B.

The baseline (layer ``pixels``) does the same search on raw model-input
pixel patches of side ``pixel_patch_px`` centred on each pixel (zero padded;
the field of pixel j is j itself, centre j + 0.5).

Layers without a spatial map (outputs that are not (N, C, H, W)) are skipped
with a warning. The search runs batched on the configured device.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from convscope.analysis.common import class_name, save_figure, save_placeholder
from convscope.config.counts import clip_count
from convscope.config.sections import KeypointsConfig, ModelConfig, PreprocessConfig
from convscope.data.preprocess import input_hw, to_model_input
from convscope.explain.columns import keypoints_xy
from convscope.explain.forward import chosen_layers, layer_outputs
from convscope.explain.sample import class_rows, read_sample
from convscope.explain.transforms import input_to_original, original_to_input
from convscope.nn.models import load_stage_model
from convscope.nn.receptive_field import ReceptiveField, receptive_fields
from convscope.store.atomic import write_text
from convscope.store.summary import figure_entry, write_summary

__all__ = ["PIXELS", "PAIR_COLUMNS", "PCK_COLUMNS", "cell_centres", "nearest_cells",
           "match_cells", "pixel_patches", "transfer_keypoints", "pck_table", "sample_pairs",
           "plot_panels", "run_explain_keypoints"]

logger = logging.getLogger(__name__)

#: the name of the raw-pixel baseline in the tables
PIXELS = "pixels"
PAIR_COLUMNS = ["pair", "index_a", "index_b", "layer", "true_x", "true_y", "pred_x", "pred_y",
                "error_px", "image_side_px"]
PCK_COLUMNS = ["layer", "threshold", "pck", "n_pairs", "mean_error_px", "median_error_px"]
_PIXEL_FIELD = ReceptiveField(size=(1, 1), stride=(1, 1), start=(0, 0))


def cell_centres(rf: ReceptiveField, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Receptive-field centres of a (height, width) map, model-input pixels: (ys (H,), xs (W,))."""
    ys = rf.start[0] + np.arange(height) * rf.stride[0] + rf.size[0] / 2.0
    xs = rf.start[1] + np.arange(width) * rf.stride[1] + rf.size[1] / 2.0
    return ys, xs


def nearest_cells(points_uv: np.ndarray, rf: ReceptiveField, height: int,
                  width: int) -> np.ndarray:
    """(n, 2) model-input points (u, v) -> (n, 2) int (row, col) of the nearest cell centre."""
    ys, xs = cell_centres(rf, height, width)
    points = np.asarray(points_uv, dtype=np.float64).reshape(-1, 2)
    rows = np.abs(points[:, 1:2] - ys[None]).argmin(axis=1)
    cols = np.abs(points[:, 0:1] - xs[None]).argmin(axis=1)
    return np.stack([rows, cols], axis=1)


def match_cells(maps_a: torch.Tensor, cells_a: np.ndarray, maps_b: torch.Tensor) -> np.ndarray:
    """For each pair, the cell of B whose feature vector is nearest to A's at ``cells_a``.

    Args:
        maps_a, maps_b: (n, C, H, W) feature maps of the A and B images (same device).
        cells_a: (n, 2) int (row, col) in A's map.
    Returns:
        (n, 2) int (row, col) in B's map (the first of equal distances).
    """
    n, _, _, width = maps_b.shape
    rows = torch.as_tensor(cells_a[:, 0], device=maps_a.device)
    cols = torch.as_tensor(cells_a[:, 1], device=maps_a.device)
    query = maps_a[torch.arange(n, device=maps_a.device), :, rows, cols]  # (n, C)
    dist = ((maps_b.float() - query.float()[:, :, None, None]) ** 2).sum(dim=1)  # (n, H, W)
    flat = dist.reshape(n, -1).argmin(dim=1).cpu().numpy()
    return np.stack(np.divmod(flat, width), axis=1)


def pixel_patches(inputs: torch.Tensor, patch_px: int) -> torch.Tensor:
    """(n, C, H, W) pixels -> (n, C * p * p, H, W): the p x p patch around each pixel (zero pad)."""
    n, _, height, width = inputs.shape
    pad = patch_px // 2
    cols = F.unfold(inputs, kernel_size=patch_px, padding=pad)  # (n, C*p*p, L)
    out_h, out_w = height + 2 * pad - patch_px + 1, width + 2 * pad - patch_px + 1
    return cols.reshape(n, -1, out_h, out_w)[:, :, :height, :width]


def _transfer(maps_a, maps_b, rf, points_a, wh_a, wh_b, preprocess) -> np.ndarray:
    """Predicted keypoints (n, 2) in B's original pixels for one layer."""
    height, width = maps_a.shape[-2:]
    cells_a = nearest_cells(original_to_input(points_a, wh_a, preprocess), rf, height, width)
    cells_b = match_cells(maps_a, cells_a, maps_b)
    ys, xs = cell_centres(rf, height, width)
    return input_to_original(np.stack([xs[cells_b[:, 1]], ys[cells_b[:, 0]]], axis=1), wh_b,
                             preprocess)


def transfer_keypoints(model, images_a: Sequence[np.ndarray], images_b: Sequence[np.ndarray],
                       points_a: np.ndarray, points_b: np.ndarray, layers: Sequence[str],
                       preprocess: PreprocessConfig, patch_px: int, batch_size: int,
                       device: torch.device) -> pd.DataFrame:
    """The `PAIR_COLUMNS` table (without manifest rows: ``index_a``/``index_b`` are -1).

    Args:
        images_a, images_b: n (H, W, 3) uint8 original images, pair i = (a_i, b_i).
        points_a, points_b: (n, 2) keypoints (x, y) in each image's original pixels.
        layers: module names searched, then the ``pixels`` baseline.
    """
    inputs_a, inputs_b = to_model_input(images_a, preprocess), to_model_input(images_b, preprocess)
    outputs, _ = layer_outputs(model, torch.cat([inputs_a, inputs_b]), layers, batch_size, device,
                               key="explain.keypoints.layers", progress="keypoint features")
    fields = receptive_fields(model, list(layers), input_hw(preprocess), preprocess.channels)
    n = len(images_a)
    wh_a = np.array([(im.shape[1], im.shape[0]) for im in images_a])
    wh_b = np.array([(im.shape[1], im.shape[0]) for im in images_b])
    searched = {}
    for name in layers:
        if outputs[name].ndim != 4:
            logger.warning("layer %s has no spatial map (output %s): skipped", name,
                           tuple(outputs[name].shape))
            continue
        maps = outputs[name].to(device)
        searched[name] = (maps[:n], maps[n:], fields[name])
    searched[PIXELS] = (pixel_patches(inputs_a, patch_px).to(device),
                        pixel_patches(inputs_b, patch_px).to(device), _PIXEL_FIELD)
    frames = []
    for name, (maps_a, maps_b, rf) in searched.items():
        pred = _transfer(maps_a, maps_b, rf, points_a, wh_a, wh_b, preprocess)
        frames.append(pd.DataFrame({
            "pair": np.arange(n), "index_a": -1, "index_b": -1, "layer": name,
            "true_x": points_b[:, 0], "true_y": points_b[:, 1], "pred_x": pred[:, 0],
            "pred_y": pred[:, 1], "error_px": np.hypot(*(pred - points_b).T),
            "image_side_px": wh_b.max(axis=1)}))
    return pd.concat(frames, ignore_index=True)[PAIR_COLUMNS]


def pck_table(pairs: pd.DataFrame, thresholds: Sequence[float]) -> pd.DataFrame:
    """The `PCK_COLUMNS` table: per layer and threshold, the fraction of pairs within it."""
    records = []
    for layer, rows in pairs.groupby("layer", sort=False):
        relative = rows["error_px"] / rows["image_side_px"]
        for threshold in thresholds:
            records.append((layer, float(threshold), float((relative <= threshold).mean()),
                            len(rows), float(rows["error_px"].mean()),
                            float(rows["error_px"].median())))
    return pd.DataFrame.from_records(records, columns=PCK_COLUMNS)


def sample_pairs(count: int, n_pairs: int, rng: np.random.Generator, key: str) -> np.ndarray:
    """(n_pairs, 2) distinct ordered pairs (a, b), a != b, of ``count`` images."""
    possible = count * (count - 1)
    if n_pairs > possible:
        raise ValueError(f"config key {key!r} asks for {n_pairs} pairs but {count} images give "
                         f"only {possible}")
    chosen = rng.choice(possible, size=n_pairs, replace=False)
    first, second = np.divmod(chosen, count - 1)
    return np.stack([first, second + (second >= first)], axis=1)


def plot_panels(images_a, images_b, pairs: pd.DataFrame, points_a: np.ndarray,
                count: int, path: str | os.PathLike) -> None:
    """One row per pair: A with its keypoint; B with the true keypoint and each layer's transfer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if count < 1 or not len(images_a):
        save_placeholder(path, "no example pairs asked for (explain.keypoints.panels: 0)")
        return
    rows = min(count, len(images_a))
    fig = Figure(figsize=(6.5, 3 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 2, squeeze=False)
    layers = list(dict.fromkeys(pairs["layer"]))
    colours = [f"C{i % 10}" for i in range(len(layers))]
    for r in range(rows):
        ax_a, ax_b = axes[r]
        ax_a.imshow(images_a[r], interpolation="nearest")
        ax_a.plot(*(points_a[r] - 0.5), "y+", markersize=14, markeredgewidth=2)
        ax_b.imshow(images_b[r], interpolation="nearest")
        mine = pairs[pairs["pair"] == r]
        ax_b.plot(mine["true_x"].iloc[0] - 0.5, mine["true_y"].iloc[0] - 0.5, "o", color="lime",
                  markerfacecolor="none", markersize=12, markeredgewidth=2, label="true")
        for layer, colour in zip(layers, colours):
            hit = mine[mine["layer"] == layer]
            ax_b.plot(hit["pred_x"] - 0.5, hit["pred_y"] - 0.5, "x", color=colour, markersize=9,
                      markeredgewidth=2, label=layer)
        ax_a.set_title(f"A: row {int(mine['index_a'].iloc[0])}", fontsize=8)
        ax_b.set_title(f"B: row {int(mine['index_b'].iloc[0])}", fontsize=8)
        ax_a.axis("off")
        ax_b.axis("off")
    axes[0][1].legend(fontsize=7, loc="upper right", bbox_to_anchor=(1.45, 1.0))
    save_figure(fig, path)


def _write_summary(pck: pd.DataFrame, class_label: str, paths: Mapping[str, str]) -> dict:
    base = Path(paths["summary"]).parent
    middle = sorted(pck["threshold"].unique())[len(pck["threshold"].unique()) // 2]
    numbers = [("class", class_label), ("pairs", int(pck["n_pairs"].iloc[0]))]
    for _, row in pck[pck["threshold"] == middle].iterrows():
        numbers.append((f"PCK@{middle:g} {row['layer']}", f"{row['pck']:.2f}"))
    return write_summary(
        paths["summary"], "explain_keypoints", "Keypoint transfer by feature matching",
        ("For pairs of images of one class, the feature vector at image A's keypoint is "
         "searched for among all positions of image B's feature map at each layer; the "
         "best match's receptive-field centre is the transferred keypoint (Long et al. "
         "2014). PCK@a: the fraction of pairs whose error is at most a times the larger "
         f"side of image B; '{PIXELS}' is the same search on raw pixel patches."),
        numbers=numbers,
        figures=[figure_entry(paths["panels"], base, "example transfers",
                              "A's keypoint (yellow +); in B the true keypoint (green "
                              "circle) and each layer's transfer (crosses)")],
        tables=[figure_entry(paths["pck"], base, "PCK per layer",
                             "fraction of correct transfers per layer and threshold"),
                figure_entry(paths["pairs"], base, "transfers",
                             "one row per pair and layer: true and predicted keypoint in B")])


def run_explain_keypoints(model_cfg: ModelConfig, weights_file: str | os.PathLike | None,
                          section: KeypointsConfig, preprocess: PreprocessConfig,
                          layers: Sequence[str] | None, manifest_csv: str | os.PathLike, *,
                          device: str, batch_size: int, pck_csv: str, pairs_csv: str,
                          panels_png: str, summary_json: str) -> None:
    """The stage: sample pairs of the class, transfer, write ``pck_csv``, ``pairs_csv``,
    ``panels_png`` and ``summary_json``.

    ``section`` is ``explain.keypoints``, whose ``point_columns`` must be set (the workflow
    fills the demo's); ``device`` and ``batch_size`` are ``explain.device`` and
    ``explain.batch_size``; ``layers`` the analysed layers.
    """
    key = "explain.keypoints"
    candidates, class_names, class_id = class_rows(manifest_csv, key, "point_columns",
                                                   section.point_columns, section.target_class, 2)
    model, device = load_stage_model(model_cfg, weights_file, preprocess, device,
                                     key="explain.device")
    names = chosen_layers(model, section.layers, layers, f"{key}.layers")
    count = min(len(candidates), max(2, 2 * section.n_pairs))
    rows, images = read_sample(candidates, count, section.seed, f"{key}.n_pairs", minimum=2)
    orig_wh = np.array([(im.shape[1], im.shape[0]) for im in images])
    points = keypoints_xy(rows, section.point_columns, section.point_units, orig_wh)
    n_pairs = clip_count(f"{key}.n_pairs", section.n_pairs, len(images) * (len(images) - 1),
                         "distinct ordered pairs of its images")
    pairs_ab = sample_pairs(len(images), n_pairs, np.random.default_rng(section.seed),
                            f"{key}.n_pairs")
    a, b = pairs_ab[:, 0], pairs_ab[:, 1]
    pairs = transfer_keypoints(model, [images[i] for i in a], [images[i] for i in b], points[a],
                               points[b], names, preprocess, section.pixel_patch_px,
                               batch_size, device)
    pairs["index_a"] = rows["index"].to_numpy()[a][pairs["pair"]]
    pairs["index_b"] = rows["index"].to_numpy()[b][pairs["pair"]]
    pck = pck_table(pairs, section.pck_thresholds)
    write_text(pairs_csv, pairs.to_csv(index=False))
    write_text(pck_csv, pck.to_csv(index=False))
    plot_panels([images[i] for i in a], [images[i] for i in b], pairs, points[a], section.panels,
                panels_png)
    paths = {"pck": pck_csv, "pairs": pairs_csv, "panels": panels_png, "summary": summary_json}
    _write_summary(pck, class_name(class_names, class_id), paths)
    logger.info("keypoints: class %s, %d pairs, layers %s", class_id, len(pairs_ab), names)
