"""The synthesis stages in the tiny end-to-end run: files, shapes, ranges, summaries."""

import json

import numpy as np
import pandas as pd
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
    # relu1: all = every one of its 32 channels, optimised batch_size at a time, except the
    # units that never fire on the dataset (dead in stats.csv: listed, not optimised)
    stats = pd.read_csv(tiny_run / "results" / "units" / "stats.csv")
    dead = {(l, int(c)) for l, c, d in zip(stats["layer"], stats["channel"], stats["dead"]) if d}
    wanted = [("relu2", c) for c in range(3)] + [("relu1", c) for c in range(32)]
    drawn = [(l.decode(), int(c)) for l, c in zip(units["layer"], units["channel"])]
    assert drawn == [u for u in wanted if u not in dead]
    assert sorted(zip([l.decode() for l in units.get("dead/layer", [])],
                      units.get("dead/channel", np.zeros(0, int)).tolist())) == sorted(
        u for u in wanted if u in dead)
    assert units["images"].shape == (len(drawn), 32, 32, 3)
    assert units["curves"].shape == (len(drawn), 8)
    # the gate's reference: the highest per-image mean of the unit over the shards
    shards = sorted((tiny_run / "results" / "features").glob("shard-*.h5"))
    best = {layer: np.max(np.concatenate([h5_datasets(s)[f"layers/{layer}/mean"]
                                          for s in shards]), axis=0)
            for layer in ("relu1", "relu2")}
    np.testing.assert_allclose(units["quality/reference"], [best[l][c] for l, c in drawn],
                               rtol=1e-6)
    assert units["quality/converged"].tolist() == (
        units["quality/achieved"] > units["quality/reference"]).tolist()
    summary = _summary(results / "units")
    assert sorted(summary["units"]) == ["relu1", "relu2"]
    assert sorted(summary["units"]["relu1"], key=int) == [str(c) for l, c in drawn
                                                          if l == "relu1"]

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
