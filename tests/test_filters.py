"""Filter images and activation panels against direct numpy / torch computations."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from convscope.analysis.filters import (
    DEAD_RGB,
    INDEX_COLUMNS,
    activation_maps,
    default_filter_layers,
    filter_images,
    render_activation_panel,
    run_filters,
    write_filter_figures,
)
from convscope.config import validate_config
from convscope.config.sections import FiltersConfig, ModelConfig, PreprocessConfig


def _sections(filters=None, preprocess=None, model=None):
    """(FiltersConfig, PreprocessConfig, ModelConfig) through the validator, defaults filled."""
    cfg = validate_config({"filters": filters or {}, "preprocess": preprocess or {},
                           "model": model or {}})
    return (FiltersConfig.from_dict(cfg["filters"]), PreprocessConfig.from_dict(cfg["preprocess"]),
            ModelConfig.from_dict(cfg["model"]))


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.block = nn.Sequential(nn.Conv2d(4, 6, 3), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        x = self.block(self.relu1(self.conv1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def _tile(grid, index, ncols, cell, pad=2):
    """Interior pixels of tile ``index`` in a `_grid` layout with square cells."""
    y = (index // ncols) * (cell + 2 * pad) + pad // 2 + pad
    x = (index % ncols) * (cell + 2 * pad) + pad // 2 + pad
    return grid[y:y + cell, x:x + cell]


def test_first_conv_colour_tiles_minmax_and_dead_frame():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(4, 3, 3, 3))
    dead = np.array([False, True, False, False])
    grid = filter_images(torch.from_numpy(weight), scale="minmax", inputs_per_filter=0,
                         dead_mask=dead, tile_px=9, pad=2)
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    for o in range(4):
        expected = weight[o].transpose(1, 2, 0)
        expected = (expected - expected.min()) / (expected.max() - expected.min())
        expected = np.rint(expected * 255).astype(np.uint8).repeat(3, 0).repeat(3, 1)
        np.testing.assert_array_equal(_tile(grid, o, ncols=2, cell=9), expected)
    # the dead filter (index 1: row 0, col 1) has a red frame, the others do not
    cell = 9 + 4
    frame_dead = grid[1, cell + 1]
    frame_alive = grid[1, 1]
    assert tuple(frame_dead) == DEAD_RGB and tuple(frame_alive) != DEAD_RGB


def test_deeper_conv_mean_and_strongest_inputs():
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(5, 8, 3, 3))
    grid = filter_images(weight, tile_px=3, scale="symmetric", inputs_per_filter=0)
    mean = weight.mean(axis=1)
    for o in range(5):
        expected = 0.5 + 0.5 * mean[o] / np.abs(mean[o]).max()
        expected = np.rint(expected * 255).astype(np.uint8)
        np.testing.assert_array_equal(_tile(grid, o, ncols=3, cell=3)[..., 0], expected)
    strongest = filter_images(weight, tile_px=3, scale="minmax", inputs_per_filter=2)
    norms = np.sqrt((weight[0] ** 2).sum(axis=(1, 2)))
    best = np.argsort(-norms)[:2]
    kernels = weight[0][best]
    kernels = (kernels - kernels.min()) / (kernels.max() - kernels.min())
    first_group = strongest[3:6, 3:3 + 7, 0]  # two 3x3 tiles with a 1-px gap
    np.testing.assert_array_equal(first_group[:, :3], np.rint(kernels[0] * 255).astype(np.uint8))
    np.testing.assert_array_equal(first_group[:, 4:], np.rint(kernels[1] * 255).astype(np.uint8))
    bounded = filter_images(rng.normal(size=(600, 2, 1, 1)), max_filters=16, tile_px=4,
                            scale="minmax", inputs_per_filter=0)
    assert max(bounded.shape) < 200
    with pytest.raises(ValueError, match="scale"):
        filter_images(weight, scale="bogus", inputs_per_filter=0, tile_px=3)


def test_activation_maps_match_direct_forward_and_hooks_removed():
    torch.manual_seed(0)
    model = TinyNet().eval()
    inputs = torch.randn(2, 3, 8, 8)
    maps = activation_maps(model, ["relu1", "block/0", "fc"], inputs)
    with torch.no_grad():
        relu1 = torch.relu(model.conv1(inputs))
        block0 = model.block[0](relu1)
        logits = model(inputs)
    np.testing.assert_allclose(maps["relu1"], relu1.numpy(), rtol=1e-6)
    np.testing.assert_allclose(maps["block/0"], block0.numpy(), rtol=1e-6)
    assert maps["fc"].shape == (2, 2, 1, 1)
    np.testing.assert_allclose(maps["fc"][:, :, 0, 0], logits.numpy(), rtol=1e-6)
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="'filters.panel_layers'.*valid names: conv1, relu1"):
        activation_maps(model, ["conv9"], inputs)
    assert all(not m._forward_hooks for m in model.modules())


def test_render_panel_layer_scale_and_dead():
    rng = np.random.default_rng(2)
    maps = rng.uniform(0, 3, size=(4, 5, 5))
    image = rng.integers(0, 256, size=(10, 10, 3), dtype=np.uint8)
    panel = render_activation_panel(image, maps, np.array([0, 0, 1, 0], bool),
                                    value_range=(0.0, 6.0), tile_px=5, pad=2)
    assert panel.dtype == np.uint8
    grid_left = panel.shape[1] - (2 * 9 + 2)
    grid = panel[:, grid_left:]
    for c in range(4):
        expected = np.rint(np.clip(maps[c] / 6.0, 0, 1) * 255).astype(np.uint8)
        np.testing.assert_array_equal(_tile(grid, c, ncols=2, cell=5)[..., 1], expected)
    assert tuple(grid[9 + 1, 1]) == DEAD_RGB  # tile 2 = row 1, col 0
    big = render_activation_panel(image, rng.normal(size=(400, 6, 6)), tile_px=32, max_side=300)
    assert max(big.shape[:2]) <= 300


def test_default_layers_and_run_filters(tmp_path):
    model = TinyNet()
    chosen = default_filter_layers(model, ["relu1", "block"], {"relu1": 4, "block": 6})
    assert chosen == {"conv1": "relu1", "block.0": "block"}
    stats = pd.DataFrame({"layer": ["relu1"] * 4, "channel": range(4),
                          "dead": [False, False, False, True]})
    stats.to_csv(tmp_path / "stats.csv", index=False)
    filters, preprocess, _ = _sections({"tile_px": 6})
    index = write_filter_figures(model, filters, ["relu1", "block"], preprocess, tmp_path / "out",
                                 stats_csv=tmp_path / "stats.csv")
    assert list(index.columns) == INDEX_COLUMNS
    assert list(index["layer"]) == ["conv1", "block.0"]
    assert pd.read_csv(tmp_path / "out" / "index.csv")["file"].tolist() == [
        "weights/conv1.png", "weights/block.0.png"]
    for file in index["file"]:
        image = np.asarray(Image.open(tmp_path / "out" / file))
        assert image.ndim == 3 and image.shape[2] == 3
    conv1 = np.asarray(Image.open(tmp_path / "out" / "weights" / "conv1.png"))
    assert (conv1 == DEAD_RGB).all(axis=2).any()
    bad, _, _ = _sections({"layers": ["relu1"]})
    with pytest.raises(ValueError, match="'filters.layers'.*not an nn.Conv2d"):
        write_filter_figures(model, bad, ["relu1"], preprocess, tmp_path / "bad")


def test_run_filters_activation_panels(tmp_path):
    from convscope.data.manifest import write_manifest

    rng = np.random.default_rng(3)
    paths = []
    for i in range(4):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    paths[2] = str(tmp_path / "missing.png")  # unreadable: skipped with a warning
    manifest = pd.DataFrame({"index": range(4), "path": paths, "slot": -1, "label": 0,
                             "split": "all"})
    write_manifest(manifest, ["a"], tmp_path / "manifest.csv")
    filters, preprocess, _ = _sections({"panel_images": [1, 2, 3], "tile_px": 8},
                                       {"input_size": 8, "crop": "none", "mean": [0.5] * 3,
                                        "std": [0.25] * 3})
    model = TinyNet()
    index = write_filter_figures(model, filters, ["relu1", "block"], preprocess, tmp_path / "out",
                                 manifest_csv=tmp_path / "manifest.csv")
    panels = index[index["kind"] == "activations"]
    assert sorted(set(panels["image_index"])) == [1, 3]
    assert set(panels["layer"]) == {"relu1", "block"}
    # the grid of relu1 tiles for image 3 equals the layer maps scaled by the shared range
    from convscope.data.preprocess import to_model_input

    images = [np.asarray(Image.open(paths[i]).convert("RGB")) for i in (1, 3)]
    maps = activation_maps(model, ["relu1"], to_model_input(images, preprocess.to_dict()))
    lo, hi = maps["relu1"].min(), maps["relu1"].max()
    panel = np.asarray(Image.open(tmp_path / "out" / "activations" / "3" / "relu1.png"))
    grid = panel[:, panel.shape[1] - (2 * 12 + 2):]
    expected = np.rint(np.clip((maps["relu1"][1, 0] - lo) / (hi - lo), 0, 1) * 255)
    np.testing.assert_array_equal(_tile(grid, 0, ncols=2, cell=8)[..., 0], expected)
    missing, _, _ = _sections({"panel_images": [99]})
    with pytest.raises(ValueError, match="panel_images"):
        write_filter_figures(model, missing, ["relu1"], preprocess, tmp_path / "bad",
                             manifest_csv=tmp_path / "manifest.csv")


def test_run_filters_loads_the_weights_file(tmp_path):
    """run_filters draws the filters of the checkpoint it is given, not of a fresh model."""
    from convscope.nn.models import DemoCNN

    torch.manual_seed(5)
    state = DemoCNN(num_classes=3).state_dict()
    torch.save(state, tmp_path / "weights.pt")
    filters, preprocess, model_cfg = _sections({"panel_images": 0, "tile_px": 5},
                                               model={"kind": "demo"})
    index = run_filters(model_cfg, tmp_path / "weights.pt", filters, ["relu1"], preprocess,
                        tmp_path / "out")
    assert index["file"].tolist() == ["weights/conv1.png"]
    conv1 = np.asarray(Image.open(tmp_path / "out" / "weights" / "conv1.png"))
    weight = state["conv1.weight"].numpy().astype(np.float64)  # (32, 3, 5, 5), one tile each
    ncols = int(np.ceil(np.sqrt(32)))
    for o in (0, 31):
        expected = weight[o].transpose(1, 2, 0)
        expected = np.rint((expected - expected.min()) / (expected.max() - expected.min()) * 255)
        np.testing.assert_array_equal(_tile(conv1, o, ncols=ncols, cell=5), expected)
