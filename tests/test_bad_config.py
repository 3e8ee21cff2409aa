"""User mistakes in the config stop the run before any job, with one clear message.

Each case is checked in-process against `convscope.preflight.preflight` (the
message names the key, file or layer and the valid choices), and a few run
the real ``snakemake`` command: exit code not 0, the message on stderr, no
Python traceback, no job started.
"""

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from convscope.preflight import check_dataset, check_device
from convscope.config.validate import ConfigError, load_config, validate_config
from convscope.nn.models import DemoCNN
from convscope.preflight import PreflightError, preflight

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


@pytest.fixture
def data(tmp_path):
    """A folder dataset, a manifest table over it and a fitting 3-class checkpoint."""
    for i, name in enumerate(["cat", "dog", "owl"]):
        (tmp_path / "images" / name).mkdir(parents=True)
        Image.new("RGB", (20, 20), (40 * i, 90, 200)).save(tmp_path / "images" / name / "a.png")
    pd.DataFrame({"path": [f"images/{n}/a.png" for n in ["cat", "dog", "owl"]],
                  "label": ["cat", "dog", "owl"], "site": [1, 2, 1]}).to_csv(
        tmp_path / "data.csv", index=False)
    torch.manual_seed(0)
    torch.save(DemoCNN(num_classes=3).state_dict(), tmp_path / "net.pt")
    return tmp_path


def _config(data: Path, **sections) -> dict:
    """A valid manifest + custom-model config, with ``sections`` merged in one level deep."""
    raw = {
        "dataset": {"kind": "manifest", "path": str(data / "data.csv"),
                    "class_names": ["cat", "dog", "owl"]},
        "model": {"kind": "custom", "factory": "convscope.nn.models:DemoCNN",
                  "factory_kwargs": {"num_classes": 3}, "weights": str(data / "net.pt")},
        "preprocess": {"input_size": 32, "resize": 32},
        "layers": ["relu1", "relu2", "relu3", "relu4"],
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


def _preflight_message(raw: dict) -> str:
    with pytest.raises(PreflightError) as err:
        preflight(validate_config(raw))
    message = str(err.value)
    assert "Traceback" not in message
    return message


def test_valid_configs_pass(data):
    preflight(validate_config(_config(data)))
    preflight(validate_config(_config(data, dataset={"kind": "folder",
                                                     "path": str(data / "images")})))
    preflight(load_config(REPO / "config" / "config.yaml"))  # the demo


# --------------------------------------------------------------------------
# the dataset


def test_dataset_path_missing(data):
    message = _preflight_message(_config(data, dataset={"path": str(data / "nope.csv")}))
    assert "dataset.path" in message and "nope.csv" in message and "does not exist" in message


def test_dataset_path_not_set(data):
    message = _preflight_message(_config(data, dataset={"path": None}))
    assert "dataset.path" in message and "must be set" in message


def test_dataset_path_wrong_type(data):
    message = _preflight_message(_config(data, dataset={"kind": "folder",
                                                        "path": str(data / "data.csv")}))
    assert "dataset.path" in message and "not a folder" in message and "'manifest'" in message
    message = _preflight_message(_config(data, dataset={"path": str(data / "images")}))
    assert "dataset.path" in message and ".csv" in message and ".parquet" in message


def test_label_column_absent(data):
    message = _preflight_message(_config(data, dataset={"label_column": "lable"}))
    assert "dataset.label_column" in message and "'lable'" in message
    assert "did you mean 'label'" in message
    assert "columns present: path, label, site" in message


def test_path_column_absent(data):
    message = _preflight_message(_config(data, dataset={"path_column": "file"}))
    assert "dataset.path_column" in message and "'file'" in message
    assert "columns present: path, label, site" in message


def test_parquet_label_column_absent(data):
    pd.read_csv(data / "data.csv").to_parquet(data / "data.parquet")
    preflight(validate_config(_config(data, dataset={"path": str(data / "data.parquet")})))
    message = _preflight_message(_config(data, dataset={"path": str(data / "data.parquet"),
                                                        "label_column": "class"}))
    assert "dataset.label_column" in message and "path, label, site" in message


def test_zero_images_empty_and_header_only_csv(data):
    (data / "empty.csv").write_text("")
    message = _preflight_message(_config(data, dataset={"path": str(data / "empty.csv")}))
    assert "empty.csv" in message and "empty" in message
    (data / "header.csv").write_text("path,label\n")
    message = _preflight_message(_config(data, dataset={"path": str(data / "header.csv")}))
    assert "header.csv" in message and "zero images" in message


def test_zero_images_folder(data):
    (data / "nothing" / "cat").mkdir(parents=True)
    (data / "nothing" / "cat" / "notes.txt").write_text("no images here")
    message = _preflight_message(_config(data, dataset={"kind": "folder",
                                                        "path": str(data / "nothing")}))
    assert "holds no images" in message and ".png" in message and "cat" in message
    (data / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(data / "flat" / "a.png")
    message = _preflight_message(_config(data, dataset={"kind": "folder",
                                                        "path": str(data / "flat")}))
    assert "no class subfolders" in message


def test_zero_images_array(data):
    np.savez(data / "none.npz", images=np.zeros((0, 8, 8, 3), np.uint8))
    message = _preflight_message(_config(data, dataset={"kind": "array",
                                                        "path": str(data / "none.npz")}))
    assert "none.npz" in message and "no images" in message
    with h5py.File(data / "none.h5", "w") as f:
        f["pixels"] = np.zeros((2, 8, 8), np.uint8)
    message = _preflight_message(_config(data, dataset={"kind": "array",
                                                        "path": str(data / "none.h5")}))
    assert "'images'" in message and "pixels" in message


# --------------------------------------------------------------------------
# labels and class names (checked while the workflow is parsed: label column only)


def _dataset_message(raw: dict) -> str:
    with pytest.raises(PreflightError) as err:
        check_dataset(validate_config(raw))
    return str(err.value)


def test_string_labels_without_class_names_for_a_model_not_trained_here(data):
    message = _dataset_message(_config(data, dataset={"class_names": None}))
    assert "dataset.class_names is not set" in message and "'cat', 'dog', 'owl'" in message
    assert "data.csv" in message and "'label'" in message
    # the demo model trained by the workflow numbers the names itself (on a table with
    # the train and test splits it needs)
    table = pd.read_csv(data / "data.csv").assign(split=["train", "test", "train"])
    table.to_csv(data / "with_split.csv", index=False)
    check_dataset(validate_config(_config(data, dataset={"class_names": None,
                                                         "path": str(data / "with_split.csv")},
                                          model={"kind": "demo", "weights": None,
                                                 "factory": None, "factory_kwargs": {}})))


def test_labels_not_in_the_class_names(data):
    message = _dataset_message(_config(data, dataset={"class_names": ["cat", "dog", "emu"]}))
    assert "dataset.label_column" in message and "'owl'" in message
    assert "not among the class names" in message and "emu" in message
    (data / "names.txt").write_text("owl\ncat\ndog\n")
    check_dataset(validate_config(_config(data, dataset={"class_names": str(data / "names.txt")})))
    message = _dataset_message(_config(data, dataset={"class_names": str(data / "nope.txt")}))
    assert "'dataset.class_names'" in message and "nope.txt" in message and "does not exist" in message


def test_labels_mixing_names_and_ids(data):
    pd.DataFrame({"path": ["images/cat/a.png", "images/dog/a.png"], "label": ["cat", 1]}).to_csv(
        data / "mixed.csv", index=False)
    message = _dataset_message(_config(data, dataset={"path": str(data / "mixed.csv")}))
    assert "mixes class names ('cat') and integer ids ('1')" in message


def test_folder_classes_not_in_the_class_names(data):
    message = _dataset_message(_config(data, dataset={"kind": "folder", "path": str(data / "images"),
                                                      "class_names": ["cat", "dog"]}))
    assert "'dataset.class_names'" in message and "class folders 'owl' are not among" in message


def test_class_names_count_differs_from_the_model_outputs(data):
    message = _preflight_message(_config(data, dataset={"class_names": ["cat", "dog", "owl", "emu"]}))
    assert "'dataset.class_names' gives 4 names but the model has 3 outputs" in message


# --------------------------------------------------------------------------
# devices (checked in `onstart`: it imports torch)


def test_cuda_requested_on_a_machine_without_it(data):
    """Without CUDA (this machine) 'cuda' fails; on a GPU machine, a device index past the last."""
    absent = (["cuda", "cuda:1"] if not torch.cuda.is_available()
              else [f"cuda:{torch.cuda.device_count()}"])
    for key in ("extract", "neighbours", "explain", "synthesis"):
        for device in absent:
            with pytest.raises(PreflightError) as err:
                check_device(validate_config(_config(data, **{key: {"device": device}})))
            message = str(err.value)
            assert f"'{key}.device'" in message and repr(device) in message
            assert "'auto'" in message
    check_device(validate_config(_config(data, extract={"device": "cpu"})))


# --------------------------------------------------------------------------
# model, checkpoint and layers


def test_layers_must_be_given(data):
    raw = _config(data)
    del raw["layers"]
    message = _preflight_message(raw)
    assert "config key 'layers' is not set" in message and "named_modules" in message


def test_layer_name_that_does_not_exist(data):
    message = _preflight_message(_config(data, layers=["relu1", "relu_2"]))
    assert "'layers'" in message and "'relu_2'" in message and "did you mean 'relu2'" in message
    assert "conv1" in message and "relu4" in message  # the valid names are listed


def test_codes_layer_and_stage_layers(data):
    message = _preflight_message(_config(data, codes_layer="avgpol"))
    assert "codes_layer" in message and "'avgpol'" in message and "avgpool" in message
    message = _preflight_message(_config(data, unit_stats={"layers": ["conv1"]}))
    assert "unit_stats.layers" in message and "relu1, relu2, relu3, relu4" in message
    message = _preflight_message(_config(data, filters={"layers": ["relu1"]}))
    assert "filters.layers" in message and "nn.Conv2d" in message and "conv1, conv2" in message
    message = _preflight_message(_config(data, filters={"panel_layers": ["relu9"]}))
    assert "filters.panel_layers" in message and "'relu9'" in message


def test_checkpoint_with_wrong_shapes(data):
    torch.save(DemoCNN(num_classes=5).state_dict(), data / "five.pt")
    message = _preflight_message(_config(data, model={"weights": str(data / "five.pt")}))
    assert "five.pt" in message and "does not fit" in message
    assert "fc.weight: checkpoint (5, 128) vs model (3, 128)" in message


def test_checkpoint_with_wrong_keys(data):
    state = DemoCNN(num_classes=3).state_dict()
    state["head.weight"] = state.pop("fc.weight")
    torch.save({"state_dict": state}, data / "renamed.pt")
    message = _preflight_message(_config(data, model={"weights": str(data / "renamed.pt")}))
    assert "missing keys (1): fc.weight" in message
    assert "unexpected keys (1): head.weight" in message


def test_checkpoint_unreadable_or_missing(data):
    (data / "junk.pt").write_bytes(b"not a checkpoint")
    message = _preflight_message(_config(data, model={"weights": str(data / "junk.pt")}))
    assert "junk.pt" in message and "cannot read" in message
    message = _preflight_message(_config(data, model={"weights": str(data / "gone.pt")}))
    assert "model.weights" in message and "gone.pt" in message and "does not exist" in message


def test_unknown_torchvision_name(data):
    message = _preflight_message(_config(data, model={"kind": "torchvision", "name": "resnet19",
                                                      "weights": None, "factory": None,
                                                      "factory_kwargs": {}}))
    assert "'resnet19'" in message and "resnet18" in message


def test_factory_problems(data):
    message = _preflight_message(_config(data, model={"factory_kwargs": {"n_classes": 3}}))
    assert "convscope.nn.models:DemoCNN" in message and "factory_kwargs" in message
    assert "n_classes" in message
    message = _preflight_message(_config(data, model={"factory": "convscope.nn.models:Nope"}))
    assert "model.factory" in message and "'Nope'" in message


def test_input_that_does_not_fit_the_model(data):
    message = _preflight_message(_config(data, model={"weights": None},
                                         preprocess={"channels": 1}))
    assert "(1, 1, 32, 32)" in message and "preprocess.channels" in message
    message = _preflight_message(_config(data, preprocess={"mean": [0.5, 0.5]}))
    assert "preprocess.mean" in message


def test_schema_errors_name_the_key(data):
    with pytest.raises(ConfigError, match=r"extract\.batch_size.*not of type"):
        validate_config(_config(data, extract={"batch_size": "big"}))
    with pytest.raises(ConfigError, match="did you mean 'layers'"):
        validate_config(_config(data, layer=["relu1"]))


# --------------------------------------------------------------------------
# through snakemake: exit code, message, no traceback, no job


_CASES = {
    "misspelt_key": ({"extract": {"batch_sise": 8}},
                     ["extract.batch_sise", "did you mean 'batch_size'"]),
    "label_column": ({"dataset": {"label_column": "lable"}},
                     ["dataset.label_column", "columns present: path, label, site"]),
    "checkpoint": ({"model": {"weights": "five.pt"}}, ["five.pt", "fc.weight"]),
    "class_names": ({"dataset": {"class_names": None}},
                    ["dataset.class_names is not set", "'cat', 'dog', 'owl'"]),
}


@pytest.mark.workflow
def test_snakemake_stops_before_any_job(data):
    torch.save(DemoCNN(num_classes=5).state_dict(), data / "five.pt")
    runs = {}
    for name, (overlay, _expected) in _CASES.items():
        workdir = data / name
        workdir.mkdir()
        raw = _config(data, **overlay)
        if name == "checkpoint":
            raw["model"]["weights"] = str(data / "five.pt")
        (workdir / "config.yaml").write_text(yaml.safe_dump(raw))
        runs[name] = subprocess.Popen(
            [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--configfile", "config.yaml",
             "--cores", "1"],
            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for name, process in runs.items():
        stdout, stderr = process.communicate(timeout=120)
        output = stdout + stderr
        assert process.returncode != 0, (name, output)
        assert "Traceback" not in output and 'File "' not in output, (name, output)
        for expected in _CASES[name][1]:
            assert expected in stderr, (name, expected, output)
        assert not (data / name / "results").exists(), name


@pytest.mark.workflow
def test_dry_run_and_lint_do_not_build_the_model(data):
    """-n and --lint only validate the config and the dataset; the model (here a checkpoint
    that does not fit) is checked when jobs are about to run (see the test above)."""
    torch.save(DemoCNN(num_classes=5).state_dict(), data / "five.pt")
    raw = _config(data)
    raw["model"]["weights"] = str(data / "five.pt")
    (data / "config.yaml").write_text(yaml.safe_dump(raw))
    for flags in (["-n"], ["--lint"]):
        proc = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--configfile",
                               "config.yaml", *flags], cwd=data, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, (flags, proc.stdout + proc.stderr)
        assert "fc.weight" not in proc.stdout + proc.stderr
    assert not (data / "results").exists()


def test_demo_model_trained_here_needs_splits_before_any_job(data):
    """A folder (no split) or a table without a split column cannot train the demo model:
    the preflight says so, instead of a traceback in the training job."""
    untrained = {"kind": "demo", "weights": None}
    message = _preflight_message(_config(data, model=untrained, dataset={
        "kind": "folder", "path": str(data / "images"), "class_names": None}))
    assert "model.weights" in message and "no split" in message and str(data / "images") in message
    message = _preflight_message(_config(data, model=untrained, dataset={"class_names": None}))
    assert "model.weights" in message and "no 'split' column" in message
    table = pd.read_csv(data / "data.csv").assign(split=["train", "test", "train"])
    table.to_csv(data / "with_split.csv", index=False)
    check_dataset(validate_config(_config(data, model=untrained, dataset={
        "path": str(data / "with_split.csv"), "class_names": None})))
