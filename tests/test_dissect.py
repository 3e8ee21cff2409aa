"""Network Dissection: thresholds and IoU against a brute-force per-image loop; bad masks."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from convscope.config.sections import DemoDatasetConfig, PreprocessConfig
from convscope.data.demo import generate_demo_dataset, write_demo_concepts
from convscope.data.images import load_image
from convscope.data.preprocess import to_model_input
from convscope.dissect.concepts import ConceptError, read_concepts
from convscope.dissect.dissection import dissect_layers
from convscope.dissect.iou import auc_scores
from convscope.nn.models import DemoCNN

PRE = PreprocessConfig(input_size=32, channels=3, resize=32, crop="center",
                       mean=[0.5] * 3, std=[0.25] * 3)
LAYERS = ["relu2", "relu4"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("dissect")
    cfg = DemoDatasetConfig.from_dict({"n_images": 10, "image_size": 32, "seed": 3,
                                      "test_fraction": 0.25})
    manifest = generate_demo_dataset(cfg, root / "manifest.csv", root / "images")
    write_demo_concepts(cfg, root / "concepts/index.csv", root / "concepts/labels.csv",
                        root / "concepts/masks")
    rows = pd.DataFrame({"index": np.arange(len(manifest)),
                         "path": [str(root / p) for p in manifest["path"]], "slot": -1})
    torch.manual_seed(0)
    model = DemoCNN().eval()
    return root, rows, model


def _brute_force(model, rows, concepts, quantile):
    """One image at a time: all activations kept, sorted for T_k; IoU with plain loops."""
    maps = {name: [] for name in LAYERS}
    for path in rows["path"]:
        # the model's input as the stage prepares it: the same per-image forward, so the
        # activations are the same floats and the thresholds can be compared tightly
        x = to_model_input([load_image(path)], PRE)
        kept = {}
        hooks = [model.get_submodule(n).register_forward_hook(
            lambda m, i, o, n=n: kept.__setitem__(n, o.detach())) for n in LAYERS]
        with torch.no_grad():
            model(x)
        for h in hooks:
            h.remove()
        for n in LAYERS:
            maps[n].append(kept[n][0])
    out = {}
    for n in LAYERS:
        stack = torch.stack(maps[n]).numpy()
        count, units, height, width = stack.shape
        k = math.ceil(Fraction(str(quantile)) * count * height * width)
        values = np.sort(stack.transpose(1, 0, 2, 3).reshape(units, -1), axis=1)[:, ::-1]
        thresholds = values[:, k - 1]
        inter = np.zeros((units, len(concepts.names)))
        unit_area = np.zeros((units, len(concepts.names)))
        label_area = np.zeros(len(concepts.names))
        for i, path in enumerate(rows["path"]):
            stem = path.rsplit("/", 1)[1][:-4]
            masks, annotated = concepts.masks(stem, (32, 32))
            up = F.interpolate(torch.from_numpy(stack[i])[None], size=(32, 32),
                               mode="bilinear", align_corners=False)[0].numpy()
            ids = sorted(masks)
            cat = np.array([c in annotated for c in concepts.categories])
            stack_masks = np.stack([masks[c] for c in ids]) if ids else None
            for u in range(units):
                active = up[u] > thresholds[u]
                unit_area[u, cat] += active.sum()
                if ids:
                    inter[u, ids] += (active[None] & stack_masks).sum(axis=(1, 2))
            if ids:
                label_area[ids] += stack_masks.sum(axis=(1, 2))
        union = unit_area + label_area - inter
        out[n] = thresholds, np.where(union > 0, inter / np.maximum(union, 1), 0.0), stack
    return out


@pytest.mark.parametrize("quantile", [0.005, 0.05])
def test_thresholds_and_iou_equal_brute_force(demo, quantile):
    root, rows, model = demo
    concepts = read_concepts(root / "concepts/index.csv", [p.rsplit("/", 1)[1][:-4]
                                                           for p in rows["path"]])
    # batches of one image: the thresholds are still streamed (merged over 10 batches)
    results, readable = dissect_layers(model, rows, concepts, PRE, LAYERS, quantile, 1,
                                       torch.device("cpu"))
    assert readable == list(range(len(rows)))
    expected = _brute_force(model, rows, concepts, quantile)
    for n in LAYERS:
        thresholds, iou, stack = expected[n]
        np.testing.assert_allclose(results[n].thresholds, thresholds, rtol=1e-6, atol=1e-7)  # float32
        np.testing.assert_allclose(results[n].iou, iou, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(results[n].image_max, stack.max(axis=(2, 3)), rtol=1e-5,
                                   atol=1e-6)
    if quantile >= 0.05:  # enough active pixels for some overlap: the check is not vacuous
        assert (results["relu4"].iou > 0).any() and (results["relu2"].iou > 0).any()


def test_demo_masks_are_the_drawn_shape(demo):
    root, rows, _ = demo
    index = pd.read_csv(root / "concepts/index.csv")
    labels = pd.read_csv(root / "concepts/labels.csv")
    manifest = pd.read_csv(root / "manifest.csv")
    for i in range(3):
        shape = np.asarray(Image.open(root / "concepts" / index["shape"][i]))
        colour = np.asarray(Image.open(root / "concepts" / index["colour"][i]))
        number = labels.set_index("name")["number"]
        assert set(np.unique(shape)) == {0, number[manifest["label"][i]]}
        assert set(np.unique(colour)) == {0, number[manifest["colour"][i]]}
        # the shape covers about shape_size^2 of the image (circle area pi/4 d^2 at most)
        assert 0.05 < (shape > 0).mean() < manifest["shape_size"][i] ** 2 * 1.01


def test_auc_equals_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=(40, 3)), 1)
    positive = rng.random(40) < 0.4
    expected = [roc_auc_score(positive, scores[:, j]) for j in range(3)]
    np.testing.assert_allclose(auc_scores(scores, positive), expected, rtol=1e-12)


def test_bad_masks(tmp_path):
    folder = tmp_path / "folders"
    (folder / "empty").mkdir(parents=True)
    with pytest.raises(ConceptError, match="holds no concept folder"):
        read_concepts(folder, ["a"])
    (folder / "dog").mkdir()
    Image.fromarray(np.ones((8, 16), np.uint8)).save(folder / "dog" / "a.png")
    Image.fromarray(np.ones((8, 8), np.uint8)).save(folder / "dog" / "zzz.png")
    concepts = read_concepts(folder, ["a"])
    assert concepts.names == ["dog"] and list(concepts.files) == ["a"]
    with pytest.raises(ConceptError, match="another aspect ratio"):
        concepts.masks("a", (8, 8))
    masks, _ = concepts.masks("a", (16, 32))  # same aspect: resized
    assert masks[0].shape == (16, 32) and masks[0].all()
    with pytest.raises(ConceptError, match="no mask .* belongs to an image"):
        read_concepts(folder, ["b"])
    index = tmp_path / "broden" / "index.csv"
    index.parent.mkdir()
    pd.DataFrame({"number": [1], "name": ["sky"], "category": ["object"]}).to_csv(
        index.parent / "labels.csv", index=False)
    pd.DataFrame({"image": ["a.jpg"], "object": ["missing.png"]}).to_csv(index, index=False)
    with pytest.raises(ConceptError, match="do not exist: .*missing.png"):
        read_concepts(index, ["a"])
    pd.DataFrame({"image": ["a.jpg"], "scene": ["x.png"]}).to_csv(index, index=False)
    with pytest.raises(ConceptError, match=r"column\(s\) scene of .* no category of labels.csv"):
        read_concepts(index, ["a"])
    with pytest.raises(ConceptError, match="does not exist"):
        read_concepts(tmp_path / "nowhere", ["a"])
