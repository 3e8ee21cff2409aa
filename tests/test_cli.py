"""The ``convscope`` command: ``layers`` lists what a config can name, ``init`` writes a
starter config that validates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from PIL import Image

from convscope.cli import guess_layers, main, module_table
from convscope.config import validate_config
from convscope.nn.models import DemoCNN

REPO = Path(__file__).resolve().parent.parent


def test_layers_lists_every_module_with_the_shape_of_a_plain_forward(capsys):
    assert main(["layers", str(REPO / "tests" / "data" / "tiny_config.yaml")]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    model = DemoCNN(num_classes=10).eval()
    seen = {}
    for name in ("relu1", "relu3", "fc"):
        model.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__(name, tuple(o.shape[1:])))
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))  # tiny_config: 32 px, RGB
    assert set(lines) == {name for name, _ in model.named_modules() if name}
    assert str(seen["relu1"]) in lines["relu1"] and lines["relu1"].endswith("layers, codes_layer")
    assert str(seen["relu3"]) in lines["relu3"]
    assert " 5x5 /1 " in lines["relu1"]  # conv 5x5, padding 2: field 5, stride 1
    assert lines["fc"].endswith(" codes_layer") and "layers" not in lines["fc"]


def test_guessed_layers_are_the_main_blocks():
    resnet = module_table(torchvision.models.resnet18(num_classes=3), (64, 64), 3)
    assert guess_layers(resnet) == ["layer1", "layer2", "layer3", "layer4"]
    demo = module_table(DemoCNN(num_classes=3), (32, 32), 3)
    assert guess_layers(demo) == ["relu1", "relu2", "relu3", "relu4"]


def test_init_writes_a_config_that_validates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for cls in ("cat", "dog"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "images" / cls / "0.png")
    assert main(["init", "--model", "resnet18", "--weights", "model.pt", "--data", "images",
                 "--out", "my.yaml"]) == 0
    raw = yaml.safe_load((tmp_path / "my.yaml").read_text())
    assert raw["model"] == {"kind": "torchvision", "name": "resnet18", "weights": "model.pt"}
    assert raw["dataset"] == {"kind": "folder", "path": "images"}
    assert raw["layers"] == ["layer1", "layer2", "layer3", "layer4"]
    assert validate_config(raw)["preprocess"]["input_size"] == 224  # explicit: a weights file
    with pytest.raises(SystemExit, match="my.yaml exists"):
        main(["init", "--model", "resnet18", "--data", "images", "--out", "my.yaml"])
    with pytest.raises(SystemExit, match="neither a torchvision nor a timm model name"):
        main(["init", "--model", "resnet_18", "--data", "images", "--out", "other.yaml"])


def test_init_tells_a_parquet_of_image_bytes_from_a_parquet_manifest(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.chdir(tmp_path)
    pq.write_table(pa.table({"image": [b"\x89PNG"], "label": [0]}), "bytes.parquet")
    pq.write_table(pa.table({"path": ["a.png"], "label": [0]}), "paths.parquet")
    for data, kind in (("bytes.parquet", "huggingface"), ("paths.parquet", "manifest")):
        assert main(["init", "--model", "resnet18", "--data", data, "--out", f"{kind}.yaml"]) == 0
        raw = yaml.safe_load((tmp_path / f"{kind}.yaml").read_text())
        assert raw["dataset"] == {"kind": kind, "path": data}
