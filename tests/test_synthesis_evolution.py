"""Features across training: top images by brute force, the demo training's checkpoints,
the stage's files (and its note when there are no checkpoints)."""

import json

import h5py
import numpy as np
import pytest
import torch

from convscope.config import validate_config
from convscope.config.sections import TrainConfig
from convscope.nn.models import load_model
from convscope.nn.train import train_demo_model
from convscope.synthesis.checkpoints import demo_checkpoint_epochs, demo_checkpoint_paths
from convscope.synthesis.images import sample_images
from convscope.synthesis.evolution import parse_units, run_evolution, top_activations
from synthesis_helpers import demo_manifest, demo_weights, sections


def test_top_activations_equal_a_brute_force_search(tmp_path):
    model_cfg, preprocess, _ = sections()
    model = load_model(model_cfg, demo_weights(tmp_path / "w.pt"))
    _, images = sample_images(demo_manifest(tmp_path), 20, 0, preprocess)
    units = {"relu2": [0, 5, 9], "relu4": [3]}
    best = top_activations(model, images, units, preprocess, "cpu")
    for layer, chs in units.items():
        for k, c in enumerate(chs):
            found = (-np.inf, None, None, None)
            for n, image in enumerate(images):  # one image at a time, position by position
                x = (torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.25
                acts = {}
                module = dict(model.named_modules())[layer]
                handle = module.register_forward_hook(lambda m, i, o: acts.__setitem__("o", o))
                with torch.no_grad():
                    model(x)
                handle.remove()
                fmap = acts["o"][0, c].numpy()
                for y in range(fmap.shape[0]):
                    for xx in range(fmap.shape[1]):
                        if fmap[y, xx] > found[0]:
                            found = (fmap[y, xx], n, y, xx)
            image, value, ys, xs = (part[k] for part in best[layer])
            assert np.isclose(value, found[0], rtol=1e-5)
            assert (image, ys, xs) == found[1:]


def test_parse_units_and_defaults():
    assert parse_units(["relu3:5", "relu1:0", "relu3:2"], ["x"], 2) == {"relu3": [5, 2],
                                                                         "relu1": [0]}
    assert parse_units([], ["a", "b"], 2) == {"a": [0, 1], "b": [0, 1]}


def test_demo_checkpoint_epochs():
    assert demo_checkpoint_epochs({"epochs": 15, "checkpoint_epochs": None}) == [1, 4, 8]
    assert demo_checkpoint_epochs({"epochs": 2, "checkpoint_epochs": None}) == [1]
    assert demo_checkpoint_epochs({"epochs": 1, "checkpoint_epochs": None}) == []
    assert demo_checkpoint_paths({"epochs": 5, "checkpoint_epochs": [3, 1, 3]}) == [
        "results/model/checkpoints/epoch-001.pt", "results/model/checkpoints/epoch-003.pt"]
    with pytest.raises(ValueError, match="model.train.checkpoint_epochs.*come after"):
        demo_checkpoint_epochs({"epochs": 2, "checkpoint_epochs": [1, 4]})


def test_checkpoints_leave_the_final_weights_unchanged(tmp_path):
    manifest = demo_manifest(tmp_path, n_images=40)
    _, preprocess, _ = sections()
    train = TrainConfig.from_dict(validate_config(
        {"model": {"train": {"epochs": 2, "batch_size": 8, "seed": 5}}})["model"]["train"])
    train_demo_model(manifest, train, preprocess, tmp_path / "a.pt", tmp_path / "a.json")
    train_demo_model(manifest, train, preprocess, tmp_path / "b.pt", tmp_path / "b.json",
                     {1: tmp_path / "b-1.pt", 2: tmp_path / "b-2.pt"})
    plain, final = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in "ab")
    first, last = (torch.load(tmp_path / f"b-{e}.pt", weights_only=True) for e in (1, 2))
    assert all(torch.equal(plain[k], final[k]) for k in plain)
    assert all(torch.equal(last[k], final[k]) for k in final)
    assert not torch.equal(first["conv1.weight"], final["conv1.weight"])
    with pytest.raises(ValueError, match="outside 1..2"):
        train_demo_model(manifest, train, preprocess, tmp_path / "c.pt", tmp_path / "c.json",
                         {3: tmp_path / "c-3.pt"})


def test_run_evolution_writes_strips_reproducibly_and_a_note_without_checkpoints(tmp_path):
    model_cfg, preprocess, synthesis = sections(
        visualisation={"steps": 4}, evolution={"units": ["relu3:1", "relu4:0"],
                                               "n_images": 12})
    manifest = demo_manifest(tmp_path)
    checkpoints = [demo_weights(tmp_path / "early.pt", 0), demo_weights(tmp_path / "late.pt", 1)]
    results = []
    for run in ("a", "b"):
        out = tmp_path / run
        summary = run_evolution(model_cfg, preprocess, synthesis.evolution,
                                synthesis.visualisation, "cpu", 0, manifest, ["relu1"],
                                checkpoints, evolution_h5=out / "evolution.h5",
                                strips_dir=out / "strips", summary_json=out / "summary.json")
        assert json.loads((out / "summary.json").read_text()) == summary
        assert sorted(summary["units"]) == ["relu3", "relu4"]
        assert all((out / fig["path"]).is_file() for fig in summary["figures"])
        with h5py.File(out / "evolution.h5") as f:
            results.append({k: f[k][()] for k in f})
    a, b = results
    assert a["unit_images"].shape == (2, 2, 16, 16, 3) and a["top_box"].shape == (2, 2, 4)
    assert a["top_value"].shape == (2, 2) and a["top_images"].shape == (2, 2, 16, 16, 3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    summary = run_evolution(model_cfg, preprocess, synthesis.evolution, synthesis.visualisation,
                            "cpu", 0, manifest, ["relu1"], [], evolution_h5=tmp_path / "n.h5",
                            strips_dir=tmp_path / "n", summary_json=tmp_path / "n.json",
                            skip_reason="no checkpoints given")
    assert "no checkpoints given" in summary["caption"]
    assert (tmp_path / summary["figures"][0]["path"]).is_file()
