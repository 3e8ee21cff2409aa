"""Model building, checkpoint loading, layer names, model description, demo training."""

import hashlib
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from convscope.config import ModelConfig, validate_config
from convscope.config.sections import DemoDatasetConfig, PreprocessConfig, TrainConfig
from convscope.data.demo import generate_demo_dataset
from convscope.data.manifest import build_manifest, write_manifest
from convscope.nn.layers import LayerNameError, check_layer_names
from convscope.nn.model_info import describe_model, layer_output_shapes, write_model_info
from convscope.nn.models import (DemoCNN, ModelError, build_model, codes_module_name,
                                 load_checkpoint, load_model, model_identity)
from convscope.nn.train import train_demo_model


def model_cfg(**values) -> ModelConfig:
    """A validated model section with ``values`` set (defaults from the schema)."""
    return ModelConfig.from_dict(validate_config({"model": values})["model"])


def preprocess_cfg(**values) -> PreprocessConfig:
    """A validated preprocess section with ``values`` set (defaults from the schema)."""
    return PreprocessConfig.from_dict(validate_config({"preprocess": values})["preprocess"])


def test_torchvision_model_by_name_without_download():
    model = build_model(model_cfg(kind="torchvision", name="alexnet", num_classes=7))
    assert model.classifier[-1].out_features == 7


def test_unknown_torchvision_name_lists_valid_ones():
    with pytest.raises(ModelError, match="resnet18"):
        build_model(model_cfg(kind="torchvision", name="resnet19"))


def test_custom_factory():
    model = build_model(model_cfg(kind="custom", factory="convscope.nn.models:DemoCNN",
                         factory_kwargs={"num_classes": 3}))
    assert isinstance(model, DemoCNN) and model.fc.out_features == 3


def test_custom_factory_that_does_not_import():
    with pytest.raises(ModelError, match="cannot import module 'nosuchpackage.models'"):
        build_model(model_cfg(kind="custom", factory="nosuchpackage.models:net"))


def test_checkpoint_round_trip_and_wrapped_state_dicts(tmp_path):
    model = DemoCNN(num_classes=4)
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
               path)
    loaded = load_checkpoint(DemoCNN(num_classes=4), path)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_checkpoint_that_does_not_fit_names_the_keys(tmp_path):
    state = DemoCNN(num_classes=4).state_dict()
    state.pop("conv2.weight")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(ModelError) as err:
        load_checkpoint(DemoCNN(num_classes=5), path)
    message = str(err.value)
    assert "conv2.weight" in message and "extra.weight" in message
    assert "fc.weight: checkpoint (4, 128) vs model (5, 128)" in message


def test_load_model_demo_infers_classes_from_weights(tmp_path):
    path = tmp_path / "demo.pt"
    torch.save(DemoCNN(num_classes=6).state_dict(), path)
    model = load_model(model_cfg(kind="demo", weights=str(path)), path)
    assert model.fc.out_features == 6 and not model.training


def test_wrong_layer_name_lists_valid_names():
    with pytest.raises(LayerNameError) as err:
        check_layer_names(DemoCNN(), ["relu1", "conv9"])
    assert "'conv9'" in str(err.value) and "relu4" in str(err.value)


def test_codes_module_default_is_input_of_last_linear():
    assert codes_module_name(DemoCNN(), None) == ("fc", "input")
    assert codes_module_name(DemoCNN(), "relu4") == ("relu4", "output")
    with pytest.raises(ModelError, match="no nn.Linear"):
        codes_module_name(nn.Sequential(nn.Conv2d(3, 4, 3)), None)


def test_describe_model_demo():
    # Shapes and receptive fields worked out by hand for a 32 px input: conv1
    # 5x5 keeps 32x32; three 2x pools leave 4x4; relu4's field is
    # 5 -> pool 6 -> conv 10 -> pool 12 -> conv 20 -> pool 24 -> conv 40.
    info = describe_model(DemoCNN(num_classes=10), preprocess_cfg(input_size=32),
                          ["relu1", "relu4"], None)
    assert info["input_size"] == [32, 32] and info["in_channels"] == 3
    assert info["layers"]["relu1"]["shape"] == [32, 32, 32]
    assert info["layers"]["relu4"]["shape"] == [128, 4, 4]
    assert info["layers"]["relu1"]["receptive_field"]["size"] == [5, 5]
    assert info["layers"]["relu4"]["receptive_field"]["size"] == [40, 40]
    assert info["codes"] == {"module": "fc", "where": "input", "dim": 128}
    assert info["num_classes"] == 10
    conv = [(3, 32, 5), (32, 64, 3), (64, 128, 3), (128, 128, 3)]
    expected = sum(i * o * k * k + o + 2 * o for i, o, k in conv) + 128 * 10 + 10  # conv, bias, bn
    assert info["n_parameters"] == expected
    assert info["module_names"][:3] == ["conv1", "bn1", "relu1"] and info["module_names"][-1] == "fc"


def test_describe_model_codes_layer_grayscale_and_rectangular_input():
    info = describe_model(DemoCNN(num_classes=4, in_channels=1),
                          preprocess_cfg(input_size=[48, 32], channels=1, mean=[0.5], std=[0.25]),
                          ["pool2"], "relu4")
    assert info["input_size"] == [48, 32] and info["in_channels"] == 1
    assert info["layers"]["pool2"]["shape"] == [64, 12, 8]
    assert info["codes"] == {"module": "relu4", "where": "output", "dim": 128 * 6 * 4}


def test_describe_model_wrong_layer_names():
    with pytest.raises(LayerNameError, match="conv9"):
        describe_model(DemoCNN(), preprocess_cfg(), ["relu1", "conv9"], None)
    with pytest.raises(LayerNameError, match="codes_layer"):
        describe_model(DemoCNN(), preprocess_cfg(), ["relu1"], "nope")


def test_layer_output_shapes_of_tuple_and_flat_outputs():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 5, 3, stride=2)
            self.fc = nn.Linear(5, 2)

        def forward(self, x):
            y = self.conv(x)
            return self.fc(y.mean((2, 3))), y

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = TwoHeads()

        def forward(self, x):
            return self.heads(x)[0]

    model = Net().train()
    shapes = layer_output_shapes(model, ["heads.conv", "heads.fc", "heads"], (17, 9))
    # conv: (17 - 3) // 2 + 1 = 8 rows, (9 - 3) // 2 + 1 = 4 columns; the
    # tuple output of `heads` is read through its first tensor, the (1, 2) logits.
    assert shapes == {"heads.conv": [5, 8, 4], "heads.fc": [2, 1, 1], "heads": [2, 1, 1]}
    assert model.training


def test_write_model_info(tmp_path):
    weights = tmp_path / "demo_model.pt"
    torch.save(DemoCNN(num_classes=6).state_dict(), weights)
    out = tmp_path / "model" / "model_info.json"
    returned = write_model_info(model_cfg(kind="demo"), preprocess_cfg(input_size=32),
                                ["relu3"], None, weights, out)
    info = json.loads(out.read_text())
    assert info == returned
    assert info["model"] == {"kind": "demo", "name": "DemoCNN",
                             "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert info["num_classes"] == 6 and info["layers"]["relu3"]["shape"] == [128, 8, 8]
    assert sorted(p.name for p in out.parent.iterdir()) == ["model_info.json"]
    assert model_identity(model_cfg(kind="demo"), weights) == info["model"]


def test_torchvision_weights_from_the_local_cache(tmp_path, monkeypatch):
    """model.weights null: torchvision's own weights are used if the hub cache has them."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    config = model_cfg(kind="torchvision", name="squeezenet1_1")
    with pytest.raises(ModelError, match="not in the local cache"):
        load_model(config, None)
    reference = torchvision.models.squeezenet1_1(weights=None)
    url = torchvision.models.get_model_weights("squeezenet1_1").DEFAULT.url
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / url.rsplit("/", 1)[1])
    model = load_model(config, None)
    torch.testing.assert_close(model.features[0].weight, reference.features[0].weight)


@pytest.fixture(scope="module")
def demo_manifest(tmp_path_factory):
    """A written manifest of 40 demo images of 24 px (30 train, 10 test)."""
    root = tmp_path_factory.mktemp("train")
    demo = DemoDatasetConfig.from_dict(validate_config({"dataset": {"demo": {
        "n_images": 40, "image_size": 24, "seed": 2, "test_fraction": 0.25}}})["dataset"]["demo"])
    generate_demo_dataset(demo, root / "demo" / "manifest.csv", root / "demo" / "images")
    manifest, class_names = build_manifest("manifest", root / "demo" / "manifest.csv")
    write_manifest(manifest, class_names, root / "manifest.csv")
    return root / "manifest.csv"


def test_train_demo_model_is_deterministic(tmp_path, demo_manifest):
    train = TrainConfig.from_dict(validate_config(
        {"model": {"train": {"epochs": 1, "batch_size": 8, "seed": 5}}})["model"]["train"])
    preprocess = preprocess_cfg(input_size=24, resize=24)
    runs = []
    for name in ("a", "b"):
        weights, metrics = tmp_path / name / "demo_model.pt", tmp_path / name / "train_metrics.json"
        returned = train_demo_model(demo_manifest, train, preprocess, weights, metrics)
        runs.append((torch.load(weights, weights_only=True), json.loads(metrics.read_text())))
        assert json.loads(metrics.read_text()) == returned
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["demo_model.pt",
                                                                       "train_metrics.json"]
        # torch names the archive inside after the file: no temporary name leaks in.
        assert zipfile.ZipFile(weights).namelist()[0].startswith("demo_model/")
    (state_a, metrics_a), (state_b, metrics_b) = runs
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[key], state_b[key]) for key in state_a)
    assert "seconds" not in metrics_a  # wall-clock time lives in the benchmark files
    assert metrics_a == metrics_b

    table = pd.read_csv(demo_manifest)
    assert metrics_a["n_train"] == int((table["split"] == "train").sum()) == 30
    assert metrics_a["n_test"] == int((table["split"] == "test").sum()) == 10
    assert metrics_a["class_names"] == json.loads(demo_manifest.with_name("manifest.classes.json").read_text())
    assert metrics_a["epochs"] == 1 and len(metrics_a["loss_history"]) == 1
    assert np.isfinite(metrics_a["loss_history"][0])
    assert 0.0 <= metrics_a["test_accuracy"] <= 1.0
    # The saved weights load into the configured demo model with 10 classes.
    assert load_model(model_cfg(kind="demo"), tmp_path / "a" / "demo_model.pt").fc.out_features == 10


def test_train_demo_model_without_a_train_split_says_why(tmp_path, demo_manifest):
    table = pd.read_csv(demo_manifest)
    table["split"] = "all"  # e.g. a folder dataset: no train/test split
    table.to_csv(tmp_path / "manifest.csv", index=False)
    (tmp_path / "manifest.classes.json").write_text(
        demo_manifest.with_name("manifest.classes.json").read_text())
    train = TrainConfig.from_dict(validate_config({})["model"]["train"])
    with pytest.raises(ValueError, match="splits present: all") as err:
        train_demo_model(tmp_path / "manifest.csv", train, preprocess_cfg(input_size=24, resize=24),
                         tmp_path / "w.pt", tmp_path / "m.json")
    assert "model.weights" in str(err.value) and "0 and 0" in str(err.value)
    assert not (tmp_path / "w.pt").exists()
