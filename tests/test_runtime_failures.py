"""Failures while a shard is extracted: out of GPU memory, a full disk or a
read-only folder, NaN or infinite activations.

The out-of-memory back-off is tested on its own (`BatchBackoff` with a step
that raises ``torch.cuda.OutOfMemoryError`` above a batch size), then once
through a whole shard. A full disk is an h5py dataset creation that raises
ENOSPC. Everything runs on the CPU except the tests marked ``gpu``.
"""

import errno
import os

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

import convscope.store.atomic as atomic
from convscope.config.validate import validate_config
from convscope.extract.backoff import BatchBackoff, is_out_of_memory
from convscope.data.manifest import build_manifest, write_manifest
from convscope.nn.models import DemoCNN
from convscope.store.shards import iter_shards, read_attrs
from conftest import describe_from_config
from test_extract import extract_with

N_IMAGES = 10
GREYS = [255, 0, 128, 255, 30, 128, 200, 255, 0, 60]  # one uniform grey per image


def _config(**extract_cfg) -> dict:
    return validate_config({
        "model": {"kind": "custom", "factory": "convscope.nn.models:DemoCNN",
                  "factory_kwargs": {"num_classes": 3}},
        # every setting the numbers below depend on, spelled out (defaults are ImageNet's)
        "preprocess": {"input_size": 16, "resize": 16, "mean": [0.5, 0.5, 0.5],
                       "std": [0.25, 0.25, 0.25]},
        "layers": ["relu1", "relu2", "relu3", "relu4"],
        "extract": {"shard_size": 100, "batch_size": 8, "num_workers": 0, "thumb_px": 8,
                    "device": "cpu", **extract_cfg},
    })


@pytest.fixture
def manifest_csv(tmp_path):
    """Ten uniform grey 16 x 16 images (values `GREYS`) in a workflow manifest."""
    paths = []
    for i, grey in enumerate(GREYS):
        path = tmp_path / "images" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (16, 16), (grey, grey, grey)).save(path)
        paths.append(str(path))
    pd.DataFrame({"path": paths, "label": [i % 3 for i in range(N_IMAGES)]}).to_csv(
        tmp_path / "data.csv", index=False)
    manifest, class_names = build_manifest("manifest", tmp_path / "data.csv")
    csv = tmp_path / "results" / "manifest.csv"
    write_manifest(manifest, class_names, csv)
    return csv


def _run(config, manifest_csv, model, out, info=None):
    """Extract shard 0 with ``model`` (already built) into ``out``."""
    info = info or describe_from_config(model, config)
    return extract_with(config, manifest_csv, info, 0, out, network=model)


# --------------------------------------------------------------------------
# the back-off on its own


class _Step:
    """A batch step that runs out of (simulated) GPU memory above ``max_batch`` images."""

    def __init__(self, max_batch: int, error: Exception | None = None):
        self.max_batch, self.error = max_batch, error
        self.sizes: list[int] = []

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.sizes.append(len(images))
        if self.error is not None:
            raise self.error
        if len(images) > self.max_batch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {"double": images * 2, "first": images[:, :1]}


def test_backoff_halves_the_batch_size_and_keeps_it():
    step, messages = _Step(max_batch=2), []
    backoff = BatchBackoff(8, report=messages.append)
    images = torch.arange(30, dtype=torch.float32).reshape(10, 3)
    out = backoff.run(step, images)
    assert step.sizes == [8, 4, 2, 2, 2, 2, 2]  # 8 and 4 fail; the whole batch again in 2s
    torch.testing.assert_close(out["double"], images * 2)
    torch.testing.assert_close(out["first"], images[:, :1])
    assert messages == ["out of GPU memory at batch size 8: lowering the batch size to 4",
                        "out of GPU memory at batch size 4: lowering the batch size to 2"]
    assert backoff.batch_size == 2
    step.sizes.clear()
    backoff.run(step, images[:3])  # the next batch starts at the lowered size
    assert step.sizes == [2, 1] and len(messages) == 2


def test_backoff_raises_out_of_memory_at_batch_size_one():
    step = _Step(max_batch=0)
    backoff = BatchBackoff(4, report=lambda msg: None)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        backoff.run(step, torch.zeros(4, 3))
    assert step.sizes == [4, 2, 1] and backoff.batch_size == 1


def test_backoff_does_not_retry_other_errors():
    step = _Step(max_batch=100, error=RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    backoff = BatchBackoff(4, report=lambda msg: None)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        backoff.run(step, torch.zeros(4, 3))
    assert step.sizes == [4] and backoff.batch_size == 4
    with pytest.raises(ValueError):
        BatchBackoff(0)


def test_plain_runtime_error_is_out_of_memory_only_on_cuda():
    plain = RuntimeError("CUDA error: out of memory")
    assert is_out_of_memory(plain, cuda=True) and not is_out_of_memory(plain, cuda=False)
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("x"), cuda=False)
    assert not is_out_of_memory(ValueError("out of memory"), cuda=True)
    step = _Step(max_batch=100, error=plain)
    with pytest.raises(RuntimeError):  # on a CPU run it is not retried
        BatchBackoff(4, cuda=False, report=lambda msg: None).run(step, torch.zeros(4, 3))
    assert step.sizes == [4]
    step = _Step(max_batch=100, error=plain)
    with pytest.raises(RuntimeError):  # on a CUDA run it is, down to 1
        BatchBackoff(4, cuda=True, report=lambda msg: None).run(step, torch.zeros(4, 3))
    assert step.sizes == [4, 2, 1]


# --------------------------------------------------------------------------
# out of GPU memory


class _SmallMemoryCNN(DemoCNN):
    """DemoCNN whose forward runs out of (simulated) GPU memory above ``max_batch`` images."""

    def __init__(self, max_batch: int):
        super().__init__(num_classes=3)
        self.max_batch = max_batch
        self.batch_sizes: list[int] = []

    def forward(self, x):
        self.batch_sizes.append(x.shape[0])
        if x.shape[0] > self.max_batch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(x)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_out_of_memory_in_a_shard_gives_the_same_numbers(tmp_path, manifest_csv, capsys,
                                                          device):
    torch.manual_seed(0)
    reference = DemoCNN(num_classes=3).eval()
    small = _SmallMemoryCNN(max_batch=2)
    small.load_state_dict(reference.state_dict())
    config = _config(batch_size=8, device=device)
    info = describe_from_config(reference, config)

    _run(config, manifest_csv, reference, tmp_path / "ref.h5", info)
    capsys.readouterr()
    summary = _run(config, manifest_csv, small, tmp_path / "oom.h5", info)
    log = capsys.readouterr().out

    assert "out of GPU memory at batch size 8: lowering the batch size to 4" in log
    assert "out of GPU memory at batch size 4: lowering the batch size to 2" in log
    assert summary["batch_size"] == 2 and summary["images"] == N_IMAGES
    # batches of 8 and 2 (10 images): 8 -> OOM, 4 -> OOM, then 2s; the next batch starts at 2
    assert small.batch_sizes == [8, 4, 2, 2, 2, 2, 2]
    names = ["index", "codes", "layers/relu2/max", "layers/relu4/mean", "topk/prob"]
    got, want = (next(iter_shards([tmp_path / f], names)) for f in ("oom.h5", "ref.h5"))
    for name in names:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)


class _GreedyCNN(DemoCNN):
    """DemoCNN that takes ``bytes_per_image`` of real GPU memory per image in a batch."""

    def __init__(self, bytes_per_image: int):
        super().__init__(num_classes=3)
        self.bytes_per_image = bytes_per_image

    def forward(self, x):
        if x.is_cuda:
            scratch = torch.empty(x.shape[0] * self.bytes_per_image, dtype=torch.uint8,
                                  device=x.device)
            del scratch
        return super().forward(x)


@pytest.mark.gpu
def test_real_cuda_out_of_memory_lowers_the_batch_size(tmp_path, manifest_csv, capsys):
    total = torch.cuda.get_device_properties(0).total_memory
    model = _GreedyCNN(total // 3)  # batches of 8 and 4 cannot fit, 2 can
    config = _config(batch_size=8, device="cuda")
    info = describe_from_config(DemoCNN(num_classes=3), config)
    summary = _run(config, manifest_csv, model, tmp_path / "s.h5", info)
    log = capsys.readouterr().out
    assert "lowering the batch size to 4" in log and "lowering the batch size to 2" in log
    assert summary["batch_size"] == 2 and summary["images"] == N_IMAGES
    assert np.isfinite(next(iter_shards([tmp_path / "s.h5"], ["codes"]))["codes"]).all()


def test_out_of_memory_at_batch_size_one_leaves_no_shard(tmp_path, manifest_csv):
    model = _SmallMemoryCNN(max_batch=0)
    config = _config(batch_size=4)
    info = describe_from_config(DemoCNN(num_classes=3), config)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        _run(config, manifest_csv, model, tmp_path / "features" / "s.h5", info)
    assert model.batch_sizes == [4, 2, 1]
    assert _leftovers(tmp_path / "features") == []


# --------------------------------------------------------------------------
# full disk, read-only folder: no shard and no temporary file left


def _leftovers(folder) -> list[str]:
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_full_disk_leaves_no_shard_and_no_temp_file(tmp_path, manifest_csv, monkeypatch):
    torch.manual_seed(0)
    model = DemoCNN(num_classes=3)
    config = _config()
    out = tmp_path / "features" / "shard-00000.h5"
    real_create = h5py.Group.create_dataset
    created = []

    def create_until_full(self, name, *args, **kwargs):
        if len(created) == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        created.append(name)
        return real_create(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", create_until_full)
    with pytest.raises(OSError) as err:
        _run(config, manifest_csv, model, out)
    assert err.value.errno == errno.ENOSPC
    assert len(created) == 5  # it failed mid-write
    assert _leftovers(out.parent) == []

    monkeypatch.setattr(h5py.Group, "create_dataset", real_create)  # space freed: a rerun works
    _run(config, manifest_csv, model, out)
    assert _leftovers(out.parent) == ["shard-00000.h5"]
    assert read_attrs(out)["shard_id"] == 0


def test_failed_rename_leaves_no_temp_file(tmp_path, manifest_csv, monkeypatch):
    model = DemoCNN(num_classes=3)
    out = tmp_path / "features" / "shard-00000.h5"

    def refuse(src, dst):
        assert os.path.exists(src)  # the complete temporary file is there...
        raise PermissionError(errno.EACCES, "Permission denied", str(dst))

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(PermissionError):
        _run(_config(), manifest_csv, model, out)
    assert _leftovers(out.parent) == []  # ...and removed


def test_read_only_output_folder(tmp_path, manifest_csv, monkeypatch):
    model = DemoCNN(num_classes=3)
    folder = tmp_path / "features"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root ignores folder permissions: refuse as they would
        real_file = h5py.File

        def refuse(name, mode="r", *args, **kwargs):
            if mode != "r" and os.path.dirname(os.fspath(name)) == str(folder):
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(name))
            return real_file(name, mode, *args, **kwargs)

        monkeypatch.setattr(h5py, "File", refuse)
    try:
        with pytest.raises(PermissionError):
            _run(_config(), manifest_csv, model, folder / "shard-00000.h5")
        assert _leftovers(folder) == []
    finally:
        folder.chmod(0o755)


# --------------------------------------------------------------------------
# NaN and infinite activations


class _Poison(nn.Module):
    """Identity, except: NaN everywhere for images flagged ``nan``, one +inf for ``inf``."""

    def forward(self, x, nan_rows, inf_rows):
        x = x.clone()
        x[nan_rows] = float("nan")
        x[inf_rows, :, 0, 0] = float("inf")
        return x


class _NonFiniteNet(nn.Module):
    """conv - relu - poison - conv - relu - pool - fc; white images give NaN, mid-grey +inf."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.poison = _Poison()
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        level = x.mean(dim=(1, 2, 3))  # normalised with mean 0.5, std 0.25: white 2, mid-grey ~0
        nan_rows, inf_rows = level > 1.9, level.abs() < 0.1
        h = self.poison(self.relu1(self.conv1(x)), nan_rows, inf_rows)
        return self.fc(torch.flatten(self.pool(self.relu2(self.conv2(h))), 1))


@pytest.mark.filterwarnings("ignore:receptive fields of _NonFiniteNet")
def test_nonfinite_activations_are_counted_per_layer(tmp_path, manifest_csv):
    model = _NonFiniteNet().eval()
    config = _config(batch_size=3)
    config["layers"] = ["relu1", "poison", "relu2"]
    out = tmp_path / "shard.h5"
    summary = _run(config, manifest_csv, model, out)

    n_nan = sum(grey == 255 for grey in GREYS)
    n_inf = sum(grey == 128 for grey in GREYS)
    # a map counts once per (image, channel); conv2 spreads a bad value to every channel
    expected = {"relu1": 0, "poison": 4 * (n_nan + n_inf), "relu2": 5 * (n_nan + n_inf)}
    assert read_attrs(out)["nonfinite_maps"] == expected
    assert summary["nonfinite_maps"] == expected and summary["images"] == N_IMAGES

    chunk = next(iter_shards([out], ["index", "layers/poison/max", "layers/poison/mean",
                                     "failed/index"]))
    assert len(chunk["failed/index"]) == 0
    bad_maps = ~np.isfinite(chunk["layers/poison/mean"])
    by_image = {int(i): bool(row.any()) for i, row in zip(chunk["index"], bad_maps)}
    assert by_image == {i: GREYS[i] in (255, 128) for i in range(N_IMAGES)}
    white = [i for i in range(N_IMAGES) if GREYS[i] == 255]
    assert np.isnan(chunk["layers/poison/max"][white]).all()
