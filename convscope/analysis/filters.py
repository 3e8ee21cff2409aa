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

The stage (`run_filters`: load the model, then `write_filter_figures`) writes
only inside the folder it is given: ``weights/<conv>.png``,
``activations/<manifest row>/<layer>.png`` and ``index.csv`` listing them.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from convscope.analysis.layer_names import layer_file_names
from convscope.config.sections import FiltersConfig, ModelConfig, PreprocessConfig
from convscope.nn.device import model_device
from convscope.nn.hooks import capture_tensors
from convscope.nn.layers import check_layer_names, get_module
from convscope.render.grids import scale_to_unit, tile_grid, to_rgb_uint8, upscale_nearest
from convscope.store.atomic import save_image, write_text

__all__ = [
    "DEAD_RGB",
    "INDEX_COLUMNS",
    "filter_images",
    "activation_maps",
    "render_activation_panel",
    "default_filter_layers",
    "write_filter_figures",
    "run_filters",
]

logger = logging.getLogger(__name__)

#: Border colour of dead channels.
DEAD_RGB = (220, 30, 30)
#: Columns of the figure index ``index.csv`` written by `write_filter_figures`.
INDEX_COLUMNS = ["kind", "layer", "analysed_layer", "image_index", "file"]
_BACKGROUND = 40
_GAP = 1


def _grid(groups: Sequence[np.ndarray], dead: np.ndarray, pad: int,
          ncols: int | None = None) -> np.ndarray:
    """`convscope.render.grids.tile_grid` with this module's colours (dead frames red)."""
    return tile_grid(groups, dead, pad, ncols=ncols, background=_BACKGROUND, flag_rgb=DEAD_RGB)


def _dead_vector(dead_mask, n: int) -> np.ndarray:
    """(n,) bool dead flags from an optional mask of at least ``n`` entries."""
    if dead_mask is None:
        return np.zeros(n, dtype=bool)
    dead_mask = np.asarray(dead_mask, dtype=bool)
    if dead_mask.shape[0] < n:
        raise ValueError(f"dead_mask has {dead_mask.shape[0]} entries for {n} channels")
    return dead_mask[:n]


def _filter_group(kernel: np.ndarray, scale: str, inputs_per_filter: int,
                  factor: int) -> np.ndarray:
    """The picture of one output channel's (I, kh, kw) kernel: (h, w, 3) uint8 (module docstring)."""
    n_in = kernel.shape[0]
    if n_in == 3:
        tiles = [scale_to_unit(kernel.transpose(1, 2, 0), scale)]
    elif inputs_per_filter == 0:
        tiles = [scale_to_unit(kernel.mean(axis=0), scale)]
    else:
        k = min(int(inputs_per_filter), n_in)
        strongest = np.argsort(-np.sqrt((kernel ** 2).sum(axis=(1, 2))), kind="stable")[:k]
        tiles = list(scale_to_unit(kernel[strongest], scale))  # one scale per filter
    tiles = [upscale_nearest(to_rgb_uint8(t), factor) for t in tiles]
    if len(tiles) > 1:
        gap = np.full((tiles[0].shape[0], _GAP, 3), _BACKGROUND, np.uint8)
        tiles = [part for t in tiles for part in (t, gap)][:-1]
    return np.concatenate(tiles, axis=1)


def filter_images(
    weight: torch.Tensor | np.ndarray,
    *,
    scale: str,
    inputs_per_filter: int,
    tile_px: int,
    max_filters: int | None = None,
    dead_mask: np.ndarray | None = None,
    pad: int = 2,
) -> np.ndarray:
    """Grid image of convolution filters.

    Args:
        weight: (O, I, kh, kw) convolution weight.
        scale: ``"minmax"`` or ``"symmetric"``, per filter (``filters.scale``,
            module docstring).
        inputs_per_filter: for ``I != 3``: 0 shows the mean over input
            channels, ``k > 0`` the ``k`` input kernels of largest L2 norm.
        tile_px: kernels are enlarged by an integer factor to about this size.
        max_filters: only the first ``max_filters`` output channels are drawn
            (None: all).
        dead_mask: (O,) bool; True channels get a red frame.
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
    n_out, _, kh, kw = weight.shape
    dead = _dead_vector(dead_mask, n_out)
    n_show = n_out if max_filters is None else min(n_out, int(max_filters))
    factor = max(1, int(tile_px) // max(kh, kw))
    groups = [_filter_group(weight[o], scale, inputs_per_filter, factor) for o in range(n_show)]
    return _grid(groups, dead[:n_show], pad)


@torch.no_grad()
def activation_maps(model: nn.Module, layer_names: Sequence[str], inputs: torch.Tensor,
                    key: str = "filters.panel_layers") -> dict[str, np.ndarray]:
    """Feature maps of ``layer_names`` for a batch, via forward hooks.

    Args:
        model: the network (its train/eval mode is left as it is).
        layer_names: module names (``"features.3"``; ``"/"`` is read as ``"."``).
        inputs: (N, C, H, W) model input; moved to the model's device.
        key: the config key the names come from, for the error message.
    Returns:
        layer name -> (N, C_l, h, w) float32 array. A 2-D output (N, C) becomes
        (N, C, 1, 1). A module called several times in one forward pass keeps
        its last output. The hooks are removed afterwards, even on error.
    Raises:
        convscope.nn.layers.LayerNameError: a name is not a module of the model.
    """
    with capture_tensors(model, list(layer_names), key=key) as captured:
        model(inputs.to(model_device(model)))
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
    tiles = [upscale_nearest(to_rgb_uint8(np.clip(m, 0, 1)), factor) for m in scaled]
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


def _match_mask(masks: dict[str, np.ndarray], layer: str | None, channels: int):
    """The dead mask of ``layer`` if it has ``channels`` entries, else None (logged)."""
    if layer is None or layer not in masks:
        return None
    mask = masks[layer]
    if mask.shape[0] != channels:
        logger.warning("dead mask of %s has %d channels, expected %d; not drawn",
                       layer, mask.shape[0], channels)
        return None
    return mask


def _choose_panel_rows(manifest: pd.DataFrame, panel_images, seed: int) -> pd.DataFrame:
    """Manifest rows of the panels: a seeded sample of ``panel_images`` rows, or those listed."""
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


def _read_masks(stats_csv: str | os.PathLike | None) -> dict[str, np.ndarray]:
    """Dead-channel masks by layer from the unit statistics table, or none without one."""
    if stats_csv is None:
        return {}
    from convscope.analysis.unit_stats import read_dead_masks

    return read_dead_masks(stats_csv)


def _layer_channels(shard_paths: Sequence[str | os.PathLike]) -> dict[str, int]:
    """Analysed layer -> channel count, from the first shard's ``layer_shapes`` (empty without shards)."""
    if not shard_paths:
        return {}
    from convscope.store.shards import read_attrs

    shapes = read_attrs(shard_paths[0]).get("layer_shapes") or {}
    return {name: int(shape[0]) for name, shape in shapes.items()}


def _conv_layers(model: nn.Module, filters: FiltersConfig, layers: Sequence[str],
                 layer_channels: dict[str, int]) -> dict[str, str | None]:
    """Conv name -> analysed layer whose dead mask it shows: ``filters.layers`` or the default.

    A conv listed in ``filters.layers`` still gets the mask of the analysed
    layer it feeds (`default_filter_layers`), or its own if it is analysed.
    """
    chosen = default_filter_layers(model, layers, layer_channels)
    if filters.layers:
        check_layer_names(model, filters.layers, key="filters.layers", kind=nn.Conv2d,
                          what="an nn.Conv2d of the model")
        chosen = {name: chosen.get(name, name if name in layers else None)
                  for name in filters.layers}
    return chosen


def _write_weight_images(model: nn.Module, conv_layers: dict[str, str | None],
                         filters: FiltersConfig, masks: dict[str, np.ndarray],
                         out_dir: Path) -> list[dict]:
    """``weights/<conv>.png`` for every conv; returns their `INDEX_COLUMNS` records."""
    names = layer_file_names(list(conv_layers))
    records = []
    for conv_name, feeds in conv_layers.items():
        weight = get_module(model, conv_name, key="filters.layers").weight
        grid = filter_images(weight, scale=filters.scale,
                             inputs_per_filter=filters.inputs_per_filter,
                             tile_px=filters.tile_px, max_filters=filters.max_filters,
                             dead_mask=_match_mask(masks, feeds, weight.shape[0]))
        path = out_dir / "weights" / f"{names[conv_name]}.png"
        save_image(path, Image.fromarray(grid))
        records.append({"kind": "weights", "layer": conv_name, "analysed_layer": feeds,
                        "image_index": -1, "file": path.relative_to(out_dir).as_posix()})
    return records


def _read_panel_images(manifest_csv, panel_images, seed: int) -> tuple[list, list[int]]:
    """The panel images as (H, W, 3) uint8 and their manifest rows; unreadable ones skipped."""
    from convscope.data.images import ImageReadError, load_image
    from convscope.data.manifest import read_manifest

    manifest, _ = read_manifest(manifest_csv)
    images, indices = [], []
    for row in _choose_panel_rows(manifest, panel_images, seed).itertuples(index=False):
        try:
            images.append(load_image(row.path, int(row.slot)))
            indices.append(int(row.index))
        except ImageReadError as err:
            logger.warning("panel image %s (%s) skipped: %s", row.index, row.path, err)
    return images, indices


def _write_panels(model: nn.Module, filters: FiltersConfig, preprocess: PreprocessConfig,
                  manifest_csv, panel_layers: list[str], masks: dict[str, np.ndarray],
                  out_dir: Path) -> list[dict]:
    """``activations/<index>/<layer>.png`` for the panel images; returns their records."""
    from convscope.data.preprocess import prepare_uint8, to_model_input

    images, indices = _read_panel_images(manifest_csv, filters.panel_images, filters.seed)
    if not images:
        return []
    preprocess_cfg = preprocess.to_dict()
    inputs = to_model_input(images, preprocess_cfg)
    shown = [prepare_uint8(image, preprocess_cfg) for image in images]
    maps = activation_maps(model, panel_layers, inputs)
    names = layer_file_names(panel_layers)
    records = []
    for layer in tqdm(panel_layers, desc="activation panels", unit="layer"):
        layer_maps = maps[layer]
        value_range = (float(layer_maps.min()), float(layer_maps.max()))
        mask = _match_mask(masks, layer, layer_maps.shape[1])
        for image_index, picture, image_maps in zip(indices, shown, layer_maps):
            panel = render_activation_panel(picture, image_maps, mask, value_range=value_range,
                                            tile_px=filters.tile_px)
            path = out_dir / "activations" / str(image_index) / f"{names[layer]}.png"
            save_image(path, Image.fromarray(panel))
            records.append({"kind": "activations", "layer": layer, "analysed_layer": layer,
                            "image_index": image_index,
                            "file": path.relative_to(out_dir).as_posix()})
    return records


def write_filter_figures(
    model: nn.Module,
    filters: FiltersConfig,
    layers: Sequence[str],
    preprocess: PreprocessConfig,
    out_dir: str | os.PathLike,
    *,
    shard_paths: Sequence[str | os.PathLike] = (),
    manifest_csv: str | os.PathLike | None = None,
    stats_csv: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Write filter-weight images and activation panels of ``model`` under ``out_dir``.

    Args:
        model: the network (put in eval mode).
        filters: the ``filters`` section: which convs (``layers``, default
            `default_filter_layers`), how to draw them, which panel images
            (``panel_images``: a count sampled with ``seed``, or manifest
            rows) and layers (``panel_layers``, default ``layers``).
        layers: the analysed layers (config key ``layers``).
        preprocess: how an image becomes the model input (for the panels).
        out_dir: the stage's folder; it receives ``weights/<conv>.png``,
            ``activations/<index>/<layer>.png`` and ``index.csv``
            (`INDEX_COLUMNS`, one row per image file, paths relative to
            ``out_dir``), written last.
        shard_paths: shards whose ``layer_shapes`` tell each analysed
            layer's channel count (helps pick the conv feeding it).
        manifest_csv: the manifest; without it no panels are drawn.
        stats_csv: the unit statistics; dead channels get red frames.
    Returns:
        the index table.
    """
    out_dir = Path(out_dir)
    model.eval()
    layers = list(layers)
    masks = _read_masks(stats_csv)
    conv_layers = _conv_layers(model, filters, layers, _layer_channels(shard_paths))
    records = _write_weight_images(model, conv_layers, filters, masks, out_dir)
    panel_layers = list(filters.panel_layers or layers)
    if manifest_csv is not None and panel_layers and filters.panel_images:
        records += _write_panels(model, filters, preprocess, manifest_csv, panel_layers, masks,
                                 out_dir)
    index = pd.DataFrame(records, columns=INDEX_COLUMNS)
    write_text(out_dir / "index.csv", index.to_csv(index=False))
    return index


def run_filters(
    model_cfg: ModelConfig,
    weights_file: str | os.PathLike | None,
    filters: FiltersConfig,
    layers: Sequence[str],
    preprocess: PreprocessConfig,
    out_dir: str | os.PathLike,
    *,
    shard_paths: Sequence[str | os.PathLike] = (),
    manifest_csv: str | os.PathLike | None = None,
    stats_csv: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """The filters stage: load the model on the CPU, then `write_filter_figures`.

    ``weights_file`` is the checkpoint (`convscope.nn.models.load_stage_model`;
    None only for a torchvision model with cached weights). The other
    arguments are those of `write_filter_figures`.
    """
    from convscope.nn.models import load_stage_model

    model = load_stage_model(model_cfg, weights_file, preprocess)[0]
    return write_filter_figures(model, filters, layers, preprocess, out_dir,
                                shard_paths=shard_paths, manifest_csv=manifest_csv,
                                stats_csv=stats_csv)
