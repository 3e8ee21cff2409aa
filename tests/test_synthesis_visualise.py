"""Class and unit images: target choice, errors that name the key, files, reproducibility."""

import json

import h5py
import numpy as np
import pytest
import torch

from convscope.data.manifest import classes_path
from convscope.nn.models import load_model
from convscope.store.h5 import write_h5
from convscope.synthesis.units import run_unit_visualisation
from convscope.synthesis.visualise import (resolve_classes, resolve_units,
                                           run_class_visualisation)
from conftest import h5_datasets
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
        runs.append(h5_datasets(out / "images.h5"))
    a, b = runs
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert a["images"].shape == (2, 16, 16, 3) and a["images"].dtype == np.uint8
    assert [n.decode() for n in a["class_name"]] == ["circle", "star"]
    model = load_model(model_cfg, weights)
    x = torch.from_numpy(a["images"]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        out = model((x - 0.5) / 0.25)
        logits = out[[0, 1], list(a["class_id"])].numpy()
        grey = model(torch.zeros(2, 3, 16, 16))[[0, 1], list(a["class_id"])].numpy()
    assert np.all(logits > grey)
    # the gate: the own-class probability of the stored image, by plain torch, vs the goal 0.9
    probs = out.softmax(1)[[0, 1], list(a["class_id"])].numpy()
    np.testing.assert_allclose(a["quality/achieved"], probs, rtol=1e-5)
    assert a["quality/converged"].tolist() == (probs >= 0.9).tolist()
    assert summary["quality"][0]["kind"] == "class"


def _fake_dataset(folder, dead, best):
    """A stats.csv marking ``dead`` (layer, channel) units and one shard whose
    ``layers/<name>/mean`` maximum over images is ``best[layer]``."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"layer": layer, "channel": c, "dead": (layer, c) in dead}
            for layer, values in best.items() for c in range(len(values))]
    pd.DataFrame(rows).to_csv(folder / "stats.csv", index=False)
    datasets = {}
    for layer, values in best.items():
        values = np.asarray(values, np.float32)
        datasets[f"layers/{layer}/mean"] = np.stack([values, values / 2, np.zeros_like(values)])
        datasets[f"layers/{layer}/max"] = np.stack([values * 3] * 3)
    write_h5(folder / "shard-00000.h5", datasets, {"layer_names": json.dumps(list(best))})
    return folder / "stats.csv", [folder / "shard-00000.h5"]


def _plain_objective(model, layer, channel, images_uint8):
    """The mean of ``layer`` channel ``channel`` over the stored images, by a hand-written
    forward pass of the demo CNN (independent of the synthesis code)."""
    x = torch.from_numpy(images_uint8.astype(np.float32) / 255).permute(0, 3, 1, 2)
    x = (x - 0.5) / 0.25
    with torch.no_grad():
        a = model.relu1(model.bn1(model.conv1(x)))
        if layer == "relu4":
            a = model.pool1(a)
            a = model.pool2(model.relu2(model.bn2(model.conv2(a))))
            a = model.pool3(model.relu3(model.bn3(model.conv3(a))))
            a = model.relu4(model.bn4(model.conv4(a)))
    return a[torch.arange(len(channel)), torch.as_tensor(channel)].flatten(1).mean(1).numpy()


def test_unit_images_of_a_whole_layer_in_batches(tmp_path):
    model_cfg, preprocess, synthesis = sections(visualisation={
        "steps": 20, "learning_rate": 0.1, "units": {"relu1": "all", "relu4": [3, 1]},
        "units_per_layer": 5, "batch_size": 8, "parametrisation": "pixels", "decorrelate": False,
        "transforms": False, "blur_every": 5, "clip_norm_percentile": 5})
    weights = demo_weights(tmp_path / "w.pt")
    # relu1 channel 5 is dead; relu4 channel 1's dataset best is out of reach
    best = {"relu1": np.full(32, 0.05), "relu4": np.r_[np.full(1, 0.0), 1e6, np.zeros(126)]}
    stats, shards = _fake_dataset(tmp_path / "data", {("relu1", 5)}, best)
    out = tmp_path / "units"
    summary = run_unit_visualisation(model_cfg, weights, preprocess, synthesis.visualisation,
                                     "cpu", 0, ["relu1"], stats_csv=stats, shard_paths=shards,
                                     images_h5=out / "images.h5",
                                     curves_png=out / "curves.png", png_dir=out / "png",
                                     summary_json=out / "summary.json")
    with h5py.File(out / "images.h5") as f:
        data = {k: f[k][()] for k in ("images", "curves", "layer", "channel")}
        quality = {k: f["quality"][k][()] for k in f["quality"]}
        dead = [(l.decode(), int(c)) for l, c in zip(f["dead/layer"][()], f["dead/channel"][()])]
    # "all": every one of relu1's 32 channels but the dead one (units_per_layer bounds only
    # the default)
    alive = [c for c in range(32) if c != 5]
    assert dead == [("relu1", 5)]
    assert [l.decode() for l in data["layer"]] == ["relu1"] * 31 + ["relu4"] * 2
    assert data["channel"].tolist() == [*alive, 3, 1]
    assert data["curves"].shape == (33, 20) and data["images"].shape == (33, 16, 16, 3)
    assert sorted(summary["units"]["relu1"], key=int) == [str(c) for c in alive]
    for layer, channels in summary["units"].items():
        for entries in channels.values():
            assert (out / entries[0]["path"]).is_file()
    # the gate: the objective of the stored uint8 image, recomputed by hand, against the
    # dataset best (the shard's maximum over images)
    model = load_model(model_cfg, weights).eval()
    expected = np.r_[_plain_objective(model, "relu1", alive, data["images"][:31]),
                     _plain_objective(model, "relu4", [3, 1], data["images"][31:])]
    np.testing.assert_allclose(quality["achieved"], expected, rtol=1e-4, atol=1e-6)
    reference = np.r_[np.full(31, 0.05), 0.0, 1e6]
    np.testing.assert_allclose(quality["reference"], reference)
    assert quality["converged"].tolist() == (expected > reference).tolist()
    assert not quality["converged"][-1]  # relu4 channel 1 cannot reach 1e6
    groups = summary["quality"][0]
    statuses = [r["status"] for r in groups["results"]]
    assert statuses[-1].startswith("dead") and "did not converge" in statuses
    assert statuses.index("did not converge") > max(
        i for i, s in enumerate(statuses) if s == "converged")
    caption = summary["units"]["relu4"]["1"][0]["caption"]
    assert caption.startswith("optimisation did not converge") and "1e+06" in caption
    started = data["curves"][:, 0] > 0
    assert started.sum() >= 4 and np.all(data["curves"][started, -1] > data["curves"][started, 0])
