"""Correspondence: does occluding the same part change the features the same way? (ZF Sec. 5)

For ``n`` images of one class with a part located per image (manifest columns,
`convscope.explain.columns.part_boxes`), each ORIGINAL image is occluded by a
grey box over the part (scaled by ``occluder_scale`` about its centre; grey =
the preprocessing mean, which normalises to 0) and, as the baseline, by boxes
of the same size at uniformly random positions (``n_random`` repeats, seeded).
At each layer, with ``x_i`` the features of image i and ``x~_i`` those of its
occluded copy, ``e_i = x_i - x~_i`` and Zeiler & Fergus's

    Delta_l = sum_{i != j} H(sign(e_i), sign(e_j))

with H the Hamming distance (signs in {-1, 0, +1}; ordered pairs). Lower means
the occlusion changes the features more consistently across images. The table
gives ``delta`` = Delta_l / (n (n - 1) D), the mean fraction of the D feature
entries whose signs differ between two images (the scale of ZF's Table 1),
and ``delta_sum`` = Delta_l itself; for random occluders the mean and the
standard deviation over the repeats.

The pair sum is computed from per-entry counts (an ordered pair differs at an
entry unless both signs agree: ``n^2 - sum_v c_v^2`` pairs, c_v = images with
sign v), exact and linear in n; the tests check it against a loop over pairs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from convscope.analysis.common import class_name, save_figure
from convscope.config.counts import clip_count
from convscope.config.sections import CorrespondenceConfig, ModelConfig, PreprocessConfig
from convscope.data.preprocess import to_model_input
from convscope.explain.columns import part_boxes
from convscope.explain.forward import chosen_layers, layer_outputs
from convscope.explain.sample import class_rows, read_sample
from convscope.explain.transforms import occlude
from convscope.nn.models import load_stage_model
from convscope.store.atomic import write_text
from convscope.store.summary import figure_entry, write_summary

__all__ = ["DELTA_COLUMNS", "sign_delta", "scale_boxes", "random_boxes", "grey_fill",
           "correspondence_table", "plot_examples", "run_explain_correspondence"]

logger = logging.getLogger(__name__)

DELTA_COLUMNS = ["layer", "occluder", "delta", "delta_std", "delta_sum", "n_repeats", "n_images",
                 "n_features"]


def sign_delta(differences: torch.Tensor) -> tuple[float, float]:
    """ZF's Delta of feature differences: (mean normalised Hamming, sum over ordered pairs).

    Args:
        differences: (n, D) ``e_i = x_i - x~_i`` per image (n >= 2).
    Returns:
        (Delta / (n (n - 1) D), Delta) with Delta = sum_{i != j} H(sign e_i, sign e_j).
    """
    signs = torch.sign(differences.reshape(len(differences), -1))
    n, dims = signs.shape
    if n < 2:
        raise ValueError("the sign consistency needs at least 2 images")
    agreeing = sum(((signs == value).sum(dim=0).double() ** 2).sum() for value in (-1, 0, 1))
    total = float(n * n * dims - agreeing)
    return total / (n * (n - 1) * dims), total


def scale_boxes(boxes: np.ndarray, factor: float) -> np.ndarray:
    """(n, 4) boxes (x0, y0, x1, y1) scaled by ``factor`` about their centres."""
    boxes = np.asarray(boxes, dtype=np.float64)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * factor / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def random_boxes(boxes: np.ndarray, orig_wh: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boxes of the same sizes as ``boxes`` at uniformly random positions inside each image."""
    boxes = np.asarray(boxes, dtype=np.float64)
    size = boxes[:, 2:] - boxes[:, :2]
    room = np.maximum(np.asarray(orig_wh, dtype=np.float64) - size, 0.0)
    start = rng.uniform(0.0, 1.0, size=room.shape) * room
    return np.concatenate([start, start + size], axis=1)


def grey_fill(preprocess: PreprocessConfig) -> np.ndarray:
    """RGB 0..255 of the preprocessing mean (the grey that normalises to 0)."""
    mean = np.atleast_1d(np.asarray(preprocess.mean, dtype=np.float64))
    return np.resize(mean, 3) * 255.0


def correspondence_table(model, images: Sequence[np.ndarray], part_boxes_xyxy: np.ndarray,
                         random_sets: Sequence[np.ndarray], fill_rgb: np.ndarray,
                         layers: Sequence[str], preprocess: PreprocessConfig, batch_size: int,
                         device: torch.device) -> pd.DataFrame:
    """The `DELTA_COLUMNS` table: per layer, the part occluder and the random occluders.

    Args:
        images: n (H, W, 3) uint8 original images.
        part_boxes_xyxy: (n, 4) occluder boxes over the part, original pixels.
        random_sets: repeats of (n, 4) random occluder boxes.
    """
    n = len(images)
    copies = list(images)
    for boxes in [part_boxes_xyxy, *random_sets]:
        copies += [occlude(image, box, fill_rgb) for image, box in zip(images, boxes)]
    outputs, _ = layer_outputs(model, to_model_input(copies, preprocess), layers, batch_size,
                               device, key="explain.correspondence.layers",
                               progress="correspondence")
    records = []
    for name in layers:
        feats = outputs[name].reshape(len(copies), -1)
        original = feats[:n]
        scores = [sign_delta(original - feats[n * (k + 1):n * (k + 2)])
                  for k in range(1 + len(random_sets))]
        part, rand = scores[0], np.array(scores[1:]).reshape(-1, 2)
        records.append((name, "part", part[0], 0.0, part[1], 1, n, feats.shape[1]))
        if len(rand):
            records.append((name, "random", float(rand[:, 0].mean()),
                            float(rand[:, 0].std()),
                            float(rand[:, 1].mean()), len(rand), n, feats.shape[1]))
    return pd.DataFrame.from_records(records, columns=DELTA_COLUMNS)


def plot_examples(images: Sequence[np.ndarray], part: np.ndarray, rand: np.ndarray,
                  fill_rgb: np.ndarray, indices: Sequence[int], path: str | os.PathLike,
                  max_rows: int = 6) -> None:
    """Rows of (original, part occluded, one random occluder) for the first images."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = min(len(images), max_rows)
    fig = Figure(figsize=(6, 2 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 3, squeeze=False)
    for r in range(rows):
        shown = (images[r], occlude(images[r], part[r], fill_rgb),
                 occlude(images[r], rand[r], fill_rgb))
        for ax, picture, title in zip(axes[r], shown, ("original", "part occluded", "random")):
            ax.imshow(picture, interpolation="nearest")
            label = f"{title} (row {indices[r]})" if title == "original" else title
            ax.set_title(label, fontsize=8)
            ax.axis("off")
    save_figure(fig, path)


def _write_summary(table: pd.DataFrame, class_label: str, delta_csv: str, examples_png: str,
                   summary_json: str) -> dict:
    base = Path(summary_json).parent
    numbers = [("class", class_label), ("images", int(table["n_images"].iloc[0]))]
    for layer, rows in table.groupby("layer", sort=False):
        part = rows.loc[rows["occluder"] == "part", "delta"].item()
        rand = rows.loc[rows["occluder"] == "random", "delta"].item()
        numbers.append((f"Δ {layer} (part / random)", f"{part:.3f} / {rand:.3f}"))
    return write_summary(
        summary_json, "explain_correspondence", "Correspondence of an occluded part",
        ("The same part of every image of one class is covered by a grey box, and, as a "
         "baseline, boxes of the same size at random positions. Δ is the mean fraction "
         "of feature entries whose change has a different sign in two images (Zeiler & "
         "Fergus 2013, Sec. 5, Table 1): lower than random means the layer changes "
         "consistently when that part is hidden, i.e. it encodes the part."),
        numbers=numbers,
        figures=[figure_entry(examples_png, base, "occluded examples",
                              "original, part occluded and one random occluder per image")],
        tables=[figure_entry(delta_csv, base, "sign consistency Δ",
                             "per layer: part occluder vs random occluders (mean, std)")])


def run_explain_correspondence(model_cfg: ModelConfig, weights_file: str | os.PathLike | None,
                               section: CorrespondenceConfig, preprocess: PreprocessConfig,
                               layers: Sequence[str] | None, manifest_csv: str | os.PathLike, *,
                               device: str, batch_size: int, delta_csv: str, examples_png: str,
                               summary_json: str) -> None:
    """The stage: sample the class, occlude, write ``delta_csv``, ``examples_png`` and
    ``summary_json``.

    ``section`` is ``explain.correspondence``, whose ``part_columns`` must be set (the
    workflow fills the demo's); ``device`` and ``batch_size`` are ``explain.device`` and
    ``explain.batch_size``; ``layers`` the analysed layers.
    """
    key = "explain.correspondence"
    candidates, class_names, class_id = class_rows(manifest_csv, key, "part_columns",
                                                   section.part_columns, section.target_class, 1)
    model, device = load_stage_model(model_cfg, weights_file, preprocess, device,
                                     key="explain.device")
    names = chosen_layers(model, section.layers, layers, f"{key}.layers")
    count = clip_count(f"{key}.n_images", section.n_images, len(candidates),
                       "images of the class with the part columns")
    rows, images = read_sample(candidates, count, section.seed, f"{key}.n_images")
    orig_wh = np.array([(im.shape[1], im.shape[0]) for im in images])
    part = scale_boxes(part_boxes(rows, section.part_columns, section.part_units, orig_wh),
                       section.occluder_scale)
    rng = np.random.default_rng(section.seed)
    random_sets = [random_boxes(part, orig_wh, rng) for _ in range(section.n_random)]
    fill = grey_fill(preprocess)
    table = correspondence_table(model, images, part, random_sets, fill, names, preprocess,
                                 batch_size, device)
    write_text(delta_csv, table.to_csv(index=False))
    plot_examples(images, part, random_sets[0], fill, rows["index"].tolist(), examples_png)
    _write_summary(table, class_name(class_names, class_id), delta_csv, examples_png,
                   summary_json)
    logger.info("correspondence: class %s, %d images, %d layers", class_id, len(rows), len(names))
