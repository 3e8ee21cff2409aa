"""Image I/O shared by the synthesis stages: manifest rows in, uint8 pictures out.

Every synthesis stage optimises the model's input pixels on the 0..1 scale, i.e.
after the run's resize, crop and channel conversion but *before* the
preprocess mean/std. A `PixelModel` wraps the model with that normalisation,
so clamping to ``[0, 1]`` keeps every image a valid 0..255 picture and a
perturbation's size reads in pixel units (0.03 is about 8/255).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from convscope.config.sections import ModelConfig, PreprocessConfig
from convscope.data.images import read_prepared
from convscope.data.preprocess import normalize, prepare_uint8
from convscope.data.sample import readable_sample
from convscope.nn.models import load_stage_model
from convscope.render.grids import to_uint8

__all__ = ["PixelModel", "read_pixels", "sample_rows", "sample_images", "check_rows",
           "rgb_uint8", "middle_layer", "class_ids", "open_stage"]


class PixelModel(nn.Module):
    """``model(normalise(x))`` for (N, C, H, W) pixels ``x`` in 0..1.

    The mean and std are those of `convscope.data.preprocess.normalize` (read
    from it: normalising the uint8 values 0 and 255), so one image gives the
    same logits through either path. ``inner`` is the wrapped model (hook its
    layers by their own names).
    """

    def __init__(self, model: nn.Module, preprocess: PreprocessConfig):
        super().__init__()
        self.inner = model
        channels = int(preprocess.channels)
        ends = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 1, 1, channels)
        low, high = normalize(ends.contiguous(), preprocess)  # (C, 1, 1) each
        self.register_buffer("scale", (high - low)[None])  # 1 / std
        self.register_buffer("offset", low[None])  # -mean / std

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) pixels in 0..1 -> the model's output."""
        return self.inner(pixels * self.scale + self.offset)


def read_pixels(manifest: pd.DataFrame, rows: Sequence[int],
                preprocess: PreprocessConfig) -> torch.Tensor:
    """(len(rows), C, H, W) float32 pixels in 0..1 of the given manifest rows (``index``
    column), prepared as extraction does (`prepare_uint8`: resize, crop, channels)."""
    by_index = manifest.set_index("index").loc[[int(r) for r in rows]]
    images = read_prepared(by_index["path"], by_index["slot"], preprocess)
    batch = torch.from_numpy(images).permute(0, 3, 1, 2)
    return (batch.to(torch.float32) / 255.0).contiguous()


def check_rows(manifest: pd.DataFrame, rows: Sequence[int], key: str) -> None:
    """Raise ``ValueError`` naming ``key`` when a row is not in the manifest's ``index``."""
    known = set(manifest["index"].astype(int))
    missing = [int(r) for r in rows if int(r) not in known]
    if missing:
        raise ValueError(f"config key {key!r}: manifest rows {missing} do not exist; valid rows "
                         f"are {min(known)}..{max(known)} (the 'index' column of the manifest)")


def sample_rows(manifest: pd.DataFrame, n: int, seed: int) -> np.ndarray:
    """A seeded sample of ``n`` readable manifest rows (all readable ones when fewer),
    sorted, from the test split when the manifest has one (`readable_sample`)."""
    pool = manifest[manifest["split"] == "test"]
    if pool.empty:
        pool = manifest
    chosen, _ = readable_sample(pool.sort_values("index", kind="stable"), n, seed)
    return np.sort(chosen["index"].to_numpy(np.int64))


def sample_images(manifest_csv: str | os.PathLike, n: int, seed: int,
                  preprocess: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """A seeded sample of ``n`` readable manifest rows, prepared as the model sees them
    (`readable_sample` over every row).

    Returns ``(rows, images)``: (m,) int64 manifest ``index`` values in manifest order and
    (m, H, W, C) uint8 model-input pixels (before mean/std), m <= n.
    """
    from convscope.data.manifest import read_manifest

    chosen, originals = readable_sample(read_manifest(manifest_csv)[0], n, seed)
    if not originals:
        raise ValueError(f"no readable image among the rows of {manifest_csv}")
    keep = np.argsort(chosen["index"].to_numpy(np.int64))
    return (chosen["index"].to_numpy(np.int64)[keep],
            np.stack([prepare_uint8(originals[i], preprocess) for i in keep]))


def rgb_uint8(pixels: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) pixels in 0..1 -> (N, H, W, 3) uint8 RGB (`to_uint8`; grey repeated)."""
    images = to_uint8(pixels.detach().float().permute(0, 2, 3, 1).cpu().numpy())
    return np.repeat(images, 3, axis=3) if images.shape[3] == 1 else images


def middle_layer(layers: Sequence[str]) -> str:
    """The middle one of the analysed layers (the later of two middles)."""
    return list(layers)[len(layers) // 2]


def class_ids(wanted: Sequence[str | int], names: Sequence[str], n_classes: int,
              key: str) -> list[int]:
    """Class ids of names or ids; an unknown one raises ``ValueError`` naming ``key``."""
    ids = []
    for item in wanted:
        if isinstance(item, str) and item in names:
            ids.append(list(names).index(item))
        elif isinstance(item, int) or str(item).isdigit():
            if not 0 <= int(item) < n_classes:
                raise ValueError(f"config key {key!r}: class id {item} is not in "
                                 f"0..{n_classes - 1}")
            ids.append(int(item))
        else:
            raise ValueError(f"config key {key!r}: {item!r} is not a class name; valid: "
                             f"{', '.join(map(str, names)) or 'none (no class names)'}")
    return ids


def open_stage(model_cfg: ModelConfig, weights_file: str | os.PathLike | None,
               preprocess: PreprocessConfig, device_name: str,
               manifest_csv: str | os.PathLike) -> tuple[PixelModel, pd.DataFrame, list[str]]:
    """What every synthesis stage starts from: the `PixelModel` on the ``synthesis.device``,
    the manifest and the class names."""
    from convscope.data.manifest import read_manifest

    model, device = load_stage_model(model_cfg, weights_file, preprocess, device_name,
                                     key="synthesis.device")
    manifest, names = read_manifest(manifest_csv)
    model = PixelModel(model, preprocess).to(device).eval()
    print(f"model on {device}; {len(manifest)} manifest rows, {len(names)} classes")
    return model, manifest, [str(n) for n in names]
