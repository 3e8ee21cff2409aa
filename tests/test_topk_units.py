"""Top-k units: the streamed table against brute force, box geometry, patch content."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from convscope.store.shards import layer_key, write_shard

from convscope.analysis.layer_names import layer_file_names, safe_layer_name
from convscope.analysis.topk_units import (
    TOPK_COLUMNS,
    covers_most_of_input,
    render_context_grid,
    render_patch_grid,
    run_topk_units,
    topk_units,
)
from convscope.config import validate_config
from convscope.config.sections import UnitsConfig
from convscope.nn.receptive_field import ReceptiveField

PREPROCESS = {"resize": 32, "crop": "center", "input_size": [32, 32],
              "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
# layer -> (shape [C, H, W], receptive field or None)
LAYERS = {
    "features/0": ([5, 8, 8], ReceptiveField(size=(7, 7), stride=(4, 4), start=(-2, -2))),
    "features/3": ([4, 2, 2], ReceptiveField(size=(24, 24), stride=(16, 16), start=(-4, -4))),
    "fc": ([6], None),
}
SIZES = [(64, 96), (48, 48), (80, 40), (33, 70), (100, 64)]  # original (width, height)


def _attrs(layers=LAYERS):
    return {
        "layer_names": list(layers),
        "layer_shapes": {name: shape for name, (shape, _) in layers.items()},
        "receptive_fields": {name: rf.to_dict() for name, (_, rf) in layers.items() if rf},
        "preprocess": PREPROCESS,
        "input_size": [32, 32],
        "identity": {"model": "test"},
    }


def write_shards(tmp_path, n_images=40, shard_size=12, seed=0, layers=LAYERS, sizes=SIZES):
    """Synthetic shards with ties and NaN; returns (paths, all arrays concatenated)."""
    rng = np.random.default_rng(seed)
    index = np.arange(n_images, dtype=np.int64) + 100
    wh = np.array([sizes[i % len(sizes)] for i in range(n_images)], dtype=np.float32)
    full = {"index": index, "image_attrs/width": wh[:, 0], "image_attrs/height": wh[:, 1]}
    for name, (shape, _) in layers.items():
        channels = shape[0]
        positions = int(np.prod(shape[1:])) if len(shape) == 3 else 1
        values = rng.integers(0, 5, size=(n_images, channels)).astype(np.float32)
        values[:, 0] = rng.normal(size=n_images)
        values[rng.random(values.shape) < 0.05] = np.nan
        full[f"layers/{layer_key(name)}/max"] = values
        full[f"layers/{layer_key(name)}/argmax"] = rng.integers(
            0, positions, size=(n_images, channels)).astype(np.int32)
        full[f"layers/{layer_key(name)}/mean"] = values / 2
    paths = []
    # shards in scrambled order: the merge must not depend on it
    starts = list(range(0, n_images, shard_size))[::-1]
    for number, start in enumerate(starts):
        rows = slice(start, start + shard_size)
        arrays = {key: value[rows] for key, value in full.items()}
        arrays["label"] = np.full(len(arrays["index"]), -1, np.int32)
        path = tmp_path / "features" / f"shard-{number:05d}.h5"
        write_shard(path, arrays, _attrs(layers))
        paths.append(path)
    return paths, full


def hand_original_box(box_in, w, h):
    """Model-input box -> original pixels for resize-shorter-side-to-32 + centre crop 32."""
    box = np.clip(np.asarray(box_in, np.float64), 0, 32)  # what the model saw
    scale = 32 / min(w, h)
    if w <= h:
        new_w, new_h = 32, max(1, int(round(h * scale)))
    else:
        new_w, new_h = max(1, int(round(w * scale))), 32
    left, top = round((new_w - 32) / 2), round((new_h - 32) / 2)
    x0, x1 = [(box[i] + left) * w / new_w for i in (0, 2)]
    y0, y1 = [(box[i] + top) * h / new_h for i in (1, 3)]
    return [min(max(x0, 0), w), min(max(y0, 0), h), min(max(x1, 0), w), min(max(y1, 0), h)]


def brute_table(full, layers, k):
    rows = []
    index = full["index"]
    width, height = full["image_attrs/width"], full["image_attrs/height"]
    for name, (shape, rf) in layers.items():
        values = full[f"layers/{layer_key(name)}/max"].astype(np.float64)
        values = np.where(np.isnan(values), -np.inf, values)
        argmax = full[f"layers/{layer_key(name)}/argmax"]
        fw = shape[2] if len(shape) == 3 else 1
        for channel in range(shape[0]):
            order = sorted(range(len(index)), key=lambda r: (-values[r, channel], index[r]))[:k]
            for rank, r in enumerate(order):
                fy, fx = divmod(int(argmax[r, channel]), fw)
                if rf is None:
                    box_in = [0, 0, 32, 32]
                else:
                    box_in = [rf.start[1] + fx * rf.stride[1], rf.start[0] + fy * rf.stride[0]]
                    box_in += [box_in[0] + rf.size[1], box_in[1] + rf.size[0]]
                box = hand_original_box(box_in, int(width[r]), int(height[r]))
                rows.append([name, channel, rank, int(index[r]), values[r, channel], fy, fx, *box])
    return pd.DataFrame(rows, columns=TOPK_COLUMNS)


@pytest.mark.parametrize("k", [3, 9, 50])
def test_table_matches_brute_force(tmp_path, k):
    paths, full = write_shards(tmp_path)
    table = topk_units(paths, k=k)
    expected = brute_table(full, LAYERS, k)
    assert list(table.columns) == TOPK_COLUMNS
    assert len(table) == len(expected)
    for column in ["layer", "channel", "rank", "index", "fy", "fx"]:
        np.testing.assert_array_equal(table[column].to_numpy(), expected[column].to_numpy(),
                                      err_msg=column)
    np.testing.assert_array_equal(table["value"].to_numpy(np.float64), expected["value"].to_numpy())
    np.testing.assert_allclose(table[["x0", "y0", "x1", "y1"]].to_numpy(np.float64),
                               expected[["x0", "y0", "x1", "y1"]].to_numpy(np.float64), atol=1e-9)


def test_layer_selection_and_unknown_layer(tmp_path):
    paths, _ = write_shards(tmp_path, n_images=10)
    table = topk_units(paths, layers=["fc"], k=2)
    assert set(table["layer"]) == {"fc"} and len(table) == 6 * 2
    with pytest.raises(ValueError, match="'layers'.*valid names: features/0, features/3, fc"):
        topk_units(paths, layers=["conv9"], k=2)


def test_box_by_hand_resize_half_and_centre_crop(tmp_path):
    """64 x 96 image -> resize 32 x 48 (scale 1/2) -> centre crop: top = 8, left = 0."""
    layers = {"conv": ([1, 8, 8], ReceptiveField(size=(7, 7), stride=(4, 4), start=(-2, -2)))}
    arrays = {
        "index": np.array([0, 1], np.int64),
        "layers/conv/max": np.array([[2.0], [1.0]], np.float32),
        "layers/conv/argmax": np.array([[1 * 8 + 2], [0]], np.int32),  # (fy, fx) = (1, 2), (0, 0)
        "image_attrs/width": np.array([64, 64], np.float32),
        "image_attrs/height": np.array([96, 96], np.float32),
    }
    write_shard(tmp_path / "s.h5", arrays, _attrs(layers))
    table = topk_units([tmp_path / "s.h5"], k=2)
    boxes = table[["x0", "y0", "x1", "y1"]].to_numpy()
    # (1, 2): input box x 6..13, y 2..9 -> original x 12..26, y (2+8)*2=20..(9+8)*2=34
    np.testing.assert_allclose(boxes[0], [12, 20, 26, 34])
    # (0, 0): input box x -2..5, y -2..5, clipped to the input 0..5 -> x 0..10, y 16..26
    np.testing.assert_allclose(boxes[1], [0, 16, 10, 26])
    assert table[["fy", "fx"]].to_numpy().tolist() == [[1, 2], [0, 0]]


def _cell(canvas: np.ndarray, column: int, columns: int, cell_px: int, gap: int = 2):
    """Pixels of the cell in the only row, ``column`` counted from the left."""
    height, width = canvas.shape[:2]
    step = cell_px + gap
    x0 = width - gap - (columns - column) * step
    y0 = height - gap - step
    return canvas[y0:y0 + cell_px, x0:x0 + cell_px]


def test_patches_show_the_bright_square(tmp_path):
    """Images are black with a white square exactly where the top unit's box maps."""
    layers = {"conv": ([1, 8, 8], ReceptiveField(size=(7, 7), stride=(4, 4), start=(-2, -2)))}
    # image 0: 64 x 96, (fy, fx) = (1, 2) -> box x 12..26, y 20..34 (see the test above)
    # image 1: 48 x 48, scale 32/48, no crop; (fy, fx) = (3, 3) -> input 10..17 -> original 15..25.5
    # image 2: the unit does not fire (value 0) -> grey
    arrays = {
        "index": np.array([0, 1, 2], np.int64),
        "layers/conv/max": np.array([[3.0], [2.0], [0.0]], np.float32),
        "layers/conv/argmax": np.array([[1 * 8 + 2], [3 * 8 + 3], [0]], np.int32),
        "image_attrs/width": np.array([64, 48, 40], np.float32),
        "image_attrs/height": np.array([96, 48, 40], np.float32),
    }
    write_shard(tmp_path / "s.h5", arrays, _attrs(layers))
    table = topk_units([tmp_path / "s.h5"], k=3)
    np.testing.assert_allclose(table.iloc[1][["x0", "y0", "x1", "y1"]].to_numpy(np.float64),
                               [15, 15, 25.5, 25.5])
    squares = {0: (64, 96, 12, 20, 26, 34), 1: (48, 48, 15, 15, 26, 26), 2: (40, 40, 0, 0, 0, 0)}
    paths = []
    for i, (w, h, x0, y0, x1, y1) in squares.items():
        pixels = np.zeros((h, w, 3), np.uint8)
        pixels[y0:y1, x0:x1] = 255
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    manifest = pd.DataFrame({"index": [0, 1, 2], "path": [str(p) for p in paths], "slot": -1})

    patch_px = 40
    grid = np.asarray(render_patch_grid(table, manifest, patch_px=patch_px))
    first = _cell(grid, 0, 3, patch_px).astype(float)
    assert first.mean() > 240  # the crop is the white square
    second = _cell(grid, 1, 3, patch_px).astype(float)
    assert second[4:-4, 4:-4].mean() > 200 and second.mean() > 150  # square, a border of black
    third = _cell(grid, 2, 3, patch_px)
    assert (third == 128).all()  # dead slot: grey

    context = np.asarray(render_context_grid(table, manifest, thumb_px=48))
    cell = _cell(context, 0, 3, 48)
    # image 64 x 96 fitted to 32 x 48 at left = 8: the box is drawn in red around the square
    red = (cell[..., 0] > 200) & (cell[..., 1] < 60) & (cell[..., 2] < 60)
    ys, xs = np.nonzero(red)
    assert red.sum() > 0
    assert abs(xs.min() - (8 + 6)) <= 1 and abs(ys.min() - 10) <= 1
    assert abs(xs.max() - (8 + 13 - 1)) <= 1 and abs(ys.max() - (17 - 1)) <= 1


def test_run_topk_units_writes_table_pages_and_index(tmp_path):
    layers = dict(LAYERS)
    layers["features/0"] = ([5, 8, 8], layers["features/0"][1])
    paths, full = write_shards(tmp_path, n_images=15, shard_size=6, layers=layers)
    rng = np.random.default_rng(3)
    rows = []
    for i, (index, w, h) in enumerate(zip(full["index"], full["image_attrs/width"],
                                          full["image_attrs/height"])):
        path = tmp_path / "images" / f"{index}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (int(h), int(w), 3), dtype=np.uint8)).save(path)
        rows.append({"index": index, "path": str(path), "slot": -1, "label": -1, "split": "all"})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)

    out = tmp_path / "units"
    (out / "topk" / "features_0").mkdir(parents=True)
    (out / "topk" / "features_0" / "patches-007.png").write_bytes(b"stale")
    units = UnitsConfig.from_dict(validate_config(
        {"units": {"top_k": 4, "patch_px": 16, "max_channels": 2}})["units"])
    returned = run_topk_units(paths, tmp_path / "manifest.csv", units,
                              table_csv=out / "topk.csv", index_json=out / "topk.json",
                              pages_dir=out / "topk")

    table = pd.read_csv(out / "topk.csv")
    pd.testing.assert_frame_equal(table, brute_table(full, layers, 4), check_dtype=False)
    pd.testing.assert_frame_equal(returned, brute_table(full, layers, 4), check_dtype=False)
    index = json.loads((out / "topk.json").read_text())
    # pages relative to the folder of topk.json; every page numbered, even a single one
    assert index == {
        "features/0": [f"topk/features_0/patches-00{i}.png" for i in range(3)],  # 5 channels / 2
        "features/3": ["topk/features_3/patches-000.png", "topk/features_3/patches-001.png",
                       "topk/features_3/context-000.png", "topk/features_3/context-001.png"],
        "fc": ([f"topk/fc/patches-00{i}.png" for i in range(3)]
               + [f"topk/fc/context-00{i}.png" for i in range(3)]),
    }
    on_disk = sorted(p.relative_to(out).as_posix() for p in (out / "topk").rglob("*"))
    folders = ["topk/fc", "topk/features_0", "topk/features_3"]
    assert on_disk == sorted(folders + [f for files in index.values() for f in files])
    assert sorted(p.name for p in out.iterdir()) == ["topk", "topk.csv", "topk.json"]
    with Image.open(out / "topk" / "features_0" / "patches-000.png") as image:
        assert image.mode == "RGB" and image.height > 2 * 16
    with Image.open(out / "topk" / "fc" / "context-000.png") as image:  # cells of 2 x patch_px
        assert image.height > 2 * 32

    # one page per layer is still page 000; pages may live outside the index's folder
    one_page = UnitsConfig.from_dict({**units.to_dict(), "max_channels": 8})
    run_topk_units(paths, tmp_path / "manifest.csv", one_page, table_csv=tmp_path / "t.csv",
                   index_json=tmp_path / "json" / "topk.json", pages_dir=tmp_path / "pages",
                   layers=["fc"])
    assert json.loads((tmp_path / "json" / "topk.json").read_text()) == {
        "fc": ["../pages/fc/patches-000.png", "../pages/fc/context-000.png"]}


def test_context_rule_and_safe_names():
    attrs = _attrs()
    assert not covers_most_of_input(attrs, "features/0")  # 7 of 32 pixels
    assert covers_most_of_input(attrs, "features/3")  # 24 of 32
    assert covers_most_of_input(attrs, "fc")  # no receptive field: the whole input
    assert safe_layer_name("features/0") == "features_0"
    assert safe_layer_name("layer4.1/conv 2") == "layer4.1_conv_2"
    assert layer_file_names(["a/b", "a_b", "c", "a b"]) == {"a/b": "a_b", "a_b": "a_b-2",
                                                            "c": "c", "a b": "a_b-3"}
