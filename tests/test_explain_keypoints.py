"""Keypoint transfer (Long et al. 2014) against hand values and brute force."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from convscope.config.sections import PreprocessConfig
from convscope.explain.columns import keypoints_xy
from convscope.explain.keypoints import (PIXELS, cell_centres, match_cells, nearest_cells,
                                         pck_table, pixel_patches, sample_pairs,
                                         transfer_keypoints)
from convscope.explain.transforms import input_to_original, original_to_input
from convscope.nn.receptive_field import ReceptiveField

CPU = torch.device("cpu")


def preprocess(size, resize=None):
    return PreprocessConfig(input_size=size, channels=3, resize=resize, crop="center",
                            mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])


def test_feature_cells_map_to_original_pixels_as_by_hand():
    rf = ReceptiveField(size=(5, 5), stride=(2, 2), start=(-2, -2))
    ys, xs = cell_centres(rf, 4, 4)
    np.testing.assert_allclose(xs, [0.5, 2.5, 4.5, 6.5])  # -2 + 2 j + 2.5
    # a 64 x 48 original: shorter side 48 -> 32 (scale 2/3), 64 -> round(42.67) = 43;
    # centre crop 32: left = round((43 - 32) / 2) = 6, top = 0
    pre = preprocess(32, resize=32)
    wh = np.array([[64, 48]])
    uv = np.array([[2.5, 4.5]])
    xy = input_to_original(uv, wh, pre)
    np.testing.assert_allclose(xy, [[(2.5 + 6) * 64 / 43, 4.5 * 1.5]])
    np.testing.assert_allclose(original_to_input(xy, wh, pre), uv)
    # nearest cell: u = 3.4 is closest to centre 2.5 (col 1), v = 5.6 to 6.5 (row 3)
    assert nearest_cells(np.array([[3.4, 5.6]]), rf, 4, 4).tolist() == [[3, 1]]
    # outside the map: the border cell
    assert nearest_cells(np.array([[-9.0, 99.0]]), rf, 4, 4).tolist() == [[3, 0]]


def test_match_cells_is_the_brute_force_nearest_neighbour():
    gen = torch.Generator().manual_seed(0)
    maps_a, maps_b = torch.randn(3, 4, 5, 6, generator=gen), torch.randn(3, 4, 5, 6, generator=gen)
    cells = np.array([[0, 0], [4, 5], [2, 3]])
    got = match_cells(maps_a, cells, maps_b)
    for i, (r, c) in enumerate(cells):
        q = maps_a[i, :, r, c].numpy()
        best, where = np.inf, None
        for y in range(5):
            for x in range(6):
                d = ((maps_b[i, :, y, x].numpy() - q) ** 2).sum()
                if d < best:
                    best, where = d, [y, x]
        assert got[i].tolist() == where


def test_pixel_patches_equal_a_numpy_loop():
    x = torch.randn(2, 3, 5, 4)
    patches = pixel_patches(x, 3)
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (1, 1), (1, 1)))
    for y in range(5):
        for xx in range(4):
            expected = padded[:, :, y:y + 3, xx:xx + 3].reshape(2, -1)
            np.testing.assert_allclose(patches[:, :, y, xx].numpy(), expected)
    assert pixel_patches(x, 4).shape == (2, 48, 5, 4)


def test_a_shifted_copy_is_found_exactly_with_a_stride_one_conv():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1)).eval()
    rng = np.random.default_rng(0)
    dy, dx = 2, 3
    images_a, images_b, points_a, points_b = [], [], [], []
    for x, y in ((10, 9), (7, 12), (14, 14)):
        a = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
        images_a.append(a)
        images_b.append(np.roll(a, (dy, dx), axis=(0, 1)))
        points_a.append((x + 0.5, y + 0.5))  # pixel centres
        points_b.append((x + dx + 0.5, y + dy + 0.5))
    pairs = transfer_keypoints(model, images_a, images_b, np.array(points_a),
                               np.array(points_b), ["0", "1", "2"], preprocess(24), 3, 2, CPU)
    assert set(pairs["layer"]) == {"0", "1", "2", PIXELS}
    np.testing.assert_allclose(pairs["error_px"], 0.0, atol=1e-9)
    pck = pck_table(pairs, [0.01, 0.1])
    assert (pck["pck"] == 1.0).all() and (pck["n_pairs"] == 3).all()


def test_pck_against_hand_counts():
    pairs = pd.DataFrame({"layer": ["a"] * 4, "error_px": [0.0, 1.0, 3.0, 10.0],
                          "image_side_px": [20] * 4})
    pck = pck_table(pairs, [0.05, 0.1, 0.2])
    assert pck["pck"].tolist() == [0.5, 0.5, 0.75]
    assert pck["mean_error_px"].iloc[0] == pytest.approx(3.5)


def test_pairs_are_distinct_ordered_pairs_of_different_images():
    pairs = sample_pairs(4, 12, np.random.default_rng(0), "k.n_pairs")
    assert len({tuple(p) for p in pairs.tolist()}) == 12
    assert (pairs[:, 0] != pairs[:, 1]).all() and pairs.max() == 3
    with pytest.raises(ValueError, match="k.n_pairs.*13 pairs.*only 12"):
        sample_pairs(4, 13, np.random.default_rng(0), "k.n_pairs")


def test_keypoint_columns_in_fractions_and_pixels():
    rows = pd.DataFrame({"x": [0.5, 0.25], "y": [0.25, 1.0]})
    np.testing.assert_allclose(keypoints_xy(rows, ["x", "y"], "fraction", np.array([[32, 16], [8, 8]])),
                               [[16, 4], [2, 8]])
    np.testing.assert_allclose(keypoints_xy(rows, ["x", "y"], "pixels", np.array([[1, 1], [1, 1]])),
                               rows.to_numpy())


@pytest.mark.workflow
def test_workflow_writes_pck_against_the_demo_shape_centres(tiny_run):
    import json

    folder = tiny_run / "results" / "explain" / "keypoints"
    pck = pd.read_csv(folder / "pck.csv")
    assert list(pck["layer"].unique()) == ["relu1", "relu2", "relu3", "relu4", PIXELS]
    assert sorted(pck["threshold"].unique()) == [0.05, 0.1, 0.2]
    assert pck["pck"].between(0, 1).all() and (pck["n_pairs"] == 6).all()
    pairs = pd.read_csv(folder / "pairs.csv")
    assert len(pairs) == 6 * 5 and (pairs["index_a"] != pairs["index_b"]).all()
    manifest = pd.read_csv(tiny_run / "results" / "manifest.csv").set_index("index")
    # one class; true keypoints are the demo shape centres of image B (32 px images)
    assert manifest.loc[pd.concat([pairs["index_a"], pairs["index_b"]]), "label"].nunique() == 1
    b = manifest.loc[pairs["index_b"]]
    np.testing.assert_allclose(pairs["true_x"], b["pos_x"].to_numpy() * 32)
    np.testing.assert_allclose(pairs["true_y"], b["pos_y"].to_numpy() * 32)
    assert pairs[["pred_x", "pred_y"]].stack().between(0, 32).all()
    # PCK grows with the threshold
    for _, rows in pck.groupby("layer"):
        assert rows.sort_values("threshold")["pck"].is_monotonic_increasing
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["stage"] == "explain_keypoints"
    for item in summary["figures"] + summary["tables"]:
        assert (folder / item["path"]).is_file()
