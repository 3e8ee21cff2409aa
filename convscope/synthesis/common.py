"""Pieces the synthesis stages share: the model to optimise against, the render settings
from the config, images to uint8 and PNG, the HDF5 file and the stage summary."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import h5py
import numpy as np
import torch
from PIL import Image
from torch import nn

from convscope.config.sections import ModelConfig, PreprocessConfig, VisualisationConfig
from convscope.nn.device import resolve_device
from convscope.nn.models import load_model
from convscope.render.grids import upscale_nearest
from convscope.store.atomic import atomic_path, save_image, write_json
from convscope.synthesis.render import RenderSettings
from convscope.synthesis.transforms import TransformSettings

__all__ = ["PNG_MIN_SIDE", "synthesis_model", "render_settings", "to_uint8", "upscaled",
           "save_png", "write_h5", "write_summary", "sample_images"]

#: Images smaller than this are enlarged (nearest neighbour) in the PNGs, in pixels.
PNG_MIN_SIDE = 128


def synthesis_model(model_cfg: ModelConfig, weights: str | os.PathLike | None,
                    preprocess: PreprocessConfig, device_name: str,
                    key: str = "synthesis.device") -> tuple[nn.Module, torch.device]:
    """The configured model (eval mode, no parameter gradients) on the configured device."""
    device = resolve_device(device_name, key)
    model = load_model(model_cfg, weights or None, in_channels=int(preprocess.channels),
                       device=device)
    return model.requires_grad_(False), device


def render_settings(cfg: VisualisationConfig) -> RenderSettings:
    """The `RenderSettings` of the ``synthesis.visualisation`` section."""
    transforms = TransformSettings(cfg.jitter_px, tuple(cfg.scales), cfg.rotation_degrees) \
        if cfg.transforms else None
    return RenderSettings(steps=cfg.steps, learning_rate=cfg.learning_rate,
                          parametrisation=cfg.parametrisation, decorrelate=cfg.decorrelate,
                          transforms=transforms, blur_every=cfg.blur_every,
                          blur_sigma=cfg.blur_sigma,
                          clip_norm_percentile=cfg.clip_norm_percentile,
                          clip_contribution_percentile=cfg.clip_contribution_percentile)


def to_uint8(images01: np.ndarray) -> np.ndarray:
    """(..., H, W, C) values in 0..1 -> uint8 (the inverse of the 1/255 step of
    `convscope.data.preprocess.normalize`; the mean/std step is undone by the render loop)."""
    return np.clip(np.rint(np.asarray(images01) * 255.0), 0, 255).astype(np.uint8)


def upscaled(image: np.ndarray, min_side: int = PNG_MIN_SIDE) -> np.ndarray:
    """(H, W, C) uint8 -> RGB (H k, W k, 3), k the smallest making the short side >= min_side."""
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return upscale_nearest(image, max(1, -(-min_side // min(image.shape[:2]))))


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Save an (H, W, 3) or (H, W, 1) uint8 image as PNG, atomically."""
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    save_image(path, Image.fromarray(np.ascontiguousarray(image)))


def write_h5(path: str | os.PathLike, datasets: Mapping[str, np.ndarray],
             attrs: Mapping | None = None) -> None:
    """Write ``datasets`` (name -> array; str arrays as UTF-8) and ``attrs`` atomically."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name, values in datasets.items():
            values = np.asarray(values)
            if values.dtype.kind in "UO":
                values = values.astype(object).astype(str)
                f.create_dataset(name, data=values.astype(h5py.string_dtype()))
            else:
                f.create_dataset(name, data=values)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value


def write_summary(path: str | os.PathLike, stage: str, title: str, caption: str, *,
                  numbers: Sequence[tuple[str, object]] = (), figures: Sequence[dict] = (),
                  units: Mapping | None = None) -> dict:
    """Write the stage's ``summary.json`` (contract: docs/design.md, "Stage summaries")."""
    summary = {"stage": stage, "title": title, "caption": caption,
               "numbers": [{"label": label, "value": str(value)} for label, value in numbers],
               "figures": list(figures), "tables": []}
    if units:
        summary["units"] = units
    write_json(path, summary)
    return summary


def sample_images(manifest_csv: str | os.PathLike, n: int, seed: int,
                  preprocess: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """A seeded sample of ``n`` readable manifest rows, prepared as the model sees them.

    Returns ``(rows, images)``: (m,) int64 manifest ``index`` values in manifest order and
    (m, H, W, C) uint8 model-input pixels (before mean/std), m <= n; unreadable images are
    left out with a message in the log.
    """
    import logging

    from convscope.data.images import ImageReadError, load_image
    from convscope.data.manifest import read_manifest
    from convscope.data.preprocess import prepare_uint8

    manifest = read_manifest(manifest_csv)[0]
    order = np.random.default_rng(seed).permutation(len(manifest))
    rows, images = [], []
    for position in order:
        if len(rows) == n:
            break
        row = manifest.iloc[int(position)]
        try:
            images.append(prepare_uint8(load_image(row["path"], int(row["slot"])), preprocess))
        except ImageReadError as exc:
            logging.getLogger(__name__).warning("skipped unreadable image %s: %s", row["path"], exc)
            continue
        rows.append(int(row["index"]))
    if not rows:
        raise ValueError(f"no readable image among the rows of {manifest_csv}")
    keep = np.argsort(rows)
    return np.asarray(rows, np.int64)[keep], np.stack(images)[keep]
