"""Filter-weight images and activation-map panels.

Filter images (`filter_images`)
    One tile per output channel of a ``nn.Conv2d`` weight ``(O, I, kh, kw)``.
    With ``I == 3`` (a first convolution on RGB) each filter is shown in
    colour. Deeper convolutions are shown in grey: by default one tile per
    output channel holding the kernel averaged over its input channels
    (``inputs_per_filter=0``), or, with ``inputs_per_filter=k``, the ``k``
    input-channel kernels of largest L2 norm side by side. Each filter is
    normalised on its own: ``scale="minmax"`` maps its min..max to 0..1 (the
    usual first-layer picture, as in torchvision's ``make_grid(normalize=True,
    scale_each=True)``); ``scale="symmetric"`` maps ``-m..m`` with
    ``m = max |w|`` so that 0 is mid-grey and signs stay comparable. Tiny
    kernels are enlarged with nearest neighbour to about ``tile_px`` pixels,
    and at most ``max_filters`` output channels are drawn, so the image stays
    bounded in size.

Activation panels (`activation_maps`, `render_activation_panel`)
    For a few images, every channel's feature map at chosen layers (the
    familiar conv1 / conv5 figures), as a grid of grey tiles beside the model
    input. All maps of one layer share one scale (min..max over the panel
    images), so tiles can be compared within a layer.

Dead channels (never firing over the dataset, see `convscope.analysis.unit_stats`)
are drawn with a red border wherever a channel appears.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

__all__ = [
    "DEAD_RGB",
    "filter_images",
    "activation_maps",
    "render_activation_panel",
    "resolve_module",
    "default_filter_layers",
    "run_filters",
]

logger = logging.getLogger(__name__)

#: Border colour of dead channels.
DEAD_RGB = (220, 30, 30)
_BACKGROUND = 40
_GAP = 1


def resolve_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (``"features/0"`` is read as ``"features.0"``)."""
    modules = dict(model.named_modules())
    for candidate in (name, name.replace("/", ".")):
        if candidate in modules and candidate != "":
            return modules[candidate]
    choices = [key for key in modules if key]
    shown = ", ".join(choices[:40]) + (" ..." if len(choices) > 40 else "")
    raise ValueError(f"layer {name!r} is not a module of the model; valid choices: {shown}")


def _normalise(values: np.ndarray, scale: str) -> np.ndarray:
    """Map an array to 0..1 by its own range (see module docstring)."""
    if scale == "minmax":
        lo, hi = float(values.min()), float(values.max())
        if hi - lo <= 0:
            return np.full_like(values, 0.5, dtype=np.float64)
        return (values - lo) / (hi - lo)
    if scale == "symmetric":
        peak = float(np.abs(values).max())
        if peak <= 0:
            return np.full_like(values, 0.5, dtype=np.float64)
        return 0.5 + 0.5 * values / peak
    raise ValueError(f"filters.scale must be 'minmax' or 'symmetric', got {scale!r}")


def _to_rgb_uint8(tile01: np.ndarray) -> np.ndarray:
    """(h, w) or (h, w, 3) values in 0..1 -> (h, w, 3) uint8."""
    tile = np.clip(np.rint(tile01 * 255.0), 0, 255).astype(np.uint8)
    if tile.ndim == 2:
        tile = np.repeat(tile[..., None], 3, axis=2)
    return tile


def _upscale(tile: np.ndarray, factor: int) -> np.ndarray:
    if factor <= 1:
        return tile
    return np.repeat(np.repeat(tile, factor, axis=0), factor, axis=1)


def _grid(groups: Sequence[np.ndarray], dead: np.ndarray, pad: int,
          ncols: int | None = None) -> np.ndarray:
    """Lay equally sized (h, w, 3) uint8 groups on a grid, each framed by ``pad`` px.

    The frame is red for groups flagged in ``dead`` and background otherwise.
    """
    gh, gw = groups[0].shape[:2]
    n = len(groups)
    if ncols is None:
        ncols = max(1, math.ceil(math.sqrt(n * gh / gw)))
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    cell_h, cell_w = gh + 2 * pad, gw + 2 * pad
    canvas = np.full((nrows * cell_h + pad, ncols * cell_w + pad, 3), _BACKGROUND, np.uint8)
    for i, group in enumerate(groups):
        y, x = (i // ncols) * cell_h + pad // 2, (i % ncols) * cell_w + pad // 2
        if dead[i]:
            canvas[y:y + cell_h, x:x + cell_w] = DEAD_RGB
        canvas[y + pad:y + pad + gh, x + pad:x + pad + gw] = group
    return canvas


def _dead_vector(dead_mask, n: int) -> np.ndarray:
    if dead_mask is None:
        return np.zeros(n, dtype=bool)
    dead_mask = np.asarray(dead_mask, dtype=bool)
    if dead_mask.shape[0] < n:
        raise ValueError(f"dead_mask has {dead_mask.shape[0]} entries for {n} channels")
    return dead_mask[:n]


def filter_images(
    weight: torch.Tensor | np.ndarray,
    *,
    scale: str = "minmax",
    inputs_per_filter: int = 0,
    dead_mask: np.ndarray | None = None,
    tile_px: int = 24,
    max_filters: int = 256,
    pad: int = 2,
) -> np.ndarray:
    """Grid image of convolution filters.

    Args:
        weight: (O, I, kh, kw) convolution weight.
        scale: ``"minmax"`` or ``"symmetric"``, per filter (module docstring).
        inputs_per_filter: for ``I != 3``: 0 shows the mean over input
            channels, ``k > 0`` the ``k`` input kernels of largest L2 norm.
        dead_mask: (O,) bool; True channels get a red frame.
        tile_px: kernels are enlarged by an integer factor to about this size.
        max_filters: only the first ``max_filters`` output channels are drawn.
        pad: frame width in pixels.
    Returns:
        (H, W, 3) uint8 image.
    """
    if isinstance(weight, torch.Tensor):
        weight = weight.detach().float().cpu().numpy()
    weight = np.asarray(weight, dtype=np.float64)
    if weight.ndim != 4:
        raise ValueError(f"expected a conv weight of shape (O, I, kh, kw), got {weight.shape}")
    if inputs_per_filter < 0:
        raise ValueError(f"filters.inputs_per_filter must be >= 0, got {inputs_per_filter}")
    n_out, n_in, kh, kw = weight.shape
    dead = _dead_vector(dead_mask, n_out)
    n_show = min(n_out, int(max_filters))
    factor = max(1, int(tile_px) // max(kh, kw))
    groups = []
    for o in range(n_show):
        kernel = weight[o]
        if n_in == 3:
            tiles = [_normalise(kernel.transpose(1, 2, 0), scale)]
        elif inputs_per_filter == 0:
            tiles = [_normalise(kernel.mean(axis=0), scale)]
        else:
            k = min(int(inputs_per_filter), n_in)
            strongest = np.argsort(-np.sqrt((kernel ** 2).sum(axis=(1, 2))), kind="stable")[:k]
            tiles = list(_normalise(kernel[strongest], scale))  # one scale per filter
        tiles = [_upscale(_to_rgb_uint8(t), factor) for t in tiles]
        if len(tiles) > 1:
            gap = np.full((tiles[0].shape[0], _GAP, 3), _BACKGROUND, np.uint8)
            tiles = [part for t in tiles for part in (t, gap)][:-1]
        groups.append(np.concatenate(tiles, axis=1))
    return _grid(groups, dead[:n_show], pad)


def _first_tensor(output):
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    raise TypeError(f"module output of type {type(output).__name__} holds no tensor")


@torch.no_grad()
def activation_maps(model: nn.Module, layer_names: Sequence[str],
                    inputs: torch.Tensor) -> dict[str, np.ndarray]:
    """Feature maps of ``layer_names`` for a batch, via forward hooks.

    Args:
        model: the network (its train/eval mode is left as it is).
        layer_names: module names (``"features.3"``; ``"/"`` is read as ``"."``).
        inputs: (N, C, H, W) model input.
    Returns:
        layer name -> (N, C_l, h, w) float32 array. A 2-D output (N, C) becomes
        (N, C, 1, 1). A module called several times in one forward pass keeps
        its last output. The hooks are removed afterwards, even on error.
    """
    modules = {name: resolve_module(model, name) for name in layer_names}
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def _hook(name):
        def hook(module, args, output):
            captured[name] = _first_tensor(output).detach()
        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(_hook(name)))
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        model(inputs.to(device))
    finally:
        for handle in handles:
            handle.remove()
    maps = {}
    for name in layer_names:
        if name not in captured:
            raise RuntimeError(f"layer {name!r} was not called in the forward pass")
        out = captured[name].float().cpu().numpy()
        if out.ndim == 2:
            out = out[:, :, None, None]
        if out.ndim != 4:
            raise ValueError(f"layer {name!r} output has shape {out.shape}; "
                             "activation maps need (N, C, h, w) or (N, C)")
        maps[name] = out
    return maps


def render_activation_panel(
    image: np.ndarray,
    maps: np.ndarray,
    dead_mask: np.ndarray | None = None,
    *,
    value_range: tuple[float, float] | None = None,
    tile_px: int = 32,
    pad: int = 2,
    max_side: int = 1600,
) -> np.ndarray:
    """One image beside the grid of its channel maps at one layer.

    Args:
        image: (H, W, 3) uint8, the picture shown at the left (e.g. the model input).
        maps: (C, h, w) feature maps of that image at one layer.
        dead_mask: (C,) bool; dead channels get a red frame.
        value_range: (lo, hi) mapped to black..white for every channel (pass
            the layer's range over all panel images); default: range of ``maps``.
        tile_px: maps are enlarged by an integer factor to about this size.
        max_side: the result is shrunk (box filter) if a side exceeds this.
    Returns:
        (H', W', 3) uint8 image.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (C, h, w), got {maps.shape}")
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    n_ch, h, w = maps.shape
    lo, hi = value_range if value_range is not None else (maps.min(), maps.max())
    span = float(hi) - float(lo)
    scaled = (maps - lo) / span if span > 0 else np.zeros_like(maps)
    factor = max(1, int(tile_px) // max(h, w))
    tiles = [_upscale(_to_rgb_uint8(np.clip(m, 0, 1)), factor) for m in scaled]
    grid = _grid(tiles, _dead_vector(dead_mask, n_ch), pad,
                 ncols=max(1, math.ceil(math.sqrt(n_ch))))
    side = grid.shape[0]
    scale = side / max(image.shape[:2])
    shown = Image.fromarray(image.astype(np.uint8)).resize(
        (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
        Image.BILINEAR)
    shown = np.asarray(shown)
    canvas = np.full((side, shown.shape[1] + 2 * pad + grid.shape[1], 3), _BACKGROUND, np.uint8)
    canvas[:shown.shape[0], :shown.shape[1]] = shown
    canvas[:, shown.shape[1] + 2 * pad:] = grid
    if max(canvas.shape[:2]) > max_side:
        shrink = max_side / max(canvas.shape[:2])
        canvas = np.asarray(Image.fromarray(canvas).resize(
            (max(1, round(canvas.shape[1] * shrink)), max(1, round(canvas.shape[0] * shrink))),
            Image.BOX))
    return canvas


def default_filter_layers(model: nn.Module, analysed_layers: Sequence[str],
                          layer_channels: dict[str, int] | None = None) -> dict[str, str | None]:
    """Convolutions to draw by default, each with the analysed layer it feeds.

    Returns conv name -> analysed layer name (or None). The first ``nn.Conv2d``
    is always included. For every analysed layer: if it is a conv, itself;
    otherwise the last conv registered before it or inside it whose
    ``out_channels`` equals the layer's channel count (when known) -- the conv
    feeding it in a plain sequential net (e.g. ``conv2`` for ``relu2``). The
    analysed layer's dead mask is then drawn on that conv's filters.
    """
    layer_channels = layer_channels or {}
    named = [(name, m) for name, m in model.named_modules() if name]
    convs = [name for name, m in named if isinstance(m, nn.Conv2d)]
    chosen: dict[str, str | None] = {}
    if convs:
        chosen[convs[0]] = None
    for layer in analysed_layers:
        target = layer.replace("/", ".")
        channels = layer_channels.get(layer)
        last = None
        reached = False
        for name, module in named:
            inside = name == target or name.startswith(target + ".")
            if reached and not inside:
                break
            reached = reached or inside
            if isinstance(module, nn.Conv2d) and (channels is None
                                                  or module.out_channels == channels):
                last = name
        if not reached:
            logger.warning("analysed layer %r is not a module of the model; skipped", layer)
            continue
        if last is not None:
            chosen[last] = layer
    return chosen


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "layer"


def _match_mask(masks: dict[str, np.ndarray], layer: str | None, channels: int):
    if layer is None or layer not in masks:
        return None
    mask = masks[layer]
    if mask.shape[0] != channels:
        logger.warning("dead mask of %s has %d channels, expected %d; not drawn",
                       layer, mask.shape[0], channels)
        return None
    return mask


def _choose_panel_rows(manifest: pd.DataFrame, panel_images, seed: int) -> pd.DataFrame:
    if isinstance(panel_images, (int, np.integer)) and not isinstance(panel_images, bool):
        count = min(int(panel_images), len(manifest))
        if count <= 0:
            return manifest.iloc[:0]
        rng = np.random.default_rng(seed)
        picked = np.sort(rng.choice(len(manifest), size=count, replace=False))
        return manifest.iloc[picked]
    wanted = [int(i) for i in panel_images]
    by_index = manifest.set_index("index", drop=False)
    missing = [i for i in wanted if i not in by_index.index]
    if missing:
        raise ValueError(f"filters.panel_images: manifest indices {missing} do not exist "
                         f"(valid: {int(manifest['index'].min())}..{int(manifest['index'].max())})")
    return by_index.loc[wanted].reset_index(drop=True)


def run_filters(
    config: dict,
    out_dir: str | os.PathLike,
    *,
    shard_paths: Sequence[str | os.PathLike] = (),
    manifest_csv: str | os.PathLike | None = None,
    stats_csv: str | os.PathLike | None = None,
    weights_file: str | os.PathLike | None = None,
    model: nn.Module | None = None,
) -> pd.DataFrame:
    """Write filter-weight images and activation panels under ``out_dir``.

    Files: ``weights/<conv>.png``, ``activations/<index>/<layer>.png`` and
    ``index.csv`` (kind, layer, analysed_layer, image_index, file) listing them.
    ``config`` is the whole workflow config: ``config["filters"]`` holds this
    stage's keys (see `run_filters` defaults below), ``config["layers"]`` the
    analysed layers and ``config["preprocess"]`` the preprocessing.
    ``model`` defaults to ``convscope.nn.models.load_model(config,
    weights_file=weights_file)`` on the CPU.

    ``config["filters"]`` keys: ``layers`` (conv names, default
    `default_filter_layers`; a listed conv still gets the dead mask of the
    analysed layer it feeds), ``scale`` ("minmax"), ``inputs_per_filter`` (0),
    ``max_filters`` (256), ``tile_px`` (24), ``panel_images`` (4: a count
    sampled with ``seed``, or a list of manifest indices), ``panel_layers``
    (default the analysed layers), ``seed`` (0).
    Returns the index table.
    """
    cfg = dict(config.get("filters") or {})
    out_dir = Path(out_dir)
    if model is None:
        from convscope.config.sections import ModelConfig
        from convscope.nn.models import load_model

        model = load_model(ModelConfig.from_dict(config["model"]),
                           weights_file or config["model"]["weights"],
                           in_channels=int(config["preprocess"]["channels"]))
    model.eval()
    shard_attrs = {}
    if shard_paths:
        from convscope.store.shards import read_attrs

        shard_attrs = read_attrs(shard_paths[0])
    analysed = list(config.get("layers") or shard_attrs.get("layer_names") or [])
    layer_channels = {name: int(shape[0])
                      for name, shape in (shard_attrs.get("layer_shapes") or {}).items()}
    masks = {}
    if stats_csv is not None and Path(stats_csv).exists():
        from convscope.analysis.unit_stats import read_dead_masks

        masks = read_dead_masks(stats_csv)

    records = []
    conv_layers = default_filter_layers(model, analysed, layer_channels)
    if cfg.get("layers"):
        conv_layers = {name: conv_layers.get(name, name if name in analysed else None)
                       for name in cfg["layers"]}
    (out_dir / "weights").mkdir(parents=True, exist_ok=True)
    for conv_name, feeds in conv_layers.items():
        module = resolve_module(model, conv_name)
        if not isinstance(module, nn.Conv2d):
            raise ValueError(f"filters.layers: {conv_name!r} is a {type(module).__name__}, "
                             "not an nn.Conv2d")
        weight = module.weight
        grid = filter_images(
            weight,
            scale=cfg.get("scale", "minmax"),
            inputs_per_filter=int(cfg.get("inputs_per_filter", 0)),
            dead_mask=_match_mask(masks, feeds, weight.shape[0]),
            tile_px=int(cfg.get("tile_px", 24)),
            max_filters=int(cfg.get("max_filters", 256)),
        )
        path = out_dir / "weights" / f"{_safe_name(conv_name)}.png"
        Image.fromarray(grid).save(path)
        records.append({"kind": "weights", "layer": conv_name, "analysed_layer": feeds,
                        "image_index": -1, "file": str(path.relative_to(out_dir))})

    panel_images = cfg.get("panel_images", 4)
    panel_layers = list(cfg.get("panel_layers") or analysed)
    if manifest_csv is not None and panel_layers and panel_images:
        records += _write_panels(config, cfg, model, manifest_csv, panel_images,
                                 panel_layers, masks, out_dir)
    index = pd.DataFrame(records, columns=["kind", "layer", "analysed_layer", "image_index",
                                           "file"])
    index.to_csv(out_dir / "index.csv", index=False)
    return index


def _write_panels(config, cfg, model, manifest_csv, panel_images, panel_layers, masks,
                  out_dir: Path) -> list[dict]:
    from convscope.data.images import ImageReadError, load_image
    from convscope.data.manifest import read_manifest
    from convscope.data.preprocess import prepare_uint8, to_model_input

    manifest, _ = read_manifest(manifest_csv)
    rows = _choose_panel_rows(manifest, panel_images, int(cfg.get("seed", 0)))
    preprocess_cfg = config["preprocess"]
    images, indices = [], []
    for row in rows.itertuples(index=False):
        try:
            images.append(load_image(row.path, int(row.slot)))
            indices.append(int(row.index))
        except ImageReadError as err:
            logger.warning("panel image %s (%s) skipped: %s", row.index, row.path, err)
    if not images:
        return []
    inputs = to_model_input(images, preprocess_cfg)
    shown = [prepare_uint8(image, preprocess_cfg) for image in images]
    maps = activation_maps(model, panel_layers, inputs)
    records = []
    for layer in tqdm(panel_layers, desc="activation panels", unit="layer"):
        layer_maps = maps[layer]
        value_range = (float(layer_maps.min()), float(layer_maps.max()))
        mask = _match_mask(masks, layer, layer_maps.shape[1])
        for image_index, picture, image_maps in zip(indices, shown, layer_maps):
            panel = render_activation_panel(picture, image_maps, mask, value_range=value_range,
                                            tile_px=int(cfg.get("tile_px", 24)))
            path = out_dir / "activations" / str(image_index) / f"{_safe_name(layer)}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(panel).save(path)
            records.append({"kind": "activations", "layer": layer, "analysed_layer": layer,
                            "image_index": image_index, "file": str(path.relative_to(out_dir))})
    return records
