"""Fooling images: from random noise to a class the model is sure of (Nguyen et al. 2015).

One image per chosen class, all optimised together in one batch: seeded
uniform noise on the 0..1 pixel scale (`convscope.synthesis.images.PixelModel`),
Adam (``learning_rate``) on the pixels to maximise the log softmax of the image's class,
pixels clamped to 0..1 after each step. An image counts as reached at the
first step where its class's softmax probability, on the image rounded to 8 bits as it
is stored, is at least ``confidence``; that 8-bit image is kept (later steps do not
change it) and the step count recorded. The quality gate
(`convscope.synthesis.quality`, rule ``fooling``) judges the stored images again. Images not reached after ``steps`` are kept as they ended and
reported as not reached. The loop is written here (a dozen lines of torch).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from convscope.analysis.common import class_name
from convscope.config.sections import FoolingConfig, ModelConfig, PreprocessConfig
from convscope.render.grids import upscale_nearest
from convscope.store.atomic import write_text
from convscope.store.h5 import write_h5
from convscope.store.summary import figure_entry, write_summary
from convscope.synthesis.images import PixelModel, class_ids, open_stage, rgb_uint8
from convscope.synthesis.outputs import display_factor, save_grid
from convscope.synthesis.quality import (RULES, count_line, h5_arrays, judge, ordered, stored01,
                                         summary_entry)

__all__ = ["TABLE_COLUMNS", "fooling_images", "run_fooling"]

#: Columns of ``table.csv``: one row per class.
TABLE_COLUMNS = ["class_id", "class", "reached", "confidence", "steps", "top_class"]


def fooling_images(model: PixelModel, classes: torch.Tensor, shape: tuple[int, int, int],
                   fooling: FoolingConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of ``shape`` (C, H, W) for each of the (K,) ``classes`` (module docstring).

    Returns (K, C, H, W) pixels in 0..1 and (K,) int64 steps taken (-1: not reached).
    """
    device = model.scale.device
    noise = torch.rand((len(classes), *shape), generator=torch.Generator().manual_seed(seed))
    pixels = noise.to(device).requires_grad_(True)
    classes = classes.to(device)
    kept = pixels.detach().clone()
    steps = torch.full((len(classes),), -1, dtype=torch.long)
    optimiser = torch.optim.Adam([pixels], lr=fooling.learning_rate)
    picked = torch.arange(len(classes), device=device)
    for step in tqdm(range(fooling.steps + 1), desc="fooling images", mininterval=5):
        log_probs = torch.log_softmax(model(pixels), dim=1)[picked, classes]
        with torch.no_grad():  # judged as it will be stored: 8-bit
            as_stored = torch.round(pixels.detach() * 255) / 255
            stored_probs = torch.softmax(model(as_stored), dim=1)[picked, classes]
        newly = (stored_probs >= fooling.confidence).cpu() & (steps < 0)
        kept[newly.to(device)] = as_stored[newly.to(device)]
        steps[newly] = step
        if bool((steps >= 0).all()) or step == fooling.steps:
            break
        optimiser.zero_grad()
        (-log_probs.sum()).backward()
        optimiser.step()
        with torch.no_grad():
            pixels.clamp_(0, 1)
    open_ = (steps < 0).to(device)
    kept[open_] = pixels.detach()[open_]
    return kept, steps


def _wanted_classes(fooling: FoolingConfig, names: list[str], n_classes: int) -> list[int]:
    if fooling.classes == "all":
        return list(range(n_classes))
    return class_ids(fooling.classes, names, n_classes, "synthesis.fooling.classes")


def run_fooling(model_cfg: ModelConfig, weights_file: str | os.PathLike | None,
                preprocess: PreprocessConfig, fooling: FoolingConfig,
                manifest_csv: str | os.PathLike, *, device: str, seed: int, grid_png: str | os.PathLike,
                table_csv: str | os.PathLike, h5_path: str | os.PathLike,
                summary_json: str | os.PathLike) -> pd.DataFrame:
    """The fooling stage: an image from noise per class; grid (red frame: not reached),
    ``table.csv`` (`TABLE_COLUMNS`), HDF5 and ``summary.json``; ``device`` and ``seed`` are
    ``synthesis.device`` and ``synthesis.seed``. Returns the table."""
    from convscope.data.preprocess import input_hw

    model, _, names = open_stage(model_cfg, weights_file, preprocess, device, manifest_csv)
    with torch.no_grad():
        n_classes = model(torch.zeros(1, preprocess.channels, *input_hw(preprocess),
                                      device=model.scale.device)).shape[1]
    wanted = _wanted_classes(fooling, names, n_classes)
    shape = (int(preprocess.channels), *input_hw(preprocess))
    pixels, steps = fooling_images(model, torch.tensor(wanted), shape, fooling, seed)
    images = rgb_uint8(pixels)
    with torch.no_grad():
        stored = stored01(images, int(preprocess.channels)).to(pixels.device)
        probs = torch.softmax(model(stored), dim=1).double().cpu()
    verdicts = judge([f"class {class_name(names, c)}" for c in wanted],
                     probs[torch.arange(len(wanted)), wanted].numpy(), fooling.confidence,
                     inclusive=True)
    reached = np.array([v.converged for v in verdicts])
    table = pd.DataFrame({"class_id": wanted, "class": [class_name(names, c) for c in wanted],
                          "reached": reached,
                          "confidence": probs[torch.arange(len(wanted)), wanted].numpy(),
                          "steps": np.where(steps >= 0, steps, fooling.steps),
                          "top_class": [class_name(names, c) for c in probs.argmax(1).tolist()]},
                         columns=TABLE_COLUMNS)
    write_text(table_csv, table.to_csv(index=False))
    factor = display_factor(images.shape[1], 96)
    save_grid(grid_png, [upscale_nearest(im, factor) for im in images], flagged=~reached)
    write_h5(h5_path, {"class_id": np.array(wanted), "images": images,
                       "confidence": table["confidence"].to_numpy(), "steps": steps.numpy(),
                       **h5_arrays(verdicts)},
             {"confidence_goal": fooling.confidence, "seed": seed, "rule": RULES["fooling"]})
    print(table.to_string(index=False))
    folder = Path(summary_json).parent
    write_summary(
        summary_json, "synthesis_fooling", "Fooling images",
        f"Images made from random noise by gradient ascent until the model gives their class a "
        f"softmax probability of at least {fooling.confidence} (Nguyen et al.): in class order, "
        "row by row; a red frame marks a class not reached within "
        f"{fooling.steps} steps (optimisation did not converge), judged on the stored 8-bit "
        "image.",
        numbers={"classes reached": f"{int(table['reached'].sum())} of {len(table)}",
                 "fooling images": count_line(verdicts)},
        quality=[summary_entry("fooling", ordered(verdicts), "softmax probability of the "
                               "class on the stored image", "the goal synthesis.fooling."
                               "confidence")],
        figures=[figure_entry(grid_png, folder, "one image per class")],
        tables=[figure_entry(table_csv, folder, "per class", "reached, final confidence, steps")])
    return table
