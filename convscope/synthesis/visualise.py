"""Class-model images (Simonyan et al. 2013) and unit images by gradient ascent.

`visualise` optimises one image per target (a class, or a channel of a layer) with
`convscope.synthesis.render.render`, ``batch_size`` targets per batch, and returns the
images and the score curves. The two stage entry points write the files:

- `run_class_visualisation`: ``images.h5`` (``images`` (N, H, W, C) uint8, ``curves``
  (N, steps), ``class_id``, ``class_name``), one PNG per class in ``png_dir``, a grid, the
  curves figure and ``summary.json``;
- `run_unit_visualisation`: the same per unit (``layer``, ``channel``), with one folder
  per layer in ``png_dir`` (``<layer>/unit-NNN.png`` and ``grid.png``), and the summary's
  ``units`` entry, so the report's unit pages show each unit's image beside its top-k
  patches.

Batch ``b`` (0, 1, ...) of a call (for units: of a layer) starts from ``seed + b``. The
workflow splits the unit batches into chunk jobs (``synthesis.chunk_size``) and merges
them (`merge_unit_visualisation`); a batch's seed and units do not depend on the chunks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import h5py
import numpy as np
import torch
from torch import nn

from convscope.analysis.common import save_figure
from convscope.analysis.layer_names import layer_file_names
from convscope.config.sections import ModelConfig, PreprocessConfig, VisualisationConfig
from convscope.data.manifest import read_class_names
from convscope.data.preprocess import input_hw
from convscope.nn.layers import check_layer_names, listing
from convscope.nn.model_info import layer_output_shapes
from convscope.nn.models import load_stage_model
from convscope.render.grids import tile_grid, to_uint8
from convscope.store.chunks import chunk_items, concat_h5, merge_folders
from convscope.store.h5 import write_h5
from convscope.store.summary import figure_entry, write_summary
from convscope.synthesis.common import render_settings
from convscope.synthesis.objectives import Objective, channel, class_logit, l2
from convscope.synthesis.outputs import save_picture, upscaled
from convscope.synthesis.render import Rendered, RenderSettings, render

__all__ = ["MAX_SUMMARY_FIGURES", "resolve_classes", "resolve_units", "unit_objective",
           "visualise", "plot_curves", "run_class_visualisation", "unit_batches",
           "run_unit_visualisation", "merge_unit_visualisation"]

#: Classes shown one by one in the summary at most (the grid always shows them all).
MAX_SUMMARY_FIGURES = 64


def resolve_classes(classes: str | Sequence[str], class_names: Sequence[str],
                    n_outputs: int) -> list[int]:
    """Class ids to draw: every output for ``"all"``, else the ids of the given names."""
    if classes == "all":
        return list(range(n_outputs))
    ids = []
    for name in classes:
        if name not in class_names:
            raise ValueError(f"config key 'synthesis.visualisation.classes': {name!r} is not a "
                             f"class name; valid: all, or names from {listing(class_names)}")
        ids.append(list(class_names).index(name))
    return ids


def resolve_units(model: nn.Module, units: Mapping | None, layers: Sequence[str] | None,
                  max_units: int, preprocess: PreprocessConfig) -> dict[str, list[int]]:
    """Layer -> channels to draw. ``units`` empty = the first ``max_units`` channels of every
    layer of ``layers``; a layer's ``"all"`` = every channel of it; a channel beyond the
    layer's raises."""
    key = "synthesis.visualisation.units"
    first = not units
    units = dict(units) if units else {layer: "all" for layer in layers or []}
    check_layer_names(model, list(units), key=key)
    shapes = layer_output_shapes(model, list(units), input_hw(preprocess),
                                 int(preprocess.channels))
    resolved = {}
    for layer, chosen in units.items():
        n_channels = shapes[layer][0]
        if chosen == "all":
            chosen = list(range(min(n_channels, max_units) if first else n_channels))
        bad = [c for c in chosen if not 0 <= int(c) < n_channels]
        if bad:
            raise ValueError(f"config key {key!r}: layer {layer!r} has channels "
                             f"0..{n_channels - 1}, not {bad}")
        resolved[layer] = [int(c) for c in chosen]
    return resolved


def visualise(model: nn.Module, make_objective: Callable[[list[int]], Objective],
              targets: Sequence[int], settings: RenderSettings, *, batch_size: int,
              preprocess: PreprocessConfig, seed: int, device, desc: str) -> Rendered:
    """One image per target, ``batch_size`` targets optimised together per batch.

    ``make_objective(batch_targets)`` builds the batched objective of one batch.
    """
    images, curves = [], []
    for b, start in enumerate(range(0, len(targets), batch_size)):
        batch = list(targets[start:start + batch_size])
        rendered = render(model, make_objective(batch), len(batch), settings,
                          preprocess=preprocess, seed=seed + b, device=device,
                          desc=f"{desc} {start}-{start + len(batch) - 1}")
        images.append(rendered.images)
        curves.append(rendered.curves)
    return Rendered(images=np.concatenate(images), curves=np.concatenate(curves))


def plot_curves(path: str | os.PathLike, panels: Mapping[str, np.ndarray]) -> None:
    """Figure of score curves: one panel per entry (title -> (n, steps)), a line per image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.0 * len(panels), 3.2), dpi=100)
    FigureCanvasAgg(fig)
    for i, (title, curves) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.plot(np.asarray(curves).T, lw=0.8, alpha=0.6)
        ax.set(title=title, xlabel="step", ylabel="objective")
    fig.tight_layout()
    save_figure(fig, path)


def _grid(images: np.ndarray) -> np.ndarray:
    """The (n, H, W, C) uint8 images as one framed grid, each enlarged like the PNGs."""
    tiles = [upscaled(image, 64) for image in images]
    return tile_grid(tiles, np.zeros(len(tiles), bool), pad=2)


def _objective_of(cfg, make: Callable[[list[int]], Objective]) -> Callable:
    """``make`` with the L2 decay of the section subtracted when it is set."""
    if cfg.l2_decay <= 0:
        return make
    return lambda targets: make(targets) - cfg.l2_decay * l2()


def unit_objective(cfg: VisualisationConfig, layer: str) -> Callable[[list[int]], Objective]:
    """Batch of channels -> the section's unit objective on ``layer`` (with its L2 decay)."""
    return _objective_of(cfg, lambda batch: channel(layer, batch, cfg.objective))


@torch.no_grad()
def _class_probabilities(model: nn.Module, images01: np.ndarray, ids: Sequence[int],
                         preprocess: PreprocessConfig, device) -> np.ndarray:
    """(N,) softmax probability of each image's own class, images (N, H, W, C) in 0..1."""
    from convscope.synthesis.render import to_model_space

    x = torch.from_numpy(images01).permute(0, 3, 1, 2).to(device)
    probs = model(to_model_space(x, preprocess)).softmax(1).cpu().numpy()
    return probs[np.arange(len(ids)), np.asarray(ids)]


def run_class_visualisation(model_cfg: ModelConfig, weights: str | os.PathLike | None,
                            preprocess: PreprocessConfig, cfg: VisualisationConfig,
                            device_name: str, seed: int, classes_json: str | os.PathLike, *,
                            images_h5, curves_png, grid_png, png_dir, summary_json) -> dict:
    """Class-model images of ``cfg.classes`` (the ``synthesis.visualisation`` section, with
    ``synthesis.device`` and ``synthesis.seed``); writes the stage's files."""
    from convscope.analysis.common import class_name

    model, device = load_stage_model(model_cfg, weights, preprocess, device_name,
                                     key="synthesis.device")
    names = read_class_names(classes_json)
    ids = resolve_classes(cfg.classes, names, _n_outputs(model, preprocess, device))
    rendered = visualise(model, _objective_of(cfg, class_logit), ids, render_settings(cfg),
                         batch_size=cfg.batch_size, preprocess=preprocess, seed=seed,
                         device=device, desc="classes")
    images = to_uint8(rendered.images)
    labels = [class_name(names, i) for i in ids]
    probs = _class_probabilities(model, rendered.images, ids, preprocess, device)
    write_h5(images_h5, {"images": images, "curves": rendered.curves, "class_id": ids,
                         "class_name": labels, "probability": probs})
    figures, folder = [], os.path.dirname(os.path.abspath(summary_json))
    for image, class_id, label, prob in zip(images, ids, labels, probs):
        path = os.path.join(png_dir, f"class-{class_id:03d}.png")
        save_picture(path, upscaled(image))
        if len(figures) < MAX_SUMMARY_FIGURES:
            figures.append(figure_entry(path, folder, f"class {label}",
                                        f"softmax probability of {label}: {prob:.3f}"))
    save_picture(grid_png, _grid(images))
    plot_curves(curves_png, {"class logits": rendered.curves})
    head = [figure_entry(grid_png, folder, "all classes", ", ".join(labels)),
            figure_entry(curves_png, folder, "objective per step",
                         "the class logit of each image at each step")]
    return write_summary(
        summary_json, "synthesis_classes", "Class-model images",
        "Images made by gradient ascent on each class's logit (Simonyan et al. 2013): what "
        "the network takes as the most typical input of the class. Structure repeated across "
        "the image and unnatural colours are normal; shapes and textures typical of the class "
        "are what to look for.",
        numbers=[("classes", len(ids)), ("steps", cfg.steps),
                 ("mean probability of the target class", f"{float(probs.mean()):.3f}")],
        figures=head + figures)


@torch.no_grad()
def _n_outputs(model: nn.Module, preprocess: PreprocessConfig, device) -> int:
    """Number of the model's outputs (classes)."""
    height, width = input_hw(preprocess)
    x = torch.zeros(1, int(preprocess.channels), height, width, device=device)
    return int(model(x).shape[1])


def unit_batches(chosen: Mapping[str, Sequence[int]],
                 batch_size: int) -> list[tuple[str, int, list[int]]]:
    """``(layer, b, channels)`` of every batch of the units ``chosen`` (layer -> channels), in
    layer order: batch ``b`` of a layer holds its channels ``b * batch_size`` onwards and
    starts from ``seed + b``, whatever the chunks (`convscope.store.chunks.unit_chunk`)."""
    return [(layer, b, list(channels[start:start + batch_size]))
            for layer, channels in chosen.items()
            for b, start in enumerate(range(0, len(channels), batch_size))]


def _render_batches(model: nn.Module, cfg: VisualisationConfig, batches, preprocess, seed: int,
                    device) -> dict[str, np.ndarray]:
    """The unit images (uint8) and curves of ``batches`` (`unit_batches`), with their layer
    and channel: the datasets of ``images.h5``."""
    settings = render_settings(cfg)
    images, curves, layers, channels = [], [], [], []
    for layer, b, batch in batches:
        rendered = render(model, unit_objective(cfg, layer)(batch), len(batch), settings,
                          preprocess=preprocess, seed=seed + b, device=device,
                          desc=f"units {layer} {batch[0]}-{batch[-1]}")
        images.append(to_uint8(rendered.images))
        curves.append(rendered.curves)
        layers += [layer] * len(batch)
        channels += batch
    if not batches:  # an empty chunk: zero rows
        height, width = input_hw(preprocess)
        images = [np.zeros((0, height, width, int(preprocess.channels)), np.uint8)]
        curves = [np.zeros((0, cfg.steps), np.float32)]
    return {"images": np.concatenate(images), "curves": np.concatenate(curves),
            "layer": np.asarray(layers, dtype=object), "channel": np.asarray(channels, np.int64)}


def _save_unit_pngs(data: Mapping[str, np.ndarray], png_dir, files: Mapping[str, str]) -> None:
    """Each unit's image, enlarged: ``png_dir/<files[layer]>/unit-NNN.png``."""
    for image, layer, c in zip(data["images"], data["layer"], data["channel"]):
        save_picture(os.path.join(png_dir, files[layer], f"unit-{int(c):03d}.png"),
                     upscaled(image))


def _write_unit_figures(cfg: VisualisationConfig, data: Mapping[str, np.ndarray], *, png_dir,
                        curves_png, summary_json) -> dict:
    """Per layer the grid of its unit images, the curves figure and summary.json, from the
    datasets of ``images.h5`` (the unit PNGs are written already)."""
    folder = os.path.dirname(os.path.abspath(summary_json))
    layers = np.asarray([str(v) for v in data["layer"]])
    files = layer_file_names(list(dict.fromkeys(layers)))
    figures, units, panels = [], {}, {}
    for layer in files:
        rows = np.flatnonzero(layers == layer)
        channels = [int(c) for c in data["channel"][rows]]
        panels[layer] = data["curves"][rows]
        units[layer] = {str(c): [figure_entry(
            os.path.join(png_dir, files[layer], f"unit-{c:03d}.png"), folder,
            "unit image (gradient ascent)",
            f"image maximising the {cfg.objective} of {layer} channel {c}; "
            f"objective {curve[0]:.3g} -> {curve[-1]:.3g}")]
            for c, curve in zip(channels, panels[layer])}
        grid = os.path.join(png_dir, files[layer], "grid.png")
        save_picture(grid, _grid(data["images"][rows]))
        figures.append(figure_entry(grid, folder, f"{layer}",
                                    f"channels {', '.join(map(str, channels))}, row by row"))
    plot_curves(curves_png, panels)
    figures.append(figure_entry(curves_png, folder, "objective per step",
                                "each unit's objective at each step, per layer"))
    curves = data["curves"]
    rose = float(np.mean(curves[:, -1] > curves[:, 0]))
    return write_summary(
        summary_json, "synthesis_units", "Unit images",
        "For each unit (a channel of a layer), an image made by gradient ascent on the unit's "
        f"{cfg.objective} activation, all units of a layer optimised together in batches "
        f"({cfg.parametrisation} parametrisation). A unit whose objective stays at 0 is dead on "
        "these inputs (its image stays grey).",
        numbers=[("units", len(curves)), ("steps", cfg.steps),
                 ("units whose objective rose", f"{rose:.0%}")],
        figures=figures, units=units or None)


def run_unit_visualisation(model_cfg: ModelConfig, weights: str | os.PathLike | None,
                           preprocess: PreprocessConfig, cfg: VisualisationConfig,
                           device_name: str, seed: int, layers: Sequence[str] | None, *,
                           images_h5, png_dir, curves_png=None, summary_json=None,
                           chunk: int = 0, chunks_of: int | None = None) -> dict | None:
    """One image per unit of ``cfg.units`` (empty: the first ``cfg.units_per_layer`` channels of
    each of ``layers``): ``images.h5`` and the unit PNGs, then the grids, the curves figure
    and summary.json (returned). With ``chunks_of`` (batches per chunk), only chunk
    ``chunk``'s batches of `unit_batches`, no figures: `merge_unit_visualisation` joins them.
    """
    model, device = load_stage_model(model_cfg, weights, preprocess, device_name,
                                     key="synthesis.device")
    chosen = resolve_units(model, cfg.units, layers, cfg.units_per_layer, preprocess)
    batches = unit_batches(chosen, cfg.batch_size)
    if chunks_of is not None:
        batches = chunk_items(batches, chunk, chunks_of)
    data = _render_batches(model, cfg, batches, preprocess, seed, device)
    write_h5(images_h5, data)
    os.makedirs(png_dir, exist_ok=True)
    _save_unit_pngs(data, png_dir, layer_file_names(list(chosen)))
    if chunks_of is not None:
        return None
    return _write_unit_figures(cfg, data, png_dir=png_dir, curves_png=curves_png,
                               summary_json=summary_json)


def merge_unit_visualisation(cfg: VisualisationConfig, *, chunk_images, chunk_png, images_h5,
                             curves_png, png_dir, summary_json) -> dict:
    """The synthesis_units files from its chunks (`run_unit_visualisation` with
    ``chunks_of``, in chunk order): ``images.h5``, the unit PNGs, grids, curves, summary."""
    concat_h5(chunk_images, images_h5)
    os.makedirs(png_dir, exist_ok=True)
    merge_folders(chunk_png, png_dir)
    with h5py.File(images_h5, "r") as f:
        data = {name: f[name][()] for name in ("images", "curves", "layer", "channel")}
    data["layer"] = np.asarray([v.decode() if isinstance(v, bytes) else str(v)
                                for v in data["layer"]], dtype=object)
    return _write_unit_figures(cfg, data, png_dir=png_dir, curves_png=curves_png,
                               summary_json=summary_json)
