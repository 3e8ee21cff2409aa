"""The workflow end to end on a WebDataset (tar shards) and on a Hugging Face dataset
saved with ``save_to_disk``, both written in the test with their own packages.

The codes themselves are checked against a plain-torch loop in test_datasets_formats.py;
here Snakemake plans one extraction job per tar, the manifest keeps the sample keys and
the class names of the ``ClassLabel`` feature, a broken tar member is listed in the
report, and the run finishes with its report and export.
"""

from __future__ import annotations

import io
import json

import datasets as hf_datasets
import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import webdataset as wds
import yaml
from PIL import Image

from convscope.nn.models import DemoCNN
from conftest import run_snakemake

pytestmark = pytest.mark.workflow

CLASSES = ["cat", "dog", "eel"]


def _pictures() -> list[tuple[bytes, int]]:
    """Nine PNG images of different sizes (bytes) and their labels."""
    rng = np.random.default_rng(5)
    out = []
    for i in range(9):
        buffer = io.BytesIO()
        size = 30 + 2 * i
        Image.fromarray(rng.integers(0, 256, (size, size + 3, 3), dtype=np.uint8)).save(
            buffer, "PNG")
        out.append((buffer.getvalue(), i % 3))
    return out


def _run(tmp_path, dataset: dict, shard_size: int):
    """A run of the whole workflow on ``dataset`` with a 3-class demo CNN and no optional
    stage; returns the results folder."""
    torch.manual_seed(0)
    torch.save(DemoCNN(num_classes=3).state_dict(), tmp_path / "w.pt")
    config = {
        "dataset": dataset,
        "model": {"kind": "demo", "weights": str(tmp_path / "w.pt"), "num_classes": 3},
        "preprocess": {"input_size": 32, "resize": 36, "mean": [0.5] * 3, "std": [0.25] * 3},
        "layers": ["relu1", "relu2", "relu3", "relu4"],
        "extract": {"shard_size": shard_size, "batch_size": 4, "num_workers": 0,
                    "thumb_px": 8, "device": "cpu"},
        "units": {"top_k": 2, "patch_px": 16, "max_channels": 4},
        "filters": {"max_filters": 8, "panel_images": 1},
        "performance": {"split": "all"},
        "neighbours": {"k": 3},
        "stages": [],
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(tmp_path, "--configfile", "config.yaml", "--cores", "2")
    return tmp_path / "results"


def _shard_values(results, n_shards: int) -> tuple[list[int], list[int]]:
    """Manifest rows and labels of the extracted images, shard by shard, in order."""
    index, label = [], []
    for k in range(n_shards):
        with h5py.File(results / "features" / f"shard-{k:05d}.h5", "r") as f:
            index += f["index"][()].tolist()
            label += f["label"][()].tolist()
            assert np.isfinite(f["codes"][()]).all()
    return index, label


def test_webdataset_tars_run_one_extraction_job_per_tar(tmp_path):
    pictures = _pictures()
    for shard in range(3):
        with wds.TarWriter(str(tmp_path / f"shards-{shard:03d}.tar")) as sink:
            for i in range(3 * shard, 3 * shard + 3):
                png, label = pictures[i]
                sink.write({"__key__": f"sample{i:04d}", "png": b"broken" if i == 4 else png,
                            "cls": label, "json": {"site": f"s{i % 2}"}})
    results = _run(tmp_path, {"kind": "webdataset", "class_names": CLASSES,
                              "path": str(tmp_path / "shards-{000..002}.tar")}, shard_size=50)
    # one shard per tar although extract.shard_size (50) would hold all nine images
    assert sorted(p.name for p in (results / "features").glob("shard-*.h5")) == [
        f"shard-{k:05d}.h5" for k in range(3)]
    manifest = pd.read_csv(results / "manifest.csv", dtype={"key": str})
    assert manifest["key"].tolist() == [f"sample{i:04d}" for i in range(9)]
    assert manifest["site"].tolist() == [f"s{i % 2}" for i in range(9)]
    index, label = _shard_values(results, 3)
    readable = [i for i in range(9) if i != 4]
    assert index == readable and label == [pictures[i][1] for i in readable]
    html = (results / "report" / "index.html").read_text()
    assert "cannot identify image file" in html  # the broken member, listed in the report
    assert json.loads((results / "manifest.classes.json").read_text()) == CLASSES
    images = pd.read_parquet(results / "export" / "images.parquet")
    assert len(images) == 9


def test_huggingface_saved_dataset_runs_with_its_class_names(tmp_path):
    pictures = _pictures()
    features = hf_datasets.Features({"image": hf_datasets.Image(),
                                     "label": hf_datasets.ClassLabel(names=CLASSES)})
    hf_datasets.Dataset.from_dict(
        {"image": [{"bytes": p[0], "path": None} for p in pictures],
         "label": [p[1] for p in pictures]}, features=features).save_to_disk(
        str(tmp_path / "saved"))
    results = _run(tmp_path, {"kind": "huggingface", "path": str(tmp_path / "saved")},
                   shard_size=4)
    # the class names come from the ClassLabel feature; 9 rows in shards of 4
    assert json.loads((results / "manifest.classes.json").read_text()) == CLASSES
    index, label = _shard_values(results, 3)
    assert index == list(range(9)) and label == [p[1] for p in pictures]
    assert (results / "report" / "index.html").exists()
