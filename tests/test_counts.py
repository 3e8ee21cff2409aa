"""Counts larger than the dataset are clipped with one warning naming the key."""

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from convscope.config import ModelConfig, validate_config
from convscope.config.counts import clip_count
from convscope.config.sections import InvarianceConfig, PreprocessConfig
from convscope.data.manifest import write_manifest
from convscope.explain.invariance import TRANSFORMS, run_explain_invariance
from convscope.explain.sample import read_sample
from convscope.nn.models import DemoCNN


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_clip_count_keeps_a_count_that_fits_silently(caplog):
    with caplog.at_level(logging.WARNING):
        assert clip_count("explain.invariance.n_images", 4, 4) == 4
        assert clip_count("explain.invariance.n_images", 0, 2) == 0
    assert _warnings(caplog) == []


def test_clip_count_clips_with_one_warning_naming_the_key(caplog):
    with caplog.at_level(logging.WARNING):
        assert clip_count("synthesis.dream.n_images", 4, 2, "readable images") == 2
        assert clip_count("explain.keypoints.n_pairs", 20, -1, "pairs") == 0
    assert _warnings(caplog) == [
        "config key 'synthesis.dream.n_images' is 4 but only 2 readable images are available; "
        "using 2",
        "config key 'explain.keypoints.n_pairs' is 20 but only 0 pairs are available; using 0"]


def _rows(tmp_path, n_good: int, n_bad: int) -> pd.DataFrame:
    """Manifest-like rows: ``n_good`` readable PNGs, then ``n_bad`` files that are not images."""
    paths = []
    for i in range(n_good + n_bad):
        path = tmp_path / f"{i}.png"
        if i < n_good:
            Image.fromarray(np.full((8, 8, 3), 10 * i, np.uint8)).save(path)
        else:
            path.write_text("not an image")
        paths.append(str(path))
    return pd.DataFrame({"index": np.arange(len(paths)), "path": paths, "slot": -1,
                         "label": 0, "split": "all"})


def test_read_sample_uses_every_readable_image_when_fewer_than_asked(tmp_path, caplog):
    rows = _rows(tmp_path, n_good=2, n_bad=1)
    with caplog.at_level(logging.WARNING):
        chosen, images = read_sample(rows, 5, seed=0, key="explain.invariance.n_images")
    assert sorted(chosen["index"]) == [0, 1] and len(images) == 2
    assert all(image.shape == (8, 8, 3) for image in images)
    clipped = [m for m in _warnings(caplog) if "is 5 but only 2" in m]
    assert clipped == ["config key 'explain.invariance.n_images' is 5 but only 2 readable "
                       "images are available; using 2"]


def test_read_sample_stops_below_its_minimum_naming_the_key(tmp_path):
    rows = _rows(tmp_path, n_good=1, n_bad=2)
    with pytest.raises(ValueError, match="'explain.keypoints.n_pairs': at least 2 readable"):
        read_sample(rows, 4, seed=0, key="explain.keypoints.n_pairs", minimum=2)


def test_invariance_on_two_images_with_n_images_4_clips_and_runs(tmp_path, caplog):
    """The new user's case: a 2-image dataset and the default explain.invariance.n_images."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(paths[-1])
    manifest = pd.DataFrame({"index": [0, 1], "path": [str(p) for p in paths], "slot": -1,
                             "label": [0, 1], "split": "all"})
    write_manifest(manifest, ["a", "b"], tmp_path / "manifest.csv")
    torch.manual_seed(0)
    torch.save(DemoCNN(num_classes=2).state_dict(), tmp_path / "demo.pt")
    config = validate_config({"model": {"kind": "demo", "weights": str(tmp_path / "demo.pt")}})
    section = InvarianceConfig.from_dict(config["explain"]["invariance"])
    assert section.n_images == 4  # the default this test is about
    section = InvarianceConfig.from_dict({**config["explain"]["invariance"], "amounts_per_transform": 2})
    preprocess = PreprocessConfig(input_size=32, channels=3, resize=None, crop="center",
                                  mean=[0.5] * 3, std=[0.25] * 3)
    figures = {kind: str(tmp_path / f"{kind}.png") for kind in TRANSFORMS}
    with caplog.at_level(logging.WARNING):
        run_explain_invariance(ModelConfig.from_dict(config["model"]), tmp_path / "demo.pt",
                               section, preprocess, ["relu2"], tmp_path / "manifest.csv",
                               device="cpu", batch_size=4, curves_csv=str(tmp_path / "c.csv"),
                               figures=figures, summary_json=str(tmp_path / "summary.json"))
    assert [m for m in _warnings(caplog) if "n_images" in m] == [
        "config key 'explain.invariance.n_images' is 4 but only 2 usable images are available; "
        "using 2"]
    curves = pd.read_csv(tmp_path / "c.csv")
    assert sorted(curves["index"].unique()) == [0, 1]
