"""Feature inversion: the loss falls, the identity beats a random image, seeded runs agree."""

import json

import numpy as np
import torch

from convscope.nn.models import load_model
from convscope.synthesis.images import sample_images
from convscope.synthesis.inversion import feature_loss, invert, layer_features, run_inversion
from conftest import h5_datasets
from synthesis_helpers import demo_manifest, demo_weights, sections


def _model_and_images(tmp_path):
    model_cfg, preprocess, synthesis = sections(inversion={"steps": 40, "n_images": 3})
    weights = demo_weights(tmp_path / "w.pt")
    model = load_model(model_cfg, weights).requires_grad_(False)
    _, images = sample_images(demo_manifest(tmp_path), 3, 0, preprocess)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return model, preprocess, synthesis, x


def test_feature_loss_is_the_normalised_squared_distance(tmp_path):
    model, preprocess, _, x = _model_and_images(tmp_path)
    target = layer_features(model, "relu2", x, preprocess)
    other = torch.rand_like(x)
    with torch.no_grad():
        acts = {}
        handle = model.relu2.register_forward_hook(lambda m, i, o: acts.__setitem__("o", o))
        model((other - 0.5) / 0.25)
        handle.remove()
    phi, phi0 = acts["o"].numpy().reshape(3, -1), target.numpy().reshape(3, -1)
    expected = ((phi - phi0) ** 2).sum(1) / (phi0 ** 2).sum(1)
    assert np.allclose(feature_loss(model, "relu2", other, target, preprocess), expected,
                       rtol=1e-5)
    assert np.allclose(feature_loss(model, "relu2", x, target, preprocess), 0.0)


def test_inversion_lowers_the_feature_loss_below_a_random_images(tmp_path):
    model, preprocess, synthesis, x = _model_and_images(tmp_path)
    cfg = synthesis.inversion
    for layer in ("relu1", "relu3"):
        result = invert(model, layer, x, cfg, preprocess=preprocess, seed=0, device="cpu")
        loss = -result.curves
        assert loss.shape == (3, cfg.steps)
        assert np.all(loss[:, -1] < 0.5 * loss[:, 0])
        target = layer_features(model, layer, x, preprocess)
        rebuilt = torch.from_numpy(result.images).permute(0, 3, 1, 2)
        final = feature_loss(model, layer, rebuilt, target, preprocess)
        random = feature_loss(model, layer, torch.rand_like(x), target, preprocess)
        identity = feature_loss(model, layer, x, target, preprocess)
        assert np.all(identity < random) and np.all(final < random)
        again = invert(model, layer, x, cfg, preprocess=preprocess, seed=0, device="cpu")
        assert np.array_equal(again.images, result.images)


def test_run_inversion_writes_its_files_reproducibly(tmp_path):
    model_cfg, preprocess, synthesis = sections(inversion={"steps": 5, "n_images": 2,
                                                           "layers": ["relu1", "relu4"]})
    weights, manifest = demo_weights(tmp_path / "w.pt"), demo_manifest(tmp_path)
    outputs = []
    for run in ("a", "b"):
        out = tmp_path / run
        summary = run_inversion(model_cfg, weights, preprocess, synthesis.inversion, "cpu", 7,
                                manifest, ["relu2"], inversion_h5=out / "inversion.h5",
                                figure_png=out / "inversion.png",
                                summary_json=out / "summary.json")
        assert json.loads((out / "summary.json").read_text()) == summary
        assert (out / summary["figures"][0]["path"]).is_file()
        outputs.append(h5_datasets(out / "inversion.h5"))
    a, b = outputs
    assert a["reconstructions"].shape == (2, 2, 16, 16, 3)
    assert a["originals"].shape == (2, 16, 16, 3) and a["loss"].shape == (2, 2, 5)
    assert [s.decode() for s in a["layers"]] == ["relu1", "relu4"]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # the gate, on the stored uint8 reconstruction: relu1's relative feature distance by a
    # hand-written forward pass, against half a random image's
    model = load_model(model_cfg, weights).eval()

    def relu1(images):
        x = (torch.from_numpy(images.astype(np.float32) / 255).permute(0, 3, 1, 2) - 0.5) / 0.25
        with torch.no_grad():
            return model.relu1(model.bn1(model.conv1(x))).flatten(1)

    target, recon = relu1(a["originals"]), relu1(a["reconstructions"][0])
    distance = ((recon - target).pow(2).sum(1) / target.pow(2).sum(1)).numpy()
    np.testing.assert_allclose(a["quality/achieved"][:2], distance, rtol=1e-4)
    assert a["quality/converged"].tolist() == (
        a["quality/achieved"] <= 0.5 * a["feature_loss_random"].reshape(-1)).tolist()
    assert summary["quality"][0]["kind"] == "inversion"
