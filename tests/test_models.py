"""Model building, checkpoint loading and layer names."""

import pytest
import torch
from torch import nn

from convscope.config import ModelConfig, validate_config
from convscope.nn.layers import LayerNameError, check_layer_names
from convscope.nn.model_info import describe_model
from convscope.nn.models import (DemoCNN, ModelError, build_model, codes_module_name,
                                 load_checkpoint, load_model)


def model_cfg(**values) -> ModelConfig:
    """A validated model section with ``values`` set (defaults from the schema)."""
    return ModelConfig.from_dict(validate_config({"model": values})["model"])


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
    config = {"layers": ["relu1", "relu4"], "codes_layer": None,
              "preprocess": {"input_size": 32, "channels": 3}}
    info = describe_model(DemoCNN(num_classes=10), config)
    assert info["layers"]["relu1"]["shape"] == [32, 32, 32]
    assert info["layers"]["relu4"]["shape"] == [128, 4, 4]
    assert info["layers"]["relu1"]["receptive_field"]["size"] == [5, 5]
    assert info["layers"]["relu4"]["receptive_field"]["size"] == [40, 40]
    assert info["codes"] == {"module": "fc", "where": "input", "dim": 128}
    assert info["num_classes"] == 10


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
