"""The shared model plumbing: layer names, forward hooks, devices."""

import pytest
import torch
from torch import nn

from convscope.nn.device import DeviceError, model_device, resolve_device
from convscope.nn.hooks import capture_tensors, first_tensor, forward_hooks
from convscope.nn.layers import LayerNameError, check_layer_names, get_module, module_names
from convscope.nn.models import DemoCNN


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


def test_layer_names_are_checked_with_the_key_a_hint_and_the_choices():
    model = DemoCNN()
    check_layer_names(model, ["relu1", "fc"])
    check_layer_names(model, None)
    with pytest.raises(LayerNameError) as err:
        check_layer_names(model, ["relu1", "relu9"], key="unit_stats.layers")
    message = str(err.value)
    assert "'unit_stats.layers'" in message and "'relu9'" in message
    assert "did you mean 'relu1'" in message or "did you mean 'relu4'" in message
    assert "conv1" in message and "fc" in message
    with pytest.raises(LayerNameError, match="nn.Conv2d"):
        check_layer_names(model, ["relu1"], key="filters.layers", kind=nn.Conv2d,
                          what="an nn.Conv2d module")
    assert module_names(model, nn.Conv2d) == ["conv1", "conv2", "conv3", "conv4"]


def test_slash_names_are_read_as_dots():
    model = _net()
    assert get_module(model, "0") is model[0]
    outer = nn.Sequential(model)
    assert get_module(outer, "0/3") is model[3]


def test_captured_tensors_equal_the_manual_computation():
    model = _net()
    x = torch.randn(2, 3, 8, 8)
    with capture_tensors(model, ["1"]) as out, capture_tensors(model, ["3"], "input") as inp:
        logits = model(x)
    expected = torch.relu(model[0](x))
    torch.testing.assert_close(out["1"], expected)
    torch.testing.assert_close(inp["3"], expected.flatten(1))
    torch.testing.assert_close(logits, model[3](expected.flatten(1)))


def test_hooks_are_removed_even_after_an_error():
    model = _net()
    calls = []
    with pytest.raises(RuntimeError):
        with forward_hooks(model, {"1": lambda m, i, o: calls.append(1)}):
            model(torch.randn(1, 3, 8, 8))
            raise RuntimeError("boom")
    model(torch.randn(1, 3, 8, 8))
    assert calls == [1]
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_gradients_flow_through_undetached_captures():
    model = _net()
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    with capture_tensors(model, ["1"], detach=False) as out:
        model(x)
    out["1"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_first_tensor():
    t = torch.ones(1)
    assert first_tensor((None, t)) is t
    with pytest.raises(TypeError):
        first_tensor({"a": t})


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert model_device(_net()) == torch.device("cpu")
    assert model_device(nn.ReLU()) == torch.device("cpu")
    n = torch.cuda.device_count()
    with pytest.raises(DeviceError, match="'neighbours.device'"):
        resolve_device(f"cuda:{n}", key="neighbours.device")
