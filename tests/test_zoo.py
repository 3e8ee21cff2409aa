"""The models people have: timm architectures from .safetensors files, torchvision weights
named by enum from a local torch cache, ``preprocess: auto``, and their bad-input messages.

Every model is built without pretrained weights (nothing is downloaded) and saved in the
test; the expected numbers come from the same model loaded by hand with plain torch."""

from __future__ import annotations

import os
import sys

import h5py
import numpy as np
import pytest
import safetensors.torch as safetensors_torch  # the test extra has timm and safetensors
import timm
import torch
import torchvision
import yaml
from PIL import Image

from convscope.config import ExtractConfig, ModelConfig, PreprocessConfig, validate_config
from convscope.config.validate import ConfigError
from convscope.data.images import load_image
from convscope.data.manifest import build_manifest, write_manifest
from convscope.data.preprocess import to_model_input
from convscope.extract.pipeline import extract_shard
from convscope.nn.models import ModelError, build_model, load_model
from conftest import describe_from_config



def model_config(**keys) -> ModelConfig:
    """The model section with ``keys`` and the schema's defaults (not resolved: no child)."""
    return ModelConfig.from_dict({**validate_config({})["model"], **keys})


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(1)
    for cls in ("a", "b", "c"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (40 + 4 * i, 44, 3), dtype=np.uint8)).save(
                tmp_path / "images" / cls / f"{i}.png")
    manifest, classes = build_manifest("folder", str(tmp_path / "images"))
    write_manifest(manifest, classes, tmp_path / "manifest.csv")
    return tmp_path, manifest


@pytest.mark.parametrize("name, layers, head", [
    ("resnet10t", ["layer1", "layer4"], "fc"),
    ("convnext_atto", ["stages.0", "stages.3"], "head.fc"),
])
def test_timm_model_from_safetensors_gives_the_codes_of_the_model_loaded_by_hand(
        folder, name, layers, head):
    tmp_path, manifest = folder
    torch.manual_seed(0)
    weights = tmp_path / f"{name}.safetensors"
    safetensors_torch.save_file(timm.create_model(name, pretrained=False, num_classes=3)
                                .state_dict(), str(weights))
    config = validate_config({
        "dataset": {"kind": "folder", "path": str(tmp_path / "images")},
        "model": {"kind": "timm", "name": name, "weights": str(weights), "num_classes": 3},
        "preprocess": {"input_size": 32, "resize": 36}, "layers": layers,
        "extract": {"shard_size": 10, "batch_size": 4, "num_workers": 0, "thumb_px": 8,
                    "device": "cpu"}})
    model = load_model(ModelConfig.from_dict(config["model"]), str(weights))
    out = tmp_path / "shard-00000.h5"
    extract_shard(tmp_path / "manifest.csv", describe_from_config(model, config), 0, out,
                  model=ModelConfig.from_dict(config["model"]),
                  preprocess=PreprocessConfig.from_dict(config["preprocess"]),
                  extract=ExtractConfig.from_dict(config["extract"]), layers=layers,
                  codes_layer=None, weights_file=str(weights))
    # by hand: plain timm architecture, plain load_state_dict, a hook on the last Linear
    by_hand = timm.create_model(name, pretrained=False, num_classes=3)
    by_hand.load_state_dict(safetensors_torch.load_file(str(weights)))
    by_hand.eval()
    seen = {}
    by_hand.get_submodule(head).register_forward_hook(lambda m, i, o: seen.update(code=i[0]))
    with h5py.File(out, "r") as f:
        index = f["index"][()]
        paths = manifest.set_index("index").loc[index, "path"]
        x = to_model_input([load_image(p) for p in paths], config["preprocess"])
        with torch.no_grad():
            logits = by_hand(x)
        np.testing.assert_allclose(f["codes"][()], seen["code"].numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(f["topk/prob"][:, 0],
                                   torch.softmax(logits, 1).amax(1).numpy(), rtol=1e-4)
    assert len(index) == 6


def _torchvision_cache(tmp_path, monkeypatch):
    """A $TORCH_HOME whose cache holds resnet18's IMAGENET1K_V1 file (random numbers)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.chdir(tmp_path)  # no .snakemake folder: the facts are not cached on disk
    member = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, folder / os.path.basename(member.url))
    return member, state


def test_torchvision_weights_by_name_from_the_local_cache_with_preprocess_auto(
        tmp_path, monkeypatch):
    member, state = _torchvision_cache(tmp_path, monkeypatch)
    config = validate_config({
        "model": {"kind": "torchvision", "name": "resnet18", "weights": "IMAGENET1K_V1"},
        "preprocess": {"auto": True, "resize": 300}, "layers": ["layer4"]})
    transform = member.transforms()
    assert config["preprocess"] == {  # read from the weights' transforms; resize set: it wins
        "input_size": transform.crop_size[0], "resize": 300, "crop": "center",
        "mean": list(transform.mean), "std": list(transform.std), "channels": 3}
    assert config["dataset"]["class_names"] == member.meta["categories"]
    for weights in ("IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1"):
        model = load_model(ModelConfig.from_dict({**config["model"], "weights": weights}),
                           weights)
        for key, value in state.items():
            assert torch.equal(model.state_dict()[key], value), key


def test_torchvision_weights_missing_from_the_cache_name_the_file_and_folder(
        tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    cfg = model_config(kind="torchvision", name="resnet18", weights="IMAGENET1K_V1")
    with pytest.raises(ModelError) as error:
        load_model(cfg, "IMAGENET1K_V1")
    text = str(error.value)
    assert "resnet18-f37072fd.pth" in text and str(tmp_path / "empty" / "hub" / "checkpoints") \
        in text and "never downloads" in text
    with pytest.raises(ModelError, match="valid: IMAGENET1K_V1"):
        load_model(cfg, "IMAGENET1K_V7")


def test_timm_data_config_gives_the_auto_preprocessing():
    from timm.data import resolve_data_config

    from convscope.nn.zoo import model_facts

    given = model_facts({"kind": "timm", "name": "convnext_atto"})["preprocess"]
    data = resolve_data_config({}, model=timm.create_model("convnext_atto", pretrained=False))
    assert given["input_size"] == data["input_size"][1]
    assert given["resize"] == int(data["input_size"][1] / data["crop_pct"])
    assert given["mean"] == list(data["mean"]) and given["std"] == list(data["std"])
    assert given["crop"] == "center"


def test_bad_timm_name_suggests_the_closest():
    with pytest.raises(ModelError, match="closest names: convnext_atto"):
        build_model(model_config(kind="timm", name="convnext_ato"))


def test_weights_whose_keys_do_not_fit_list_them(tmp_path):
    weights = tmp_path / "resnet.safetensors"
    saved = timm.create_model("resnet10t", pretrained=False).state_dict()
    safetensors_torch.save_file(saved, str(weights))
    own = timm.create_model("convnext_atto", pretrained=False).state_dict()
    cfg = model_config(kind="timm", name="convnext_atto", weights=str(weights))
    with pytest.raises(ModelError) as error:
        load_model(cfg, str(weights))
    text = str(error.value)
    assert str(weights) in text and "stem.0.weight" in text
    assert f"missing keys ({len(set(own) - set(saved))})" in text
    assert f"unexpected keys ({len(set(saved) - set(own))})" in text


def test_preprocess_auto_on_a_model_without_transforms_asks_for_the_keys():
    for model in ({"kind": "custom", "factory": "pkg.mod:make"},
                  {"kind": "torchvision", "name": "resnet18", "weights": "my_model.pt"}):
        with pytest.raises(ConfigError, match="set preprocess.input_size, resize, crop"):
            validate_config({"model": model, "preprocess": "auto"})
    # every key given: nothing left to take from the model, no error
    explicit = {"auto": True, "input_size": 32, "resize": 36, "crop": "center", "mean": 0.5,
                "std": 0.25}
    config = validate_config({"model": {"kind": "custom", "factory": "pkg.mod:make"},
                              "preprocess": explicit})
    assert config["preprocess"]["mean"] == [0.5]


def test_timm_not_installed_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(ModelError, match=r"pip install 'convscope\[timm\]'"):
        build_model(model_config(kind="timm", name="resnet10t"))


@pytest.mark.workflow
def test_workflow_runs_a_timm_model_with_preprocess_auto(tmp_path):
    """Parsed torch-free (preprocess: auto resolved in a child process), checked in onstart,
    extracted; results/config.yaml and the shards hold the values taken from timm."""
    from timm.data import resolve_data_config

    from conftest import run_snakemake

    for cls in ("a", "b"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((40, 44, 3), 40 * i + 60 * (cls == "b"), np.uint8)).save(
                tmp_path / "images" / cls / f"{i}.png")
    torch.manual_seed(0)
    safetensors_torch.save_file(timm.create_model("resnet10t", num_classes=2).state_dict(),
                                str(tmp_path / "net.safetensors"))
    (tmp_path / "my.yaml").write_text(yaml.safe_dump({
        "dataset": {"kind": "folder", "path": "images", "class_names": ["a", "b"]},
        "model": {"kind": "timm", "name": "resnet10t", "weights": "net.safetensors",
                  "num_classes": 2},
        "preprocess": {"auto": True, "input_size": 32, "resize": 36},
        "layers": ["layer1", "layer4"],
        "extract": {"shard_size": 4, "num_workers": 0, "batch_size": 4}}))
    run_snakemake(tmp_path, "results/features/index.json", "results/config.yaml",
                  "--configfile", "my.yaml", "--cores", "2")
    data = resolve_data_config({}, model=timm.create_model("resnet10t", pretrained=False))
    used = yaml.safe_load((tmp_path / "results" / "config.yaml").read_text())["preprocess"]
    assert used == {"input_size": 32, "resize": 36, "channels": 3, "crop": "center",
                    "mean": list(data["mean"]), "std": list(data["std"])}
    with h5py.File(tmp_path / "results" / "features" / "shard-00001.h5", "r") as f:
        assert f["codes"].shape == (2, 512)
