"""Invariance curves (Zeiler & Fergus Fig. 5) against independent computations."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from convscope.config.sections import InvarianceConfig, PreprocessConfig
from convscope.explain.invariance import (invariance_curves, normalised_distances,
                                          transform_amounts)
from convscope.explain.transforms import transform_image

PRE = PreprocessConfig(input_size=16, channels=3, resize=None, crop="center",
                       mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(4, 5, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)).eval()


def images(n=2, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def numpy_input(image: np.ndarray) -> torch.Tensor:
    x = (image.astype(np.float32) / 255.0 - 0.5) / 0.25
    return torch.from_numpy(x.transpose(2, 0, 1)[None].copy())


def section(**kw):
    values = dict(n_images=2, seed=0, layers=None, translate_px=[-3, 3], scale=[0.8, 1.2],
                  rotation_degrees=[-90, 90], amounts_per_transform=3)
    values.update(kw)
    return InvarianceConfig(**values)


def test_amounts_are_the_sweep_plus_the_identity():
    amounts = transform_amounts(section(amounts_per_transform=2))
    assert amounts["vertical_translation"].tolist() == [-3, 0, 3]
    assert amounts["scale"].tolist() == [0.8, 1.0, 1.2]
    assert amounts["rotation"].tolist() == [-90, 0, 90]


def test_identity_transforms_give_zero_distance_and_the_original_probability():
    model, imgs = tiny_model(), images()
    curves = invariance_curves(model, imgs, [7, 9], [1, -1], ["1", "3"],
                               transform_amounts(section()), PRE, 4, torch.device("cpu"))
    assert len(curves) == 2 * 3 * 3 * 2
    identity = curves[((curves["transform"] == "scale") & (curves["amount"] == 1.0))
                      | ((curves["transform"] != "scale") & (curves["amount"] == 0.0))]
    assert len(identity) == 2 * 3 * 2
    assert np.all(identity["distance"] == 0.0)
    with torch.no_grad():
        probs = torch.softmax(model(numpy_input(imgs[0])), 1)[0, 1].item()
        top1 = int(model(numpy_input(imgs[1])).argmax())
    first = identity[identity["index"] == 7]
    np.testing.assert_allclose(first["probability"], probs, rtol=1e-5)
    assert set(curves.loc[curves["index"] == 9, "target"]) == {top1}
    assert not curves.loc[curves["index"] == 9, "target_is_label"].any()
    others = curves.drop(identity.index)
    assert (others["distance"] > 0).all()


def test_translation_distance_matches_numpy():
    model, image = tiny_model(), images(1)[0]
    curves = invariance_curves(model, [image], [0], [2], ["1", "3"],
                               {"vertical_translation": np.array([3.0])}, PRE, 8,
                               torch.device("cpu"))
    # independent: shift down by 3 rows, the top rows in the image's mean colour
    shifted = np.empty_like(image)
    shifted[3:] = image[:-3]
    shifted[:3] = np.round(image.reshape(-1, 3).mean(axis=0)).astype(np.uint8)
    np.testing.assert_array_equal(transform_image(image, "vertical_translation", 3), shifted)
    feats = {}
    with torch.no_grad():
        for name, x in (("orig", numpy_input(image)), ("moved", numpy_input(shifted))):
            a = x
            outs = []
            for i, layer in enumerate(model):
                a = layer(a)
                outs.append(a.numpy().ravel().astype(np.float64))
            feats[name] = outs
            if name == "moved":
                prob = torch.softmax(a, 1)[0, 2].item()
    for layer in ("1", "3"):
        o, m = feats["orig"][int(layer)], feats["moved"][int(layer)]
        expected = np.sqrt(((m - o) ** 2).sum()) / np.sqrt((o ** 2).sum())
        got = curves.loc[curves["layer"] == layer, "distance"].item()
        assert got == pytest.approx(expected, rel=1e-5)
    assert curves["probability"].iloc[0] == pytest.approx(prob, rel=1e-5)


def test_distance_of_an_all_zero_original_is_nan():
    out = normalised_distances(torch.zeros(2, 3), torch.ones(4, 2, 3))
    assert out.shape == (4,) and np.isnan(out).all()
    np.testing.assert_allclose(normalised_distances(torch.tensor([3.0, 4.0]),
                                                    torch.tensor([[3.0, 4.0], [0.0, 0.0]])),
                               [0.0, 1.0])


def test_rotation_by_a_full_turn_and_scale_one_change_nothing_visible():
    image = images(1, size=15)[0]
    np.testing.assert_array_equal(transform_image(image, "scale", 1.0), image)
    turned = transform_image(image, "rotation", 90)
    # a 90 degree turn of an odd-sized image about its centre is a pure permutation of pixels
    np.testing.assert_array_equal(turned, np.rot90(image, 1))


def _summary_paths_exist(folder):
    import json

    summary = json.loads((folder / "summary.json").read_text())
    listed = [item["path"] for kind in ("figures", "tables") for item in summary.get(kind, [])]
    assert listed and all((folder / path).is_file() for path in listed), listed
    return summary


@pytest.mark.workflow
def test_workflow_writes_invariance_curves(tiny_run):
    from PIL import Image

    folder = tiny_run / "results" / "explain" / "invariance"
    curves = pd.read_csv(folder / "curves.csv")
    assert set(curves["layer"]) == {"relu1", "relu2", "relu3", "relu4"}
    # tiny_config: 2 images, 3 amounts over symmetric ranges (the identity is the middle one)
    assert len(curves) == 2 * 3 * 3 * 4 and curves["index"].nunique() == 2
    identity = (curves["amount"] == np.where(curves["transform"] == "scale", 1.0, 0.0))
    assert (curves.loc[identity, "distance"] == 0).all()
    assert (curves.loc[~identity, "distance"] > 0).all()
    assert curves["probability"].between(0, 1).all() and curves["target_is_label"].all()
    manifest = pd.read_csv(tiny_run / "results" / "manifest.csv").set_index("index")
    assert (manifest.loc[curves["index"], "label"].to_numpy() == curves["target"]).all()
    for name in ("vertical_translation", "scale", "rotation"):
        assert Image.open(folder / f"{name}.png").size[0] > 100
    assert _summary_paths_exist(folder)["stage"] == "explain_invariance"
