"""Correspondence Δ (Zeiler & Fergus Sec. 5) against brute force, and part boxes from columns."""

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from convscope.config.sections import PreprocessConfig
from convscope.explain.columns import (choose_class, check_columns, part_boxes, stage_columns,
                                       DEMO_PART_COLUMNS)
from convscope.explain.correspondence import (correspondence_table, grey_fill, random_boxes,
                                              scale_boxes, sign_delta)
from convscope.explain.transforms import occlude

PRE = PreprocessConfig(input_size=16, channels=3, resize=None, crop="center",
                       mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
CPU = torch.device("cpu")


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(4, 5, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)).eval()


def test_delta_equals_a_brute_force_hamming_loop():
    rng = np.random.default_rng(3)
    diffs = rng.normal(size=(5, 40))
    diffs[rng.random(diffs.shape) < 0.3] = 0.0  # zero changes have sign 0
    signs = np.sign(diffs)
    total = 0
    for i, j in itertools.permutations(range(5), 2):
        total += int(np.sum(signs[i] != signs[j]))
    mean, summed = sign_delta(torch.from_numpy(diffs))
    assert summed == total
    assert mean == pytest.approx(total / (5 * 4 * 40))


def test_delta_of_identical_changes_is_zero():
    row = torch.randn(1, 30)
    assert sign_delta(row.repeat(4, 1)) == (0.0, 0.0)


def test_identical_images_and_a_neutral_occluder_give_zero_delta():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    images = [image] * 4
    box = np.tile([[4.0, 4.0, 9.0, 9.0]], (4, 1))
    rand = [random_boxes(box, np.tile([[16, 16]], (4, 1)), np.random.default_rng(1))]
    table = correspondence_table(tiny_model(), images, box, rand, grey_fill(PRE), ["1", "3"], PRE,
                                 3, CPU)
    part = table[table["occluder"] == "part"]
    assert (part["delta"] == 0).all() and (part["delta_sum"] == 0).all()
    assert (table.loc[table["occluder"] == "random", "delta"] > 0).all()
    # an occluder that paints the colour already there changes nothing: all signs 0
    grey = np.full((16, 16, 3), 128, dtype=np.uint8)
    others = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(3)]
    for im in others:
        im[4:9, 4:9] = 128
    table = correspondence_table(tiny_model(), [grey, *others], box, [], np.full(3, 128.0),
                                 ["1", "3"], PRE, 8, CPU)
    assert (table.loc[table["occluder"] == "part", "delta"] == 0).all()


def test_table_matches_numpy_features_by_hand():
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(3)]
    box = np.array([[2, 3, 8, 9], [5, 5, 11, 11], [0, 0, 6, 6]], dtype=float)
    model = tiny_model()
    table = correspondence_table(model, images, box, [], grey_fill(PRE), ["3"], PRE, 2, CPU)

    def feats(im):
        x = torch.from_numpy(((im / 255.0 - 0.5) / 0.25).astype(np.float32).transpose(2, 0, 1)[None])
        with torch.no_grad():
            return model[:4](x).numpy().ravel()

    signs = []
    for im, b in zip(images, box.astype(int)):
        hidden = im.copy()
        hidden[b[1]:b[3], b[0]:b[2]] = 128  # 0.5 * 255 = 127.5 rounds to 128
        signs.append(np.sign(feats(im) - feats(hidden)))
    total = sum(int(np.sum(signs[i] != signs[j])) for i, j in itertools.permutations(range(3), 2))
    assert table.loc[0, "delta_sum"] == total
    assert table.loc[0, "n_features"] == 5 * 8 * 8


def test_boxes_scale_and_random_positions_stay_inside():
    boxes = np.array([[10.0, 10.0, 20.0, 30.0]])
    np.testing.assert_allclose(scale_boxes(boxes, 0.5), [[12.5, 15.0, 17.5, 25.0]])
    rng = np.random.default_rng(0)
    for _ in range(50):
        b = random_boxes(boxes, np.array([[32, 40]]), rng)[0]
        assert b[0] >= 0 and b[1] >= 0 and b[2] <= 32 and b[3] <= 40
        np.testing.assert_allclose(b[2:] - b[:2], [10, 20])


def test_occlude_covers_pixels_whose_centre_is_inside():
    image = np.zeros((6, 6, 3), dtype=np.uint8)
    out = occlude(image, (1.4, 0.6, 3.5, 7.0), (255, 255, 255))
    expected = np.zeros((6, 6), dtype=bool)
    expected[1:6, 1:3] = True  # rows: centres 1.5..5.5 in [0.6, 7); cols: 1.5, 2.5 in [1.4, 3.5)
    np.testing.assert_array_equal(out[..., 0] == 255, expected)


def test_part_boxes_from_centre_and_side_fractions_and_from_pixel_corners():
    rows = pd.DataFrame({"pos_x": [0.5, 0.25], "pos_y": [0.5, 0.75], "shape_size": [0.5, 0.25]})
    boxes = part_boxes(rows, DEMO_PART_COLUMNS, "fraction", np.array([[32, 32], [64, 32]]))
    np.testing.assert_allclose(boxes, [[8, 8, 24, 24], [8, 20, 24, 28]])
    corners = pd.DataFrame({"a": [1.0], "b": [2.0], "c": [5.0], "d": [7.0]})
    np.testing.assert_allclose(part_boxes(corners, list("abcd"), "pixels", np.array([[9, 9]])),
                               [[1, 2, 5, 7]])


def test_class_choice_and_missing_columns_name_the_key():
    manifest = pd.DataFrame({"label": [0, 1, 1, 1, -1], "pos_x": [0.1] * 5})
    assert choose_class(manifest, ["a", "b"], None, "k.target_class", 2) == 1
    assert choose_class(manifest, ["a", "b"], "b", "k.target_class", 3) == 1
    with pytest.raises(ValueError, match="k.target_class.*has 1 labelled"):
        choose_class(manifest, ["a", "b"], "a", "k.target_class", 2)
    with pytest.raises(ValueError, match="'zebra' is not a class; valid names: a, b"):
        choose_class(manifest, ["a", "b"], "zebra", "k.target_class", 2)
    with pytest.raises(ValueError, match="k.part_columns.*no column.*pos_y"):
        check_columns(manifest, ["pos_x", "pos_y"], "k.part_columns")


def test_stage_columns_fill_the_demo_and_switch_other_datasets_off():
    section = {"part_columns": None, "part_units": "pixels"}
    demo = stage_columns(section, "part_columns", "part_units", "demo", DEMO_PART_COLUMNS)
    assert demo == {"part_columns": list(DEMO_PART_COLUMNS), "part_units": "fraction"}
    assert stage_columns(section, "part_columns", "part_units", "folder", DEMO_PART_COLUMNS) is None
    mine = {"part_columns": ["a", "b", "c"], "part_units": "pixels"}
    assert stage_columns(mine, "part_columns", "part_units", "folder", DEMO_PART_COLUMNS) == mine


@pytest.mark.workflow
def test_workflow_writes_the_delta_table(tiny_run):
    import json

    folder = tiny_run / "results" / "explain" / "correspondence"
    table = pd.read_csv(folder / "delta.csv")
    assert list(table["layer"].unique()) == ["relu1", "relu2", "relu3", "relu4"]
    assert table["occluder"].tolist() == ["part", "random"] * 4
    assert table["delta"].between(0, 1).all() and (table["delta"] > 0).all()
    assert (table["n_images"] == 4).all()
    assert table["n_repeats"].tolist() == [1, 2] * 4
    # the two Δ columns agree: delta = delta_sum / (n (n - 1) D) (random: means of both)
    np.testing.assert_allclose(table["delta"],
                               table["delta_sum"] / (4 * 3 * table["n_features"]), rtol=1e-9)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["stage"] == "explain_correspondence"
    for item in summary["figures"] + summary["tables"]:
        assert (folder / item["path"]).is_file()


def test_class_rows_names_the_key_of_missing_or_unset_columns(tmp_path):
    from convscope.data.manifest import write_manifest
    from convscope.explain.sample import class_rows

    manifest = pd.DataFrame({"index": [0, 1, 2], "path": ["a.png", "b.png", "c.png"],
                             "slot": -1, "label": [0, 0, 1], "split": "all",
                             "px": [1.0, None, 3.0], "py": [1.0, 2.0, 3.0]})
    write_manifest(manifest, ["cat", "dog"], tmp_path / "m.csv")
    rows, names, class_id = class_rows(tmp_path / "m.csv", "explain.keypoints", "point_columns",
                                       ["px", "py"], None, 1)
    # rows with a missing value do not count: class 0 keeps one row, class 1 one; tie -> 0
    assert class_id == 0 and rows["index"].tolist() == [0] and names == ["cat", "dog"]
    with pytest.raises(ValueError, match="'explain.keypoints.point_columns' is not set"):
        class_rows(tmp_path / "m.csv", "explain.keypoints", "point_columns", None, None, 1)
    with pytest.raises(ValueError, match="'explain.keypoints.point_columns'.*no column.*'pz'"):
        class_rows(tmp_path / "m.csv", "explain.keypoints", "point_columns", ["px", "pz"], None, 1)
    with pytest.raises(ValueError, match="'explain.keypoints.target_class'.*has 1 labelled"):
        class_rows(tmp_path / "m.csv", "explain.keypoints", "point_columns", ["px", "py"], "dog", 2)
