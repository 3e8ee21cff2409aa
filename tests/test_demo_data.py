"""Tests for convscope.data.demo: the coloured-shapes demo dataset."""

from __future__ import annotations

import colorsys
import os

import numpy as np
import pandas as pd
import pytest

from convscope.config import validate_config
from convscope.config.sections import DemoDatasetConfig
from convscope.data.demo import (
    BACKGROUNDS,
    COLOUR_NAMES,
    DEMO_ATTRIBUTES,
    DEMO_CLASSES,
    generate_demo_dataset,
    hue_to_colour,
    render_demo_image,
)
from convscope.data.images import load_image
from convscope.data.manifest import build_manifest


def demo_settings(**values) -> DemoDatasetConfig:
    """A validated ``dataset.demo`` section with ``values`` set (defaults from the schema)."""
    return DemoDatasetConfig.from_dict(validate_config({"dataset": {"demo": values}})["dataset"]["demo"])


def generate(out_dir, **values):
    """The demo dataset in ``out_dir``: ``manifest.csv`` beside the ``images`` folder."""
    return generate_demo_dataset(demo_settings(**values), out_dir / "manifest.csv", out_dir / "images")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("demo")
    frame = generate(out_dir, n_images=205, image_size=32, seed=7, test_fraction=0.2)
    return out_dir, frame


def test_classes():
    assert len(DEMO_CLASSES) >= 8 and len(set(DEMO_CLASSES)) == len(DEMO_CLASSES)


def test_manifest_columns_and_files(demo):
    out_dir, frame = demo
    assert list(frame.columns) == ["path", "label", "split", *DEMO_ATTRIBUTES]
    assert len(frame) == 205
    assert frame["path"].iloc[0] == "images/00000.png"
    on_disk = pd.read_csv(out_dir / "manifest.csv")
    assert list(on_disk.columns) == list(frame.columns)
    pd.testing.assert_frame_equal(on_disk, frame, check_dtype=False)
    for path in frame["path"].iloc[:5]:
        image = load_image(out_dir / path)
        assert image.shape == (32, 32, 3)


def test_class_balance_and_stratified_split(demo):
    _, frame = demo
    counts = frame["label"].value_counts()
    assert set(counts.index) == set(DEMO_CLASSES)
    assert counts.max() - counts.min() <= 1
    assert set(frame["split"]) == {"train", "test"}
    per_class_test = frame[frame["split"] == "test"].groupby("label").size()
    expected = (counts * 0.2).round().astype(int)
    pd.testing.assert_series_equal(
        per_class_test.sort_index(), expected.sort_index(), check_names=False
    )


def test_attribute_ranges(demo):
    _, frame = demo
    assert set(frame["colour"]) <= set(COLOUR_NAMES)
    assert set(frame["background"]) <= set(BACKGROUNDS)
    assert frame["hue"].between(0, 360).all()
    assert frame["rotation"].between(0, 360).all()
    assert frame["shape_size"].between(0.3, 0.75).all()
    assert frame["clutter"].between(0, 3).all()
    assert frame["clutter"].dtype.kind == "i"
    half = frame["shape_size"] / 2
    assert (frame["pos_x"] >= half - 1e-9).all() and (frame["pos_x"] <= 1 - half + 1e-9).all()
    assert (frame["pos_y"] >= half - 1e-9).all() and (frame["pos_y"] <= 1 - half + 1e-9).all()
    assert [hue_to_colour(h) for h in frame["hue"]] == list(frame["colour"])


def test_hue_bins():
    assert hue_to_colour(0) == hue_to_colour(355) == "red"
    assert hue_to_colour(30) == "orange"
    assert hue_to_colour(120) == "green"
    assert hue_to_colour(230) == "blue"
    assert hue_to_colour(300) == "pink"


@pytest.mark.parametrize("shape", ["circle", "square", "hexagon", "star", "diamond", "cross"])
def test_recorded_factors_match_pixels(shape):
    # The pixel at the recorded centre belongs to the shape (clutter is drawn
    # behind it), so its hue is the recorded hue.
    for seed in range(5):
        image, factors = render_demo_image(np.random.default_rng(seed), shape, 64)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        x = min(int(factors["pos_x"] * 64), 63)
        y = min(int(factors["pos_y"] * 64), 63)
        hue = colorsys.rgb_to_hsv(*(image[y, x] / 255.0))[0] * 360
        difference = abs((hue - factors["hue"] + 180) % 360 - 180)
        assert difference < 4, (shape, seed, hue, factors)


def test_ring_has_a_hole():
    image, factors = render_demo_image(np.random.default_rng(0), "ring", 64)
    x, y = int(factors["pos_x"] * 64), int(factors["pos_y"] * 64)
    hue = colorsys.rgb_to_hsv(*(image[y, x] / 255.0))
    assert not (abs((hue[0] * 360 - factors["hue"] + 180) % 360 - 180) < 4 and hue[1] > 0.6)


def test_unknown_shape():
    with pytest.raises(ValueError, match="valid: circle"):
        render_demo_image(np.random.default_rng(0), "blob", 32)


def test_same_seed_same_bytes_different_seed_differs(tmp_path, demo):
    out_dir, frame = demo
    again = generate(tmp_path / "again", n_images=205, image_size=32, seed=7)
    pd.testing.assert_frame_equal(again, frame)
    for path in frame["path"]:
        assert (out_dir / path).read_bytes() == (tmp_path / "again" / path).read_bytes()
    assert (out_dir / "manifest.csv").read_bytes() == (tmp_path / "again" / "manifest.csv").read_bytes()

    other = generate(tmp_path / "other", n_images=20, image_size=32, seed=8)
    differ = sum(
        (out_dir / p).read_bytes() != (tmp_path / "other" / p).read_bytes() for p in other["path"]
    )
    assert differ == 20
    assert not other["label"].equals(frame["label"].iloc[:20])


def test_each_image_comes_from_its_own_child_seed(demo):
    # Image i is rendered from SeedSequence(seed, spawn_key=(1, i)) alone, so
    # images can be generated in any order or in parallel.
    out_dir, frame = demo
    for i in (0, 17, 204):
        rng = np.random.default_rng(np.random.SeedSequence(7, spawn_key=(1, i)))
        image, factors = render_demo_image(rng, frame["label"].iloc[i], 32)
        np.testing.assert_array_equal(load_image(out_dir / frame["path"].iloc[i]), image)
        assert factors == {k: frame[k].iloc[i] for k in DEMO_ATTRIBUTES}


def test_images_vary(demo):
    out_dir, frame = demo
    stack = np.stack([load_image(out_dir / p) for p in frame["path"].iloc[:50]]).astype(float)
    assert stack.std(axis=0).mean() > 30  # not all the same picture
    assert len(set(frame["background"])) == len(BACKGROUNDS)
    assert set(frame["clutter"]) == {0, 1, 2, 3}


def test_build_manifest_reads_the_demo(demo):
    out_dir, frame = demo
    manifest, class_names = build_manifest("manifest", out_dir / "manifest.csv")
    assert class_names == sorted(DEMO_CLASSES)
    assert len(manifest) == len(frame)
    assert [class_names[i] for i in manifest["label"]] == list(frame["label"])
    assert manifest["path"].iloc[0] == os.path.abspath(out_dir / "images" / "00000.png")
    assert set(DEMO_ATTRIBUTES) <= set(manifest.columns)


def test_paths_are_relative_to_the_manifest_folder(tmp_path):
    # The images folder need not sit beside the manifest: paths are written
    # relative to the manifest's folder, and build_manifest resolves them there.
    frame = generate_demo_dataset(demo_settings(n_images=16, image_size=24, seed=3),
                                  tmp_path / "tables" / "demo.csv", tmp_path / "pixels" / "demo")
    assert frame["path"].iloc[0] == "../pixels/demo/00000.png"
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == ["demo.csv"]
    assert len(list((tmp_path / "pixels" / "demo").glob("*.png"))) == 16
    manifest, _ = build_manifest("manifest", tmp_path / "tables" / "demo.csv")
    assert manifest["path"].iloc[15] == str(tmp_path / "pixels" / "demo" / "00015.png")
    assert load_image(manifest["path"].iloc[15]).shape == (24, 24, 3)


def test_bad_arguments(tmp_path):
    # A section built without the validator still gets its values checked.
    good = demo_settings().to_dict()
    with pytest.raises(ValueError, match="dataset.demo.n_images"):
        generate_demo_dataset(DemoDatasetConfig(**{**good, "n_images": 0}),
                              tmp_path / "m.csv", tmp_path / "images")
    with pytest.raises(ValueError, match="dataset.demo.test_fraction"):
        generate_demo_dataset(DemoDatasetConfig(**{**good, "test_fraction": 1.5}),
                              tmp_path / "m.csv", tmp_path / "images")
    assert not (tmp_path / "m.csv").exists()
