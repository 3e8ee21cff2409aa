"""The ``explain_units`` stage: unit reconstructions of the top images, as Zeiler & Fergus Fig. 2.

For each chosen unit (layer, channel) and each of its top images
(``results/units/topk.csv``, at most ``explain.reconstructions.top_k``, only
where the unit fires), the activation at its maximum is projected to pixels
with deconvnet and guided backprop (`convscope.explain.reconstruct`), then
cropped to that position's receptive field (``model_info.json``) and shown
beside the image patch. Figures: ``<figures_dir>/<layer>/grid.png`` (rows =
units, per rank: patch, deconvnet, guided backprop) and one
``unit-NNN.png`` per unit. Raw reconstructions: ``reconstructions.h5``,
group per layer with ``deconvnet`` / ``guided_backprop`` (n, C, H, W) float32
and ``channel``, ``rank``, ``index``, ``fy``, ``fx``, ``box`` (x0, y0, x1, y1 in
model-input pixels).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from convscope.analysis.layer_names import layer_file_names
from convscope.config.sections import ExplainReconstructionsConfig, ModelConfig, PreprocessConfig
from convscope.data.images import read_prepared
from convscope.data.preprocess import input_hw
from convscope.explain.attribution import backprop_ready
from convscope.explain.inputs import display_rgb, spatial_layers, to_input
from convscope.explain.panels import image_cell, labelled_grid, signed_rgb_cell
from convscope.explain.reconstruct import RECONSTRUCTION_METHODS, crop_box, reconstruct_units
from convscope.nn.device import resolve_device
from convscope.nn.models import load_stage_model
from convscope.nn.receptive_field import ReceptiveField
from convscope.store.atomic import atomic_path, save_image
from convscope.store.paths import resolved_paths
from convscope.store.shards import layer_key
from convscope.store.summary import figure_entry, write_summary
from convscope.store.tables import read_table

__all__ = ["choose_units", "run_explain_units"]


def choose_units(reconstructions: ExplainReconstructionsConfig, topk: pd.DataFrame,
                 spatial: list[str]) -> pd.DataFrame:
    """The topk.csv rows to reconstruct: chosen layers and channels, ranks < topk, where the unit fires.

    ``reconstructions`` is the ``explain.reconstructions`` section; ``spatial`` the analysed
    layers with feature maps. Channels default to the ``units_per_layer`` with the largest
    top-1 value (ties: smaller id).
    """
    cfg = reconstructions
    layers = cfg.layers if cfg.layers is not None else spatial
    bad = [layer for layer in layers if layer not in spatial]
    if bad:
        raise ValueError(f"explain.reconstructions.layers: {bad} are not analysed layers with "
                         f"feature maps; valid: {', '.join(spatial) or 'none'}")
    parts = []
    for layer in layers:
        rows = topk[topk["layer"] == layer]
        if cfg.channels is not None:
            channels = [int(c) for c in cfg.channels]
            missing = sorted(set(channels) - set(rows["channel"]))
            if missing:
                raise ValueError(f"explain.reconstructions.channels: {missing} are not channels "
                                 f"of {layer!r} (0..{int(rows['channel'].max())})")
        else:
            best = rows[rows["rank"] == 0].sort_values(["value", "channel"], ascending=[False, True])
            channels = best["channel"].head(cfg.units_per_layer).astype(int).tolist()
        chosen = rows[rows["channel"].isin(channels) & (rows["rank"] < cfg.top_k)]
        fires = np.isfinite(chosen["value"]) & (chosen["value"] > 0)
        parts.append(chosen[fires].sort_values(["channel", "rank"]))
    return pd.concat(parts, ignore_index=True) if parts else topk.iloc[:0]


def _reconstruct_layer(model, layer: str, rows: pd.DataFrame, manifest: pd.DataFrame,
                       preprocess: PreprocessConfig, batch_size: int, device, group: h5py.Group,
                       rf: ReceptiveField | None) -> dict:
    """Reconstruct one layer's rows into ``group``; returns (channel, rank) -> (patch, deconv, guided)."""
    n = len(rows)
    hw = input_hw(preprocess)
    for method in RECONSTRUCTION_METHODS:
        group.create_dataset(method, (n, preprocess.channels, *hw), dtype="float32",
                             chunks=(1, preprocess.channels, *hw), compression="gzip",
                             compression_opts=1)
    for name in ("channel", "rank", "index", "fy", "fx"):
        group[name] = rows[name].to_numpy(np.int64)
    boxes = np.array([crop_box(rf, fy, fx, hw[0], hw[1]) for fy, fx in zip(rows["fy"], rows["fx"])],
                     dtype=np.int64).reshape(-1, 4)
    group["box"] = boxes
    lookup = manifest.set_index("index").loc[rows["index"]]
    slots = lookup["slot"].to_numpy() if "slot" in lookup.columns else np.full(n, -1)
    crops = {}
    for start in range(0, n, batch_size):
        part = slice(start, min(n, start + batch_size))
        pixels = read_prepared(lookup["path"].to_numpy()[part], slots[part], preprocess)
        x = to_input(pixels, preprocess, device)
        index = {k: torch.tensor(rows[k].to_numpy(np.int64)[part], device=device)
                 for k in ("channel", "fy", "fx")}
        out = {}
        for method in RECONSTRUCTION_METHODS:
            out[method] = reconstruct_units(model, layer, x, index["channel"], index["fy"],
                                            index["fx"], method).cpu().numpy()
            group[method][part] = out[method]
        rgb = display_rgb(pixels)
        for i, j in enumerate(range(part.start, part.stop)):
            x0, y0, x1, y1 = boxes[j]
            crops[(int(rows["channel"].iloc[j]), int(rows["rank"].iloc[j]))] = (
                rgb[i, y0:y1, x0:x1],
                *(out[m][i].transpose(1, 2, 0)[y0:y1, x0:x1] for m in RECONSTRUCTION_METHODS))
    return crops


def _unit_rows(crops: dict, channels: list[int], ranks: int, cell_px: int) -> list:
    """Grid rows, one per channel: per rank the patch, deconvnet and guided-backprop cells."""
    rows = []
    for channel in channels:
        cells = []
        for rank in range(ranks):
            crop = crops.get((channel, rank))
            if crop is None or crop[0].size == 0:
                cells += [None, None, None]
                continue
            cells += [image_cell(crop[0], cell_px), signed_rgb_cell(crop[1], cell_px),
                      signed_rgb_cell(crop[2], cell_px)]
        rows.append((f"ch {channel}", cells))
    return rows


def _write_layer_figures(layer: str, crops: dict, rows: pd.DataFrame, cell_px: int,
                         layer_dir: Path, root: Path) -> tuple[dict, dict]:
    """grid.png and unit-NNN.png of one layer; returns (summary figure, units entry)."""
    layer_dir.mkdir(parents=True, exist_ok=True)
    channels = sorted(set(int(c) for c in rows["channel"]))
    ranks = int(rows["rank"].max()) + 1 if len(rows) else 0
    header = ["patch", "deconv", "guided"] * ranks
    grid_rows = _unit_rows(crops, channels, ranks, cell_px)
    grid = layer_dir / "grid.png"
    save_image(grid, labelled_grid(f"{layer}: top images, deconvnet, guided backprop", header,
                                   grid_rows, cell_px))
    units = {}
    for channel, grid_row in zip(channels, grid_rows):
        path = layer_dir / f"unit-{channel:03d}.png"
        save_image(path, labelled_grid(f"{layer} channel {channel}", header, [grid_row], cell_px))
        units[str(channel)] = [figure_entry(
            path, root, "deconvnet and guided backprop reconstructions",
            "Per top image: the receptive-field patch, the deconvnet and the guided-backprop "
            "projection of the unit's maximum.")]
    figure = figure_entry(grid, root, f"Reconstructions of {layer}",
                          f"Rows: units of {layer}; per top image the patch, the deconvnet and "
                          "the guided-backprop reconstruction (Zeiler & Fergus 2013, Fig. 2).")
    return figure, units


def _receptive_field(model_info: dict, layer: str) -> ReceptiveField | None:
    geometry = model_info.get("layers", {}).get(layer, {}).get("receptive_field")
    return ReceptiveField.from_dict(geometry) if geometry else None


def _nothing_to_do(chosen: pd.DataFrame, layers) -> list[tuple[str, str]]:
    """The summary's ``skipped`` line when no unit was chosen, else none."""
    if len(chosen):
        return []
    return [("skipped", "no unit to reconstruct: none of the analysed layers "
             f"({', '.join(map(str, layers or [])) or 'none'}) has a spatial output with "
             "top images in units/topk.csv")]


def run_explain_units(model_cfg: ModelConfig, weights_file, preprocess: PreprocessConfig,
                      reconstructions: ExplainReconstructionsConfig, layers, *, device: str,
                      batch_size: int, topk_csv, manifest_csv, model_info_json,
                      reconstructions_h5, figures_dir, summary_json) -> pd.DataFrame:
    """The unit-reconstruction stage: ``reconstructions.h5``, figures per layer and unit, summary.json.

    ``device`` ("auto", "cpu", "cuda[:N]") and ``batch_size`` (images per pass) are the
    speed settings ``explain.device`` and ``explain.batch_size``; they change no number.
    Returns the reconstructed rows of topk.csv.
    """
    topk = read_table(topk_csv)
    manifest = read_table(manifest_csv)
    manifest["path"] = resolved_paths(manifest["path"].astype(str), Path(manifest_csv).parent)
    model_info = json.loads(Path(model_info_json).read_text())
    chosen = choose_units(reconstructions, topk, spatial_layers(model_info_json, layers or []))
    torch_device = resolve_device(device, "explain.device")
    model = backprop_ready(load_stage_model(model_cfg, weights_file, preprocess, torch_device)[0])
    names = list(dict.fromkeys(chosen["layer"]))
    dirs = layer_file_names(names)
    root = Path(summary_json).parent
    Path(figures_dir).mkdir(parents=True, exist_ok=True)  # declared even when nothing is drawn
    figures, units = [], {}
    with atomic_path(reconstructions_h5) as tmp, h5py.File(tmp, "w") as f:
        for layer in tqdm(names, desc="reconstructions", unit="layer", file=sys.stderr):
            rows = chosen[chosen["layer"] == layer].reset_index(drop=True)
            crops = _reconstruct_layer(model, layer, rows, manifest, preprocess, batch_size,
                                       torch_device, f.create_group(layer_key(layer)),
                                       _receptive_field(model_info, layer))
            figure, units[layer] = _write_layer_figures(layer, crops, rows,
                                                        reconstructions.cell_px,
                                                        Path(figures_dir) / dirs[layer], root)
            figures.append(figure)
    write_summary(
        summary_json, "explain_units", "Unit reconstructions",
        ("What in its top images drives a unit: the unit's activation at its maximum "
         "projected back to pixels with the deconvnet (Zeiler & Fergus 2013) and guided "
         "backprop (Springenberg et al. 2014), cropped to its receptive field and shown "
         "beside the image patch. Grey: 0; colours: the sign and size of the projection, "
         "each scaled to its own maximum. Raw projections are in reconstructions.h5."),
        numbers=[("units", sum(len(v) for v in units.values())),
                 ("reconstructions", len(chosen))] + _nothing_to_do(chosen, layers),
        figures=figures, units=units)
    return chosen
