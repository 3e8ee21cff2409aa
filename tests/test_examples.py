"""Every example config (config/examples/*.yaml) works on tiny data of its kind.

Each test builds a tiny dataset of the example's kind and a tiny model (weights saved
here: nothing is downloaded), points the example's paths at them, makes only sizes
small (shard and batch sizes, workers), never the preprocessing, and runs the checks a
run starts with (validation, preflight) and the manifest build. One example also runs
the whole workflow (marked ``workflow``).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
import yaml
from PIL import Image

from convscope.preflight import class_names_required, preflight
from convscope.config.sections import DatasetConfig
from convscope.config.validate import load_schema, validate_config
from convscope.data.manifest import read_manifest, write_dataset_manifest

from conftest import run_snakemake

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "config" / "examples"
PREPROCESS_KEYS = set(load_schema()["properties"]["preprocess"]["properties"])

#: a small model of "yours" for the examples' "mypackage.models:build_net"
MODEL_SOURCE = """
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d({in_channels}, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        x = self.relu(self.conv2(self.relu(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


def build_net(num_classes=10):
    return Net(num_classes)
"""


def test_every_example_is_tested_here():
    tested = {"array_file.yaml", "manifest_custom_model.yaml", "imagefolder_resnet18.yaml"}
    assert {path.name for path in EXAMPLES.glob("*.yaml")} == tested


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    """``make(in_channels)``: a ``mypackage.models`` on sys.path, and a checkpoint of its net."""

    def make(in_channels: int) -> tuple[Path, Path]:
        root = tmp_path / "code"
        (root / "mypackage").mkdir(parents=True)
        (root / "mypackage" / "__init__.py").write_text("")
        (root / "mypackage" / "models.py").write_text(MODEL_SOURCE.format(in_channels=in_channels))
        monkeypatch.syspath_prepend(str(root))
        from mypackage.models import build_net

        torch.manual_seed(0)
        weights = tmp_path / "net.pt"
        torch.save(build_net(num_classes=10).state_dict(), weights)
        return root, weights

    yield make
    for name in ("mypackage.models", "mypackage"):
        sys.modules.pop(name, None)


def _example(name: str) -> dict:
    with open(EXAMPLES / name) as fh:
        return yaml.safe_load(fh)


def _small(example: dict, *, dataset: dict, weights) -> dict:
    """The example with its paths pointed at the tiny data and only sizes made small."""
    config = copy.deepcopy(example)
    config["dataset"].update(dataset)
    config["model"]["weights"] = str(weights)
    config.setdefault("extract", {}).update(shard_size=4, batch_size=4, num_workers=0,
                                            thumb_px=8, precision="fp32")
    return config


def _check_and_build_manifest(example: dict, raw: dict, out: Path):
    """Validate, preflight and build the manifest as the workflow does; the manifest read back."""
    assert set(example["preprocess"]) == PREPROCESS_KEYS  # the example states all of it
    config = validate_config(raw)
    assert config["preprocess"] == example["preprocess"]  # the example's, untouched
    assert config["layers"] == example["layers"]
    preflight(config)
    csv, classes = out / "manifest.csv", out / "manifest.classes.json"
    write_dataset_manifest(DatasetConfig.from_dict(config["dataset"]), config["dataset"]["path"],
                           csv, classes, names_required=class_names_required(config))
    return read_manifest(csv, classes)


def test_array_file_example(tmp_path, user_code):
    _root, weights = user_code(in_channels=3)
    rng = np.random.default_rng(0)
    labels = np.array([3, 0, 9, 3, 1, 0])
    split = np.array(["train", "train", "test", "test", "train", "test"])
    np.savez(tmp_path / "images.npz", images=rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8),
             labels=labels, split=split, brightness=np.arange(6.0))
    example = _example("array_file.yaml")
    raw = _small(example, dataset={"path": str(tmp_path / "images.npz")}, weights=weights)
    manifest, names = _check_and_build_manifest(example, raw, tmp_path / "results")
    assert example["preprocess"]["resize"] is None  # 32 px images kept as they are
    assert manifest["label"].tolist() == labels.tolist()
    assert manifest["slot"].tolist() == list(range(6)) and manifest["split"].tolist() == split.tolist()
    assert manifest["brightness"].tolist() == list(np.arange(6.0))
    assert names == [str(i) for i in range(10)]


def _manifest_example_data(tmp_path: Path, n: int = 6) -> tuple[Path, Path, list[str], list[str]]:
    """28 x 28 grayscale PNGs, a manifest of name labels and a class list (model order)."""
    class_list = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    rng = np.random.default_rng(1)
    labels = [class_list[i] for i in rng.permutation(np.arange(n) % 10)]
    (tmp_path / "data" / "images").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), "L").save(
            tmp_path / "data" / "images" / f"{i}.png")
    pd.DataFrame({"path": [f"images/{i}.png" for i in range(n)], "label": labels,
                  "site": ["a", "b"] * (n // 2)}).to_csv(tmp_path / "data" / "manifest.csv",
                                                        index=False)
    (tmp_path / "data" / "classes.txt").write_text("\n".join(class_list) + "\n")
    return tmp_path / "data" / "manifest.csv", tmp_path / "data" / "classes.txt", labels, class_list


def test_manifest_custom_model_example(tmp_path, user_code):
    _root, weights = user_code(in_channels=1)
    table, class_file, labels, class_list = _manifest_example_data(tmp_path)
    example = _example("manifest_custom_model.yaml")
    raw = _small(example, dataset={"path": str(table), "class_names": str(class_file)},
                 weights=weights)
    manifest, names = _check_and_build_manifest(example, raw, tmp_path / "results")
    assert example["preprocess"]["resize"] is None  # "small inputs are kept as they are"
    assert names == class_list
    assert manifest["label"].tolist() == [class_list.index(label) for label in labels]
    assert manifest["site"].tolist() == ["a", "b"] * 3


def test_imagefolder_resnet18_example(tmp_path):
    class_list = [f"class{i:04d}" for i in range(1000)]
    (tmp_path / "imagenet_classes.txt").write_text("\n".join(class_list) + "\n")
    rng = np.random.default_rng(2)
    for name in ("class0007", "class0002"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
                tmp_path / "images" / name / f"{i}.jpg")
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    example = _example("imagefolder_resnet18.yaml")
    raw = _small(example, dataset={"path": str(tmp_path / "images"),
                                   "class_names": str(tmp_path / "imagenet_classes.txt")},
                 weights=tmp_path / "resnet18.pth")
    manifest, names = _check_and_build_manifest(example, raw, tmp_path / "results")
    assert names == class_list
    assert manifest["label"].tolist() == [2, 2, 7, 7]  # positions in the list, not 0 and 1


@pytest.mark.workflow
def test_manifest_custom_model_example_runs_the_workflow(tmp_path, user_code, monkeypatch):
    """The whole workflow on the manifest example: the config used is written next to the
    results and keeps the example's preprocessing (no demo settings inherited)."""
    root, weights = user_code(in_channels=1)
    table, class_file, labels, class_list = _manifest_example_data(tmp_path, n=12)
    example = _example("manifest_custom_model.yaml")
    raw = _small(example, dataset={"path": str(table), "class_names": str(class_file)},
                 weights=weights)
    raw["extract"].update(shard_size=6, device="cpu")
    raw.update(units={"top_k": 2, "patch_px": 16, "max_channels": 4},
               filters={"max_filters": 4, "panel_images": 1}, performance={"split": "all"},
               neighbours={"k": 2, "accuracy_k": [1]})
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(raw))
    # the jobs import mypackage as a user's would: through PYTHONPATH
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(root),
                                                                  os.environ.get("PYTHONPATH")])))
    run_snakemake(workdir, "results/report/index.html", "results/config.yaml",
                  "--configfile", "config.yaml", "--cores", "2", timeout=900)
    used = yaml.safe_load((workdir / "results" / "config.yaml").read_text())
    expected = validate_config(raw)
    for speed_only in ("batch_size", "num_workers", "device"):  # left out: they change no result
        del expected["extract"][speed_only]
    for speed_only in ("batch_size", "device", "chunk_size"):
        del expected["explain"][speed_only]
    del expected["synthesis"]["chunk_size"]
    assert used == expected
    assert used["preprocess"]["resize"] is None and used["preprocess"]["input_size"] == 28
    manifest, names = read_manifest(workdir / "results" / "manifest.csv")
    assert names == class_list
    assert manifest["label"].tolist() == [class_list.index(label) for label in labels]
    assert json.loads((workdir / "results" / "manifest.classes.json").read_text()) == class_list
