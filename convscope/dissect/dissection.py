"""The two passes of Network Dissection over a sample of images (no files written here).

Pass 1 streams the analysed layers' maps into `UnitThresholds` (and keeps each image's
per-unit maximum, for the image-level AUC and the top images); pass 2 reads the images
again with their masks and fills a `ConceptTally` per layer. Memory is bounded by the
batch and the kept top values, never by the number of images.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from convscope.data.images import ImageReadError, load_image
from convscope.data.preprocess import prepare_uint8, to_model_input
from convscope.dissect.concepts import Concepts, image_stem
from convscope.dissect.iou import ConceptTally, UnitThresholds, top_count
from convscope.nn.hooks import capture_tensors

__all__ = ["LayerDissection", "prepared_masks", "iter_batches", "dissect_layers"]

logger = logging.getLogger(__name__)


@dataclass
class LayerDissection:
    """One layer's result: thresholds (C,), IoU (C, concepts), per-image max (N, C)."""

    thresholds: np.ndarray
    iou: np.ndarray
    image_max: np.ndarray


def prepared_masks(masks: dict[int, np.ndarray], preprocess) -> dict[int, np.ndarray]:
    """Masks at the original image size -> bool masks at the model input (the image's own
    resize and crop, `convscope.data.preprocess.prepare_uint8`, kept where >= 128)."""
    out = {}
    for cid, mask in masks.items():
        pixels = np.repeat((mask.astype(np.uint8) * 255)[..., None], 3, axis=2)
        out[cid] = prepare_uint8(pixels, preprocess)[..., 0] >= 128
    return out


def iter_batches(rows: pd.DataFrame, batch_size: int):
    """(positions, images) per batch of readable images; unreadable ones skipped, logged."""
    positions, images = [], []
    for position, row in enumerate(rows.itertuples(index=False)):
        try:
            images.append(load_image(str(row.path), int(row.slot)))
        except ImageReadError as err:
            logger.warning("manifest row %d (%s) skipped: %s", int(row.index), row.path, err)
            continue
        positions.append(position)
        if len(images) == batch_size:
            yield positions, images
            positions, images = [], []
    if images:
        yield positions, images


@torch.no_grad()
def _forward(model, images, preprocess, layers, device) -> dict[str, torch.Tensor]:
    with capture_tensors(model, list(layers), key="dissect.layers") as captured:
        model(to_model_input(images, preprocess).to(device))
        return {name: captured[name].float().cpu() for name in layers}


def _threshold_pass(model, rows, preprocess, layers, quantile, batch_size, device):
    keepers, maxima, readable = {}, {name: [] for name in layers}, []
    for positions, images in iter_batches(rows, batch_size):
        maps = _forward(model, images, preprocess, layers, device)
        for name in layers:
            if name not in keepers:
                _, _, height, width = maps[name].shape
                keepers[name] = UnitThresholds(top_count(quantile, len(rows), height, width))
            keepers[name].add(maps[name])
            maxima[name].append(maps[name].flatten(2).amax(dim=2).numpy())
        readable += positions
    if not readable:
        raise ValueError("dissect: none of the sampled images could be read")
    thresholds = {}
    for name in layers:
        _, _, height, width = maps[name].shape
        thresholds[name] = keepers[name].thresholds(top_count(quantile, len(readable), height,
                                                              width))
    return thresholds, {name: np.concatenate(m) for name, m in maxima.items()}, readable


def dissect_layers(model, rows: pd.DataFrame, concepts: Concepts, preprocess,
                   layers: Sequence[str], quantile: float, batch_size: int,
                   device: torch.device) -> tuple[dict[str, LayerDissection], list[int]]:
    """Both passes; returns layer -> `LayerDissection` and the positions in ``rows`` of the
    images read (those the results are over)."""
    thresholds, maxima, readable = _threshold_pass(model, rows, preprocess, layers, quantile,
                                                   batch_size, device)
    tallies = {name: ConceptTally(thresholds[name], concepts.categories) for name in layers}
    for positions, images in iter_batches(rows.iloc[readable].reset_index(drop=True),
                                          batch_size):
        maps = _forward(model, images, preprocess, layers, device)
        for j, (position, image) in enumerate(zip(positions, images)):
            stem = image_stem(rows.iloc[readable[position]]["path"])
            masks, annotated = concepts.masks(stem, image.shape[:2])
            masks = prepared_masks(masks, preprocess)
            size = prepare_uint8(image, preprocess).shape[:2]
            for name in layers:
                tallies[name].add(maps[name][j], masks, annotated, size)
    result = {name: LayerDissection(thresholds[name], tallies[name].iou(), maxima[name])
              for name in layers}
    return result, readable
