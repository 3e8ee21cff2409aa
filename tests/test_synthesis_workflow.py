"""The synthesis stages in the tiny end-to-end run: files, shapes, ranges, summaries."""

import json

import numpy as np
import pytest

from conftest import h5_datasets

pytestmark = pytest.mark.workflow


def _summary(folder):
    summary = json.loads((folder / "summary.json").read_text())
    for figure in summary["figures"]:
        assert (folder / figure["path"]).is_file(), figure
    for channels in summary.get("units", {}).values():
        for entries in channels.values():
            assert all((folder / entry["path"]).is_file() for entry in entries)
    return summary


def test_synthesis_stages_in_the_tiny_run(tiny_run):
    results = tiny_run / "results" / "synthesis"
    classes = h5_datasets(results / "classes" / "images.h5")
    assert classes["images"].shape == (2, 32, 32, 3) and classes["images"].dtype == np.uint8
    assert [n.decode() for n in classes["class_name"]] == ["circle", "square"]
    assert classes["curves"].shape == (2, 8) and np.all(np.isfinite(classes["curves"]))
    assert np.all((0 <= classes["probability"]) & (classes["probability"] <= 1))
    assert _summary(results / "classes")["stage"] == "synthesis_classes"

    units = h5_datasets(results / "units" / "images.h5")
    # relu1: all = every one of its 32 channels, optimised batch_size at a time
    assert [l.decode() for l in units["layer"]] == ["relu2"] * 3 + ["relu1"] * 32
    assert units["channel"].tolist() == [0, 1, 2, *range(32)]
    assert units["images"].shape == (35, 32, 32, 3) and units["curves"].shape == (35, 8)
    summary = _summary(results / "units")
    assert sorted(summary["units"]) == ["relu1", "relu2"]
    assert sorted(summary["units"]["relu1"], key=int) == [str(c) for c in range(32)]

    inversion = h5_datasets(results / "inversion" / "inversion.h5")
    assert inversion["reconstructions"].shape == (2, 2, 32, 32, 3)
    assert inversion["loss"].shape == (2, 2, 8)
    assert np.all(inversion["loss"][..., -1] < inversion["loss"][..., 0])
    assert _summary(results / "inversion")["stage"] == "synthesis_inversion"

    evolution = h5_datasets(results / "evolution" / "evolution.h5")
    # the tiny run trains 2 epochs and keeps epoch 1: checkpoints epoch-001 and the final weights
    assert [p.decode() for p in evolution["checkpoints"]] == [
        "results/model/checkpoints/epoch-001.pt", "results/model/demo_model.pt"]
    assert evolution["unit_images"].shape == (2, 2, 32, 32, 3)
    assert np.all(evolution["top_box"][..., 2] > evolution["top_box"][..., 0])
    checkpoint = tiny_run / "results" / "model" / "checkpoints" / "epoch-001.pt"
    assert checkpoint.read_bytes()[:2] == b"PK"  # a torch zip archive
    summary = _summary(results / "evolution")
    assert sorted(summary["units"]) == ["relu3", "relu4"]
    for name in ("synthesis_classes", "synthesis_units", "synthesis_inversion",
                 "synthesis_evolution"):
        assert (tiny_run / "results" / "benchmarks" / f"{name}.tsv").is_file()
