"""Features across training (Zeiler & Fergus 2013, Fig. 4): chosen units at each checkpoint.

For each unit (``layer:channel``) and each checkpoint of one model, `run_evolution` finds
the image of a seeded sample of the dataset with the largest spatial maximum of the unit
and the receptive-field box of that maximum (`convscope.nn.receptive_field`), and renders
the unit's image with the render loop of `convscope.synthesis.visualise` (settings of
``synthesis.visualisation``). It writes ``evolution.h5`` (``checkpoints`` (K,),
``layer``/``channel`` (U,), ``top_row``/``top_value`` (U, K), ``top_box`` (U, K, 4)
model-input pixels x0, y0, x1, y1, ``top_images`` and ``unit_images`` (U, K, H, W, C)
uint8), one strip per unit in ``strips_dir`` (columns = checkpoints; rows = the top image
with its box, the box's patch, the unit image) and ``summary.json``. Without checkpoints
the stage writes the same files holding a note instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from convscope.analysis.common import save_figure, save_placeholder
from convscope.analysis.layer_names import safe_layer_name
from convscope.config.counts import clip_count
from convscope.config.sections import (EvolutionConfig, ModelConfig, PreprocessConfig,
                                       VisualisationConfig)
from convscope.data.preprocess import input_hw
from convscope.nn.hooks import capture_tensors
from convscope.nn.models import load_stage_model
from convscope.nn.receptive_field import receptive_fields
from convscope.render.grids import to_uint8
from convscope.store.h5 import write_h5
from convscope.store.summary import figure_entry, write_summary
from convscope.synthesis.common import render_settings
from convscope.synthesis.images import sample_images
from convscope.synthesis.render import to_model_space
from convscope.synthesis.visualise import resolve_units, unit_objective, visualise

__all__ = ["parse_units", "top_activations", "run_evolution"]

_BATCH = 256


def parse_units(units: Sequence[str], layers: Sequence[str] | None,
                channels_per_layer: int) -> dict[str, list[int]]:
    """``["relu3:5", ...]`` -> ``{"relu3": [5, ...]}``; empty = the first
    ``channels_per_layer`` channels of every layer of ``layers``."""
    if not units:
        return {layer: list(range(channels_per_layer)) for layer in layers or []}
    parsed: dict[str, list[int]] = {}
    for unit in units:
        layer, _, index = unit.rpartition(":")
        parsed.setdefault(layer, []).append(int(index))
    return parsed


@torch.no_grad()
def top_activations(model: nn.Module, images: np.ndarray, units: dict[str, list[int]],
                    preprocess: PreprocessConfig, device) -> dict[str, tuple[np.ndarray, ...]]:
    """Per layer, for each chosen channel: ``(image, value, y, x)`` of the largest spatial
    maximum over ``images`` (n, H, W, C) uint8, each an array over the channels."""
    best = {layer: (np.zeros(len(chs), np.int64), np.full(len(chs), -np.inf),
                    np.zeros(len(chs), np.int64), np.zeros(len(chs), np.int64))
            for layer, chs in units.items()}
    for start in range(0, len(images), _BATCH):
        batch = torch.from_numpy(images[start:start + _BATCH]).permute(0, 3, 1, 2)
        with capture_tensors(model, list(units), key="synthesis.evolution.units",
                             stop=True) as acts:
            model(to_model_space(batch.float().div(255.0).to(device), preprocess))
        for layer, chs in units.items():
            act = acts[layer][:, chs]
            act = act.reshape(act.shape[0], len(chs), -1)
            width = acts[layer].shape[-1] if acts[layer].ndim == 4 else 1
            values, positions = act.max(2)
            value, image = values.max(0)
            better = value.cpu().numpy() > best[layer][1]
            pos = positions[image, torch.arange(len(chs))].cpu().numpy()
            for array, new in zip(best[layer], (image.cpu().numpy() + start, value.cpu().numpy(),
                                                pos // width, pos % width)):
                array[better] = new[better]
    return best


def _boxes(fields: dict, layer: str, ys: np.ndarray, xs: np.ndarray,
           height: int, width: int) -> np.ndarray:
    """(n, 4) receptive-field boxes of positions, clipped to the (height, width) input."""
    field = fields.get(layer)
    if field is None:
        return np.tile(np.array([0, 0, width, height], np.int64), (len(ys), 1))
    boxes = field.boxes_xyxy(ys, xs)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    return boxes


def _checkpoint_results(model: nn.Module, images: np.ndarray, units: dict[str, list[int]],
                        cfg: VisualisationConfig, seed: int, preprocess: PreprocessConfig,
                        device, name: str) -> tuple[np.ndarray, ...]:
    """For one checkpoint, over all units in order: top image, value, box, unit image."""
    height, width = input_hw(preprocess)
    fields = receptive_fields(model, list(units), (height, width), int(preprocess.channels))
    best = top_activations(model, images, units, preprocess, device)
    rows, values, boxes, unit_images = [], [], [], []
    for layer, chs in units.items():
        image, value, ys, xs = best[layer]
        rendered = visualise(model, unit_objective(cfg, layer), chs, render_settings(cfg),
                             batch_size=cfg.batch_size, preprocess=preprocess, seed=seed,
                             device=device, desc=f"{name} {layer}")
        rows.append(image), values.append(value)
        boxes.append(_boxes(fields, layer, ys, xs, height, width))
        unit_images.append(to_uint8(rendered.images))
    return tuple(np.concatenate(part) for part in (rows, values, boxes, unit_images))


def _strip(path, names: Sequence[str], tops: np.ndarray, boxes: np.ndarray,
           unit_images: np.ndarray, values: np.ndarray, title: str) -> None:
    """One unit's strip: columns = checkpoints; rows = top image with box, patch, unit image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    k = len(names)
    fig = Figure(figsize=(1.7 * k, 5.4), dpi=100)
    FigureCanvasAgg(fig)
    for j in range(k):
        x0, y0, x1, y1 = (int(v) for v in boxes[j])
        patch = tops[j][y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
        for i, image in enumerate((tops[j], patch, unit_images[j])):
            ax = fig.add_subplot(3, k, i * k + j + 1)
            ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray",
                      vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                       edgecolor="red", lw=1))
                ax.set_title(f"{names[j]}\nmax {values[j]:.3g}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def _skipped(evolution_h5, strips_dir, summary_json, reason: str) -> dict:
    """The stage's files when there are no checkpoints: a note instead of results."""
    write_h5(evolution_h5, {}, attrs={"note": reason})
    note = Path(strips_dir) / "note.png"
    save_placeholder(note, reason)
    return write_summary(summary_json, "synthesis_evolution", "Features across training",
                         f"Skipped: {reason}",
                         figures=[figure_entry(note, Path(summary_json).parent, "skipped",
                                               reason)])


def run_evolution(model_cfg: ModelConfig, preprocess: PreprocessConfig, cfg: EvolutionConfig,
                  visualisation: VisualisationConfig, device_name: str, seed: int,
                  manifest_csv: str | os.PathLike,
                  layers: Sequence[str] | None, checkpoints: Sequence[str | os.PathLike], *,
                  evolution_h5, strips_dir, summary_json,
                  skip_reason: str = "no checkpoints") -> dict:
    """Top image, its patch and the unit image of each chosen unit at each checkpoint (in
    the given order); writes the stage's files (a note with ``skip_reason`` if none).

    ``cfg`` is ``synthesis.evolution``; the unit images use ``visualisation``
    (``synthesis.visualisation``), ``device_name`` and ``seed`` are ``synthesis.device`` and
    ``synthesis.seed``."""
    Path(strips_dir).mkdir(parents=True, exist_ok=True)
    if not checkpoints:
        return _skipped(evolution_h5, strips_dir, summary_json, skip_reason)
    rows, images = sample_images(manifest_csv, cfg.n_images, seed, preprocess)
    clip_count("synthesis.evolution.n_images", cfg.n_images, len(rows), "readable images")
    names = [Path(path).stem for path in checkpoints]
    per_checkpoint, units = [], None
    for name, path in zip(names, checkpoints):
        model, device = load_stage_model(model_cfg, path, preprocess, device_name,
                                         key="synthesis.device")
        if units is None:
            units = resolve_units(model, parse_units(cfg.units, layers, cfg.units_per_layer),
                                  layers, 0, preprocess)
        per_checkpoint.append(_checkpoint_results(model, images, units, visualisation, seed,
                                                  preprocess, device, name))
    # (U, K, ...) arrays: units along the first axis, checkpoints along the second
    top, value, box, unit_images = (np.stack(part, axis=1) for part in zip(*per_checkpoint))
    unit_layer = [layer for layer, chs in units.items() for _ in chs]
    unit_channel = [c for chs in units.values() for c in chs]
    write_h5(evolution_h5, {
        "checkpoints": [str(p) for p in checkpoints], "layer": unit_layer,
        "channel": np.asarray(unit_channel, np.int64), "top_row": rows[top],
        "top_value": value.astype(np.float32), "top_box": box, "top_images": images[top],
        "unit_images": unit_images})
    figures, unit_pages = [], {}
    base = os.path.dirname(os.path.abspath(summary_json))
    for u, (layer, c) in enumerate(zip(unit_layer, unit_channel)):
        path = os.path.join(strips_dir, f"{safe_layer_name(layer)}-unit-{c:03d}.png")
        _strip(path, names, images[top[u]], box[u], unit_images[u], value[u],
               f"{layer} channel {c}")
        entry = figure_entry(path, base, f"{layer} channel {c}",
                             "columns: checkpoints in training order; rows: the top image of "
                             "the sample with its receptive field, the patch, the unit image")
        figures.append(entry)
        unit_pages.setdefault(layer, {})[str(c)] = [{**entry, "title": "across training"}]
    return write_summary(
        summary_json, "synthesis_evolution", "Features across training",
        "How chosen units develop during training (Zeiler & Fergus 2013, Fig. 4): at each "
        f"checkpoint, the image of a seeded sample of {len(rows)} dataset images that excites "
        "the unit most, the receptive-field patch of that maximum, and the unit's image by "
        "gradient ascent.",
        numbers=[("checkpoints", len(checkpoints)), ("units", len(unit_channel)),
                 ("sample images", len(rows))],
        figures=figures, units=unit_pages or None)
