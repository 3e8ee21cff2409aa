"""Model shapes users bring, stage by stage without snakemake (issue 23 item 0).

The workflow run of the nastiest shape (grayscale nn.Sequential LeNet, in-place ReLUs,
BatchNorm, Flatten + Linear head) is tests/test_anymodel_workflow.py; here the other
shapes (functional ReLUs, dict and tuple outputs) go through each entry point the
stages share: the loaded stage model, the model description, the truncated forward,
deep dream, feature visualisation and inversion. Expected values come from plain torch.
"""

import pytest
import torch
from torch.nn import functional as F

import anymodel_models
from convscope.config.sections import DreamConfig, ModelConfig, PreprocessConfig
from convscope.config.stages import CHEAP_STAGES, OPTIONAL_STAGES, chosen_stages
from convscope.config.validate import ConfigError
from convscope.nn.hooks import capture_tensors, logits_of
from convscope.nn.model_info import describe_model
from convscope.nn.models import load_stage_model
from convscope.store.tables import read_table
from convscope.synthesis.dream import deep_dream, layer_l2, usable_octaves
from convscope.synthesis.images import PixelModel
from convscope.synthesis.inversion import layer_features
from convscope.synthesis.objectives import channel, class_logit
from convscope.synthesis.render import RenderSettings, render

PREPROCESS = PreprocessConfig(input_size=16, channels=3, resize=16, crop="center",
                              mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
DREAM = DreamConfig(layer=None, n_images=2, octaves=2, octave_scale=1.4, steps=2,
                    learning_rate=0.02, jitter_px=1)


def _stage_model(tmp_path, factory: str):
    torch.manual_seed(0)
    net = getattr(anymodel_models, factory)(num_classes=4).eval()
    torch.save(net.state_dict(), tmp_path / "net.pt")
    cfg = ModelConfig(kind="custom", name=None, factory=f"anymodel_models:{factory}",
                      factory_kwargs={"num_classes": 4}, weights=str(tmp_path / "net.pt"),
                      num_classes=None, train=None)
    return net, load_stage_model(cfg, tmp_path / "net.pt", PREPROCESS)[0]


def _plain_conv2(net, x):
    """conv2's output by hand (functional ReLUs, so no module holds the ReLU)."""
    return net.conv2(F.max_pool2d(F.relu(net.conv1(x)), 2))


@pytest.mark.parametrize("factory", ["functional_net", "tuple_net"])
def test_dict_and_tuple_outputs_read_as_logits(tmp_path, factory):
    net, model = _stage_model(tmp_path, factory)
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        raw = net(x)
        logits = raw["logits"] if isinstance(raw, dict) else raw[0]
        torch.testing.assert_close(model(x), logits)
    info = describe_model(model, PREPROCESS, ["conv1", "conv2"], None)
    assert info["num_classes"] == 4
    assert info["layers"]["conv2"]["shape"] == [8, 8, 8]


@pytest.mark.parametrize("factory", ["functional_net", "tuple_net"])
def test_stage_entry_points_on_functional_relus(tmp_path, factory):
    net, model = _stage_model(tmp_path, factory)
    pixels = torch.rand(2, 3, 16, 16)
    pixel_model = PixelModel(model, PREPROCESS)
    dreamed = deep_dream(pixel_model, "conv2", pixels, DREAM, seed=0)
    assert dreamed.shape == pixels.shape
    with torch.no_grad():
        expected = _plain_conv2(net, (dreamed - 0.5) / 0.25).flatten(1).norm(dim=1)
    torch.testing.assert_close(layer_l2(pixel_model, "conv2", dreamed), expected,
                               rtol=1e-4, atol=1e-5)
    features = layer_features(model, "conv2", pixels, PREPROCESS)
    torch.testing.assert_close(features, _plain_conv2(net, (pixels - 0.5) / 0.25).detach(),
                               rtol=1e-4, atol=1e-5)
    settings = RenderSettings(steps=2, learning_rate=0.05)
    for objective in (channel("conv2", [0, 1]), class_logit([0, 3])):
        made = render(model, objective, 2, settings, preprocess=PREPROCESS, seed=0)
        assert made.images.shape == (2, 16, 16, 3) and made.curves.shape == (2, 2)


def test_the_forward_stops_after_the_hooked_layer():
    """A fixed-size head never sees another size; an in-place ReLU after the hooked
    BatchNorm cannot change the captured tensor; later modules are not called."""
    torch.manual_seed(0)
    net = anymodel_models.lenet(3).eval()
    called = []
    net[9].register_forward_hook(lambda *_: called.append(9))
    x = torch.rand(2, 1, 20, 20)  # not 28x28: the Linear head would refuse it
    with torch.no_grad(), capture_tensors(net, ["1"], stop=True) as got:
        net(x)
        raise AssertionError("the block goes on after a stopped forward")
    with torch.no_grad():
        expected = net[1](net[0](x))
    torch.testing.assert_close(got["1"], expected)
    assert got["1"].min() < 0 and called == []
    with torch.no_grad(), capture_tensors(net, ["6"]) as got:
        net(torch.rand(2, 1, 28, 28))  # without stop: the whole pass, head included
    assert called == [9] and got["6"].shape == (2, 12, 14, 14)


def test_logits_of_names_what_it_needs():
    t = torch.zeros(2, 3)
    assert logits_of({"features": torch.ones(1), "logits": t}) is t
    assert logits_of((t, torch.ones(1))) is t
    with pytest.raises(TypeError, match="logits"):
        logits_of({"x": "text"})


def test_name_columns_are_read_as_text(tmp_path):
    csv = tmp_path / "topk.csv"
    csv.write_text("layer,channel,value,path\n1,0,0.5,7\n4,2,1.5,8\n")
    table = read_table(csv)
    assert list(table["layer"]) == ["1", "4"] and list(table["path"]) == ["7", "8"]
    assert list(table["channel"]) == [0, 2] and table["value"].sum() == pytest.approx(2.0)
    assert list(read_table(csv, usecols=["layer"]).columns) == ["layer"]


def test_stages_choice():
    demo, custom = {"kind": "demo"}, {"kind": "custom"}
    demo_data, folder = {"kind": "demo"}, {"kind": "folder"}
    every = list(OPTIONAL_STAGES)
    assert chosen_stages({"stages": "auto", "model": demo, "dataset": demo_data}) == every
    # dissect needs masks: the demo dataset's own, or dissect.concepts
    assert chosen_stages({"stages": "auto", "model": demo, "dataset": folder}) == \
        [s for s in every if s != "dissect"]
    assert chosen_stages({"stages": "auto", "model": custom, "dataset": folder}) == \
        list(CHEAP_STAGES)
    masks = {"stages": "auto", "model": custom, "dataset": folder,
             "dissect": {"concepts": "masks/"}}
    assert chosen_stages(masks) == [s for s in every if s in CHEAP_STAGES or s == "dissect"]
    assert chosen_stages({"stages": "all", "model": custom, "dataset": folder}) == every
    picked = chosen_stages({"stages": ["synthesis_dream", "explain_units"], "model": demo,
                            "dataset": demo_data})
    assert picked == ["explain_units", "synthesis_dream"]
    with pytest.raises(ConfigError, match="'stages'.*'auto', 'all'"):
        chosen_stages({"stages": "some", "model": demo, "dataset": demo_data})
    with pytest.raises(ConfigError, match="explain_faithfulness but not explain_attribution"):
        chosen_stages({"stages": ["explain_faithfulness"], "model": demo, "dataset": demo_data})


def test_dream_keeps_its_octaves_unless_a_layer_before_refuses_the_size():
    torch.manual_seed(0)
    gray = PreprocessConfig(input_size=28, channels=1, resize=28, crop="center", mean=[0.5],
                            std=[0.25])
    model = PixelModel(anymodel_models.lenet(3).eval(), gray)
    pixels = torch.rand(1, 1, 28, 28)
    assert usable_octaves(model, "6", pixels, DREAM) == (DREAM, None)
    fewer, reason = usable_octaves(model, "11", pixels, DREAM)  # the head's last Linear
    assert fewer.octaves == 1 and "layer 11 cannot be reached with 20x20" in reason
    assert deep_dream(model, "11", pixels, fewer, seed=0).shape == pixels.shape


def test_results_tables_are_read_through_read_table():
    """pd.read_csv stays only where convscope reads a user's table or a benchmark file: every
    results CSV goes through `read_table`, so numeric layer and class names stay text."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "convscope"
    allowed = {"data/readers.py", "data/manifest.py", "preflight.py", "report/readers.py",
               "store/tables.py"}
    users = {str(p.relative_to(root)) for p in root.rglob("*.py")
             if "pd.read_csv(" in p.read_text()}
    assert users <= allowed, users - allowed
