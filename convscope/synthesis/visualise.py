"""Class-model images (Simonyan et al. 2013) and unit images by gradient ascent.

`visualise` optimises one image per target (a class, or a channel of a layer) with
`convscope.synthesis.render.render`, ``batch_size`` targets per batch, and returns the
images and the score curves. The two stage entry points write the files:

- `run_class_visualisation`: ``images.h5`` (``images`` (N, H, W, C) uint8, ``curves``
  (N, steps), ``class_id``, ``class_name``), one PNG per class in ``png_dir``, a grid, the
  curves figure and ``summary.json``;
- unit images: `convscope.synthesis.units.run_unit_visualisation`.

Batch ``b`` (0, 1, ...) of a call starts from ``seed + b``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from convscope.analysis.common import save_figure
from convscope.config.sections import ModelConfig, PreprocessConfig, VisualisationConfig
from convscope.data.manifest import read_class_names
from convscope.data.preprocess import input_hw
from convscope.nn.layers import check_layer_names, listing
from convscope.nn.model_info import layer_output_shapes
from convscope.nn.models import load_stage_model
from convscope.render.grids import tile_grid, to_uint8
from convscope.store.h5 import write_h5
from convscope.store.summary import figure_entry, write_summary
from convscope.synthesis.common import render_settings
from convscope.synthesis.objectives import Objective, channel, class_logit, l2
from convscope.synthesis.outputs import save_picture, upscaled
from convscope.synthesis.quality import (RULES, count_line, h5_arrays, judge, stored01,
                                         summary_entry)
from convscope.synthesis.render import Rendered, RenderSettings, render

__all__ = ["MAX_SUMMARY_FIGURES", "resolve_classes", "resolve_units", "unit_objective",
           "visualise", "plot_curves", "image_grid", "class_probabilities",
           "run_class_visualisation"]

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


def image_grid(images: np.ndarray) -> np.ndarray:
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
def class_probabilities(model: nn.Module, images_uint8: np.ndarray, ids: Sequence[int],
                        preprocess: PreprocessConfig, device) -> np.ndarray:
    """(N,) softmax probability of each stored image's own class, images (N, H, W, C) uint8."""
    from convscope.synthesis.render import to_model_space

    x = stored01(images_uint8).to(device)
    probs = model(to_model_space(x, preprocess)).double().softmax(1).cpu().numpy()
    return probs[np.arange(len(ids)), np.asarray(ids)]


def run_class_visualisation(model_cfg: ModelConfig, weights: str | os.PathLike | None,
                            preprocess: PreprocessConfig, cfg: VisualisationConfig,
                            device_name: str, seed: int, classes_json: str | os.PathLike, *,
                            images_h5, curves_png, grid_png, png_dir, summary_json) -> dict:
    """Class-model images of ``cfg.classes`` (the ``synthesis.visualisation`` section, with
    ``synthesis.device`` and ``synthesis.seed``), each judged on the stored image against
    ``cfg.class_probability``; writes the stage's files."""
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
    probs = class_probabilities(model, images, ids, preprocess, device)
    verdicts = judge([f"class {label}" for label in labels], probs, cfg.class_probability,
                     inclusive=True)
    write_h5(images_h5, {"images": images, "curves": rendered.curves, "class_id": ids,
                         "class_name": labels, "probability": probs, **h5_arrays(verdicts)},
             {"rule": RULES["class"], "class_probability": cfg.class_probability})
    figures, folder = [], os.path.dirname(os.path.abspath(summary_json))
    for image, class_id, label, verdict in zip(images, ids, labels, verdicts):
        path = os.path.join(png_dir, f"class-{class_id:03d}.png")
        save_picture(path, upscaled(image))
        if len(figures) < MAX_SUMMARY_FIGURES:
            figures.append((verdict.converged, figure_entry(
                path, folder, f"class {label}" if verdict.converged else
                f"class {label}: optimisation did not converge",
                f"softmax probability of {label} on the stored image: {verdict.achieved:.4g} "
                f"(goal {cfg.class_probability:g})")))
    save_picture(grid_png, image_grid(images))
    plot_curves(curves_png, {"class logits": rendered.curves})
    return _class_summary(cfg, ids, labels, verdicts, figures, grid_png, curves_png,
                          summary_json, folder)


def _class_summary(cfg, ids, labels, verdicts, figures, grid_png, curves_png, summary_json,
                   folder) -> dict:
    """The class stage's summary: successes first, then the images that did not converge."""
    failed = [label for label, v in zip(labels, verdicts) if not v.converged]
    head = [figure_entry(grid_png, folder, "all classes", ", ".join(labels) + (
                f"; did not converge: {', '.join(failed)}" if failed else "")),
            figure_entry(curves_png, folder, "objective per step",
                         "the class logit of each image at each step")]
    ordered = [f for ok, f in figures if ok] + [f for ok, f in figures if not ok]
    return write_summary(
        summary_json, "synthesis_classes", "Class-model images",
        "Images made by gradient ascent on each class's logit (Simonyan et al. 2013): what "
        "the network takes as the most typical input of the class. Structure repeated across "
        "the image and unnatural colours are normal; shapes and textures typical of the class "
        f"are what to look for. Each image is judged on the stored 8-bit image: {RULES['class']}"
        f" ({cfg.class_probability:g}).",
        numbers=[("classes", len(ids)), ("steps", cfg.steps),
                 ("class images", count_line(verdicts))],
        figures=head + ordered,
        quality=[summary_entry("class", [v for v in verdicts if v.converged]
                               + [v for v in verdicts if not v.converged],
                               "softmax probability of the class on the stored image",
                               f"the goal synthesis.visualisation.class_probability")])


@torch.no_grad()
def _n_outputs(model: nn.Module, preprocess: PreprocessConfig, device) -> int:
    """Number of the model's outputs (classes)."""
    height, width = input_hw(preprocess)
    x = torch.zeros(1, int(preprocess.channels), height, width, device=device)
    return int(model(x).shape[1])
