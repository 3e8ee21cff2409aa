"""Class and unit images: target choice, errors that name the key, files, reproducibility."""

import json

import h5py
import numpy as np
import pytest
import torch

from convscope.data.manifest import classes_path
from convscope.nn.models import load_model
from convscope.synthesis.visualise import (resolve_classes, resolve_units,
                                           run_class_visualisation, run_unit_visualisation)
from synthesis_helpers import demo_manifest, demo_weights, sections


def test_resolve_classes_and_units(tmp_path):
    assert resolve_classes("all", ["a", "b"], 3) == [0, 1, 2]
    assert resolve_classes(["b"], ["a", "b"], 2) == [1]
    with pytest.raises(ValueError, match="synthesis.visualisation.classes.*'c'.*a, b"):
        resolve_classes(["c"], ["a", "b"], 2)
    model_cfg, preprocess, _ = sections()
    model = load_model(model_cfg, demo_weights(tmp_path / "w.pt"))
    assert resolve_units(model, None, ["relu1", "relu2"], 3, preprocess) == {
        "relu1": [0, 1, 2], "relu2": [0, 1, 2]}
    assert resolve_units(model, {"relu4": [7, 127]}, [], 3, preprocess) == {"relu4": [7, 127]}
    assert resolve_units(model, {"relu1": "all"}, [], 3, preprocess) == {"relu1": list(range(32))}
    with pytest.raises(ValueError, match="'relu1' has channels 0..31, not \\[32\\]"):
        resolve_units(model, {"relu1": [32]}, [], 3, preprocess)
    with pytest.raises(ValueError, match="synthesis.visualisation.units.*did you mean 'relu4'"):
        resolve_units(model, {"relu5": "all"}, [], 3, preprocess)


def test_class_images_raise_their_logits_and_files_are_reproducible(tmp_path):
    model_cfg, preprocess, synthesis = sections(visualisation={
        "steps": 25, "learning_rate": 0.1, "classes": ["circle", "star"], "batch_size": 1})
    weights, manifest = demo_weights(tmp_path / "w.pt"), demo_manifest(tmp_path)
    runs = []
    for run in ("a", "b"):
        out = tmp_path / run
        summary = run_class_visualisation(
            model_cfg, weights, preprocess, synthesis.visualisation, "cpu", 0,
            classes_path(manifest), images_h5=out / "images.h5", curves_png=out / "curves.png",
            grid_png=out / "grid.png", png_dir=out / "png", summary_json=out / "summary.json")
        assert json.loads((out / "summary.json").read_text()) == summary
        assert all((out / fig["path"]).is_file() for fig in summary["figures"])
        with h5py.File(out / "images.h5") as f:
            runs.append({k: f[k][()] for k in f})
    a, b = runs
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert a["images"].shape == (2, 16, 16, 3) and a["images"].dtype == np.uint8
    assert [n.decode() for n in a["class_name"]] == ["circle", "star"]
    model = load_model(model_cfg, weights)
    x = torch.from_numpy(a["images"]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        logits = model((x - 0.5) / 0.25)[[0, 1], list(a["class_id"])].numpy()
        grey = model(torch.zeros(2, 3, 16, 16))[[0, 1], list(a["class_id"])].numpy()
    assert np.all(logits > grey)


def test_unit_images_of_a_whole_layer_in_batches(tmp_path):
    model_cfg, preprocess, synthesis = sections(visualisation={
        "steps": 20, "learning_rate": 0.1, "units": {"relu1": "all", "relu4": [3, 1]},
        "units_per_layer": 5, "batch_size": 8, "parametrisation": "pixels", "decorrelate": False,
        "transforms": False, "blur_every": 5, "clip_norm_percentile": 5})
    weights = demo_weights(tmp_path / "w.pt")
    out = tmp_path / "units"
    summary = run_unit_visualisation(model_cfg, weights, preprocess, synthesis.visualisation,
                                     "cpu", 0, ["relu1"], images_h5=out / "images.h5",
                                     curves_png=out / "curves.png", png_dir=out / "png",
                                     summary_json=out / "summary.json")
    with h5py.File(out / "images.h5") as f:
        data = {k: f[k][()] for k in f}
    # "all": every one of relu1's 32 channels (units_per_layer bounds only the default)
    assert [l.decode() for l in data["layer"]] == ["relu1"] * 32 + ["relu4"] * 2
    assert data["channel"].tolist() == [*range(32), 3, 1]
    assert data["curves"].shape == (34, 20) and data["images"].shape == (34, 16, 16, 3)
    assert sorted(summary["units"]["relu1"], key=int) == [str(c) for c in range(32)]
    for layer, channels in summary["units"].items():
        for entries in channels.values():
            assert (out / entries[0]["path"]).is_file()
    alive = data["curves"][:, 0] > 0
    assert alive.sum() >= 4 and np.all(data["curves"][alive, -1] > data["curves"][alive, 0])
