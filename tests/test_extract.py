"""Extraction into shards: contract, values against a direct forward pass, determinism."""

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from convscope.config.validate import validate_config
from convscope.extract.pipeline import extract_shard, n_shards, shard_rows
from convscope.data.images import load_image
from convscope.data.manifest import build_manifest, write_manifest
from convscope.nn.model_info import describe_model
from convscope.nn.models import DemoCNN
from convscope.data.preprocess import to_model_input
from convscope.store.shards import ShardIdentityError, check_identity, read_attrs, read_identity


@pytest.fixture
def setup(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("a", "b", "c"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(5):
            size = (40 + 7 * i, 30 + 5 * i)
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
                tmp_path / "images" / cls / f"{i}.png")
    (tmp_path / "images" / "b" / "broken.png").write_bytes(b"not an image")
    manifest, classes = build_manifest("folder", str(tmp_path / "images"))
    write_manifest(manifest, classes, tmp_path / "manifest.csv")
    torch.manual_seed(0)
    weights = tmp_path / "model.pt"
    torch.save(DemoCNN(num_classes=3).state_dict(), weights)
    config = validate_config({
        "dataset": {"kind": "folder", "path": str(tmp_path / "images")},
        "model": {"kind": "demo", "weights": str(weights)},
        "preprocess": {"input_size": 32, "resize": 36},
        "layers": ["relu1", "relu3"],
        "extract": {"shard_size": 10, "batch_size": 4, "num_workers": 0, "thumb_size": 8,
                    "device": "cpu"},
    })
    model = DemoCNN(num_classes=3)
    model.load_state_dict(torch.load(weights))
    info = describe_model(model.eval(), config)
    return tmp_path, config, info, manifest, model.eval()


def test_shard_ranges():
    assert n_shards(25, 10) == 3 and n_shards(0, 10) == 1
    assert list(shard_rows(25, 10, 2)) == [20, 21, 22, 23, 24]


def test_shard_contract_and_values(setup):
    tmp_path, config, info, manifest, model = setup
    out = tmp_path / "shard-00000.h5"
    summary = extract_shard(config, tmp_path / "manifest.csv", info, 0, out)
    assert summary["images"] + summary["failed"] == 10
    with h5py.File(out, "r") as f:
        index = f["index"][()]
        assert f["codes"].shape == (len(index), 128)
        assert f["topk/class"].shape == (len(index), 5)
        assert f["layers/relu1/max"].shape == (len(index), 32)
        assert f["thumbs"].shape == (len(index), 8, 8, 3) and f["thumbs"].dtype == np.uint8
        assert set(f["image_attrs"]) >= {"brightness", "width", "height"}
        failed = list(f["failed/index"][()])
        rows = manifest.set_index("index")
        # direct forward pass of the same images
        images = [load_image(rows.loc[i, "path"]) for i in index]
        x = to_model_input(images, config["preprocess"])
        feats = {}
        hook = model.relu3.register_forward_hook(lambda m, i, o: feats.__setitem__("relu3", o))
        with torch.no_grad():
            logits = model(x)
        hook.remove()
        relu3 = feats["relu3"].flatten(2)
        np.testing.assert_allclose(f["layers/relu3/max"][()], relu3.amax(2).numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(f["layers/relu3/mean"][()], relu3.mean(2).numpy(), rtol=1e-4, atol=1e-5)
        argmax = f["layers/relu3/argmax"][()]
        picked = np.take_along_axis(relu3.numpy(), argmax[..., None].astype(np.int64), 2)[..., 0]
        np.testing.assert_allclose(picked, relu3.amax(2).numpy(), rtol=1e-5)
        top = torch.softmax(logits, 1).topk(3, 1)
        np.testing.assert_array_equal(f["topk/class"][:, :3], top.indices.numpy())
        np.testing.assert_allclose(f["topk/prob"][:, :3], top.values.numpy(), rtol=1e-4)
        assert (f["topk/class"][:, 3:] == -1).all()  # only 3 classes
        np.testing.assert_array_equal(f["label"][()], rows.loc[index, "label"].to_numpy())
        np.testing.assert_array_equal(f["image_attrs/width"][()], [im.shape[1] for im in images])
    broken = manifest.index[manifest["path"].str.endswith("broken.png")][0]
    if broken < 10:
        assert failed == [broken]
    attrs = read_attrs(out)
    assert attrs["layer_names"] == ["relu1", "relu3"]
    assert attrs["receptive_fields"]["relu1"]["size"] == [5, 5]
    assert attrs["class_names"] == ["a", "b", "c"]


def test_failed_image_is_recorded_and_shard_completes(setup):
    tmp_path, config, info, manifest, _ = setup
    broken = int(manifest.index[manifest["path"].str.endswith("broken.png")][0])
    shard = broken // 10
    out = tmp_path / "shard.h5"
    extract_shard(config, tmp_path / "manifest.csv", info, shard, out)
    with h5py.File(out, "r") as f:
        assert list(f["failed/index"][()]) == [broken]
        assert "cannot identify image file" in f["failed/reason"][0].decode()
        assert broken not in set(f["index"][()])


def test_same_config_same_numbers_and_identity_check(setup):
    tmp_path, config, info, _, _ = setup
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    extract_shard(config, tmp_path / "manifest.csv", info, 1, a)
    extract_shard(config, tmp_path / "manifest.csv", info, 1, b)
    with h5py.File(a) as fa, h5py.File(b) as fb:
        for name in ("codes", "layers/relu1/max", "layers/relu3/argmax", "topk/prob", "thumbs"):
            np.testing.assert_array_equal(fa[name][()], fb[name][()])
    identity = read_identity(a)
    check_identity([a, b], identity)
    changed = dict(identity, layers=["relu2"])
    with pytest.raises(ShardIdentityError, match="layers"):
        check_identity([a], changed)


def test_no_partial_file_when_extraction_fails(setup, monkeypatch):
    tmp_path, config, info, _, _ = setup
    import convscope.store.shards as shards

    def explode(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shards.h5py.Group, "create_dataset", explode)
    out = tmp_path / "shard-00000.h5"
    with pytest.raises(OSError):
        extract_shard(config, tmp_path / "manifest.csv", info, 0, out)
    assert not out.exists()
    assert not list(tmp_path.glob(".shard-00000.h5.tmp*"))
