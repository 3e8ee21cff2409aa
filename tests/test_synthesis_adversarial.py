"""FGSM against autograd, and an iterative targeted attack on a trained tiny model."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from convscope.config.sections import AdversarialConfig
from convscope.synthesis.adversarial import (_attack, attack_table, choose_targets, fgsm,
                                             iterative_targeted)
from conftest import h5_datasets
from synthesis_image_helpers import colour_images, random_pixel_model, trained_pixel_model

ADV = AdversarialConfig(n_images=6, seed=0, fgsm_epsilon=0.05, target="least_likely", steps=60,
                        step_size=0.02, epsilon=0.5, top_k=3)  # the class is a 0.3 colour shift


def test_fgsm_moves_every_pixel_by_epsilon_along_the_sign_of_the_gradient():
    model = random_pixel_model()
    pixels, labels = colour_images(4)  # interior: 0.2..0.8, no clipping at eps 0.05
    adversarial = fgsm(model, pixels, labels, 0.05)
    x = pixels.clone().requires_grad_(True)
    logits = model.inner((x - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1))
                         / torch.tensor([0.25, 0.2, 0.3]).view(1, 3, 1, 1))
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, labels, reduction="sum"), x)
    delta = adversarial - pixels
    moved = grad != 0
    assert moved.float().mean() > 0.9
    torch.testing.assert_close(delta[moved], 0.05 * torch.sign(grad[moved]), atol=1e-6, rtol=0)
    assert torch.all(delta[~moved] == 0)
    assert abs(float(delta.abs().max()) - 0.05) < 1e-6


def test_fgsm_stays_in_the_valid_pixel_range():
    model = random_pixel_model()
    pixels = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    adversarial = fgsm(model, pixels, torch.tensor([0, 1, 2]), 0.3)
    assert float(adversarial.min()) >= 0 and float(adversarial.max()) <= 1


def test_iterative_targeted_attack_reaches_its_target_on_a_trained_model():
    model = trained_pixel_model()
    pixels, labels = colour_images(6, seed=5)
    with torch.no_grad():
        assert torch.equal(model(pixels).argmax(1), labels)  # the model really learned it
    targets = choose_targets(model, pixels, "least_likely", ["r", "g", "b"])
    adversarial = iterative_targeted(model, pixels, targets, ADV)
    with torch.no_grad():
        assert torch.equal(model(adversarial).argmax(1), targets)
    assert float((adversarial - pixels).abs().max()) <= 0.5 + 1e-6
    named = choose_targets(model, pixels, "b", ["r", "g", "b"])
    assert torch.equal(named, torch.full((6,), 2))


def test_attack_table_and_reproducibility():
    model = trained_pixel_model()
    pixels, _ = colour_images(6, seed=5)
    first = _attack(model, pixels, ADV, ["r", "g", "b"])
    again = _attack(model, pixels, ADV, ["r", "g", "b"])
    for name in first:
        assert torch.equal(first[name]["pixels"], again[name]["pixels"])
    table = attack_table(first, {"fgsm": 0.05, "iterative": 0.5})
    assert table.loc[1, "success_rate"] == 1.0
    delta = (first["fgsm"]["pixels"] - pixels).flatten(1)
    np.testing.assert_allclose(table.loc[0, "mean_l2"], float(delta.norm(dim=1).mean()), rtol=1e-5)
    np.testing.assert_allclose(table.loc[0, "mean_linf"], 0.05, rtol=1e-5)


@pytest.mark.workflow
def test_synthesis_stages_on_the_tiny_run(tiny_run):
    """The four synthesis stages' files on the tiny run: shapes, ranges, summaries."""
    root = tiny_run / "results" / "synthesis"
    for stage in ("dream", "style", "adversarial", "fooling"):
        summary = json.loads((root / stage / "summary.json").read_text())
        assert summary["stage"] == f"synthesis_{stage}" and summary["figures"]
        for entry in summary["figures"] + summary.get("tables", []):
            assert (root / stage / entry["path"]).is_file(), entry
    dream = h5_datasets(root / "dream" / "dream.h5")
    assert dream["dreamed"].shape == dream["original"].shape == (2, 32, 32, 3)
    assert dream["dreamed"].dtype == np.uint8
    assert np.all(dream["layer_l2_after"] > dream["layer_l2_before"])
    assert len(list((root / "dream" / "images").glob("row-*.png"))) == 2
    losses = pd.read_csv(root / "style" / "losses.csv")
    assert len(losses) == 5 and (losses.iloc[-1, 1:] < losses.iloc[0, 1:]).all()
    table = pd.read_csv(root / "adversarial" / "table.csv")
    assert list(table["attack"]) == ["fgsm", "iterative"] and (table["images"] == 3).all()
    assert table["success_rate"].between(0, 1).all()
    assert (table["mean_linf"] <= table["epsilon"] + 1e-6).all()
    adv = h5_datasets(root / "adversarial" / "adversarial.h5")
    assert np.abs(adv["fgsm/perturbation"]).max() <= 0.03 + 1e-6
    np.testing.assert_allclose(adv["fgsm/linf"].mean(), table.loc[0, "mean_linf"], rtol=1e-6)
    assert len(list((root / "adversarial" / "panels").glob("*.png"))) == 3
    fooling = pd.read_csv(root / "fooling" / "table.csv")
    assert list(fooling["class_id"]) == list(range(10))
    assert fooling["confidence"].between(0, 1).all()
    assert (fooling["reached"] == (fooling["confidence"] >= 0.99)).all()
    assert (fooling["steps"] <= 20).all()
