"""Paths inside a results folder are stored relative to it; the folder can move."""

import os
import shutil

import numpy as np
import pandas as pd

from convscope.data.manifest import read_manifest, write_manifest
from convscope.store.paths import resolved_paths, stored_paths


def test_paths_inside_the_root_are_stored_relative_with_slashes(tmp_path):
    root = tmp_path / "results"
    inside = root / "demo" / "images" / "00001.png"
    outside = tmp_path / "data" / "cat" / "a.png"
    assert stored_paths([inside, outside, str(root / "x.png")], root) == [
        "demo/images/00001.png", str(outside), "x.png"]
    # a sibling folder whose name starts like the root is outside it
    sibling = tmp_path / "results-old" / "a.png"
    assert stored_paths([sibling], root) == [str(sibling)]


def test_relative_input_paths_mean_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert stored_paths(["results/demo/a.png", "data/b.png"], "results") == [
        "demo/a.png", str(tmp_path / "data" / "b.png")]


def test_resolved_paths_join_relative_ones_to_the_root(tmp_path):
    root = tmp_path / "moved"
    assert resolved_paths(["demo/images/00001.png", "/data/cat/a.png"], root) == [
        os.path.join(str(root), "demo", "images", "00001.png"), os.path.normpath("/data/cat/a.png")]


def _manifest(paths):
    n = len(paths)
    return pd.DataFrame({"index": np.arange(n), "path": paths, "slot": -1, "label": 0,
                         "split": "all"})


def test_a_manifest_written_in_two_folders_is_the_same_and_moves(tmp_path):
    """The demo images live in the results folder: the CSV bytes do not depend on where."""
    outside = str(tmp_path / "data" / "b.png")
    written = []
    for name in ("run_a", "run_b"):
        results = tmp_path / name / "results"
        write_manifest(_manifest([str(results / "demo" / "a.png"), outside]), ["x"],
                       results / "manifest.csv")
        written.append((results / "manifest.csv").read_bytes())
    assert written[0] == written[1]
    assert pd.read_csv(tmp_path / "run_a" / "results" / "manifest.csv")["path"].tolist() == [
        "demo/a.png", outside]

    shutil.move(tmp_path / "run_a" / "results", tmp_path / "elsewhere")
    manifest, _ = read_manifest(tmp_path / "elsewhere" / "manifest.csv")
    assert manifest["path"].tolist() == [str(tmp_path / "elsewhere" / "demo" / "a.png"), outside]
