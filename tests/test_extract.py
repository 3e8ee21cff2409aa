"""Extraction into shards: contract, values against a direct forward pass, determinism."""

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from convscope.config import ExtractConfig, ModelConfig, PreprocessConfig, validate_config
from convscope.extract.pipeline import extract_shard, n_shards, shard_rows, tf32_mode
from convscope.data.images import load_image
from convscope.data.manifest import build_manifest, write_manifest
from convscope.nn.models import DemoCNN
from convscope.data.preprocess import to_model_input
from convscope.store.shards import ShardIdentityError, check_identity, read_attrs, read_identity
from conftest import describe_from_config


def extract_with(config: dict, manifest_csv, model_info: dict, shard_id: int, out, **kwargs):
    """`extract_shard` with the sections of a validated config (weights: ``model.weights``)."""
    return extract_shard(manifest_csv, model_info, shard_id, out,
                         model=ModelConfig.from_dict(config["model"]),
                         preprocess=PreprocessConfig.from_dict(config["preprocess"]),
                         extract=ExtractConfig.from_dict(config["extract"]),
                         layers=config["layers"], codes_layer=config["codes_layer"],
                         weights_file=config["model"]["weights"], **kwargs)


@pytest.fixture
def setup(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("a", "b", "c"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(5):
            size = (40 + 7 * i, 30 + 5 * i)
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
                tmp_path / "images" / cls / f"{i}.png")
    # two unreadable files among the first ten rows (shard 0): a/broken.png, a/empty.png
    (tmp_path / "images" / "a" / "broken.png").write_bytes(b"not an image")
    (tmp_path / "images" / "a" / "empty.png").write_bytes(b"")
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
        "extract": {"shard_size": 10, "batch_size": 4, "num_workers": 0, "thumb_px": 8,
                    "device": "cpu"},
    })
    model = DemoCNN(num_classes=3)
    model.load_state_dict(torch.load(weights))
    info = describe_from_config(model.eval(), config)
    return tmp_path, config, info, manifest, model.eval()


def test_shard_ranges():
    assert n_shards(25, 10) == 3 and n_shards(0, 10) == 1
    assert list(shard_rows(25, 10, 2)) == [20, 21, 22, 23, 24]


def test_shard_contract_and_values(setup):
    tmp_path, config, info, manifest, model = setup
    out = tmp_path / "shard-00000.h5"
    summary = extract_with(config, tmp_path / "manifest.csv", info, 0, out)
    assert summary["images"] == 8 and summary["failed"] == 2
    with h5py.File(out, "r") as f:
        index = f["index"][()]
        assert f["codes"].shape == (len(index), 128)
        assert f["topk/class"].shape == (len(index), 5)
        assert f["layers/relu1/max"].shape == (len(index), 32)
        assert f["thumbs"].shape == (len(index), 8, 8, 3) and f["thumbs"].dtype == np.uint8
        assert set(f["image_attrs"]) >= {"brightness", "width", "height"}
        failed = dict(zip(f["failed/index"][()].tolist(),
                          [r.decode() for r in f["failed/reason"][()]]))
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
        probs = torch.softmax(logits, 1)
        top = probs.topk(3, 1)
        # Classes by their probability, rank by rank: two classes whose probabilities agree
        # within float error (another batch, another summation order) may come either way.
        classes = f["topk/class"][:, :3].astype(np.int64)
        assert all(len(set(row)) == 3 for row in classes.tolist())
        np.testing.assert_allclose(np.take_along_axis(probs.numpy(), classes, 1),
                                   top.values.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(f["topk/prob"][:, :3], top.values.numpy(), rtol=1e-4)
        assert (f["topk/class"][:, 3:] == -1).all()  # only 3 classes
        np.testing.assert_array_equal(f["label"][()], rows.loc[index, "label"].to_numpy())
        np.testing.assert_array_equal(f["image_attrs/width"][()], [im.shape[1] for im in images])
    by_name = {path.rsplit("/", 1)[-1]: int(i) for i, path in zip(manifest["index"],
                                                                  manifest["path"])}
    assert failed == {by_name["broken.png"]: "cannot identify image file",
                      by_name["empty.png"]: "zero-byte file"}
    assert sorted(set(index) | set(failed)) == list(range(10))  # every row: stored or failed
    attrs = read_attrs(out)
    assert attrs["layer_names"] == ["relu1", "relu3"]
    assert attrs["receptive_fields"]["relu1"]["size"] == [5, 5]
    assert attrs["class_names"] == ["a", "b", "c"]


def test_failed_image_is_recorded_and_shard_completes(setup):
    tmp_path, config, info, manifest, _ = setup
    broken = int(manifest.index[manifest["path"].str.endswith("broken.png")][0])
    empty = int(manifest.index[manifest["path"].str.endswith("empty.png")][0])
    out = tmp_path / "shard.h5"
    extract_with(config, tmp_path / "manifest.csv", info, 0, out)
    with h5py.File(out, "r") as f:
        failed = dict(zip(f["failed/index"][()].tolist(),
                          [r.decode() for r in f["failed/reason"][()]]))
        assert list(failed) == sorted(failed)  # in manifest order
        assert failed == {broken: "cannot identify image file", empty: "zero-byte file"}
        assert not {broken, empty} & set(f["index"][()])


def test_same_config_same_numbers_and_identity_check(setup):
    tmp_path, config, info, _, _ = setup
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    extract_with(config, tmp_path / "manifest.csv", info, 1, a)
    extract_with(config, tmp_path / "manifest.csv", info, 1, b)
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
        extract_with(config, tmp_path / "manifest.csv", info, 0, out)
    assert not out.exists()
    assert not list(tmp_path.glob(".shard-00000.h5.tmp*"))


# --------------------------------------------------------------------------
# the parts on their own


def test_buffers_place_results_by_manifest_row_whatever_the_order():
    from convscope.extract.buffers import ShardBuffers

    rows = [20, 21, 22, 23, 24]
    buffers = ShardBuffers(rows, {"conv/1": [2, 4, 4]}, codes_dim=3, thumb_px=2)

    def batch(index):
        index = torch.tensor(index, dtype=torch.int64)
        n, value = len(index), index.float()[:, None]
        return {"index": index, "label": index.int() - 20, "codes": value.repeat(1, 3),
                "layers/conv\\1/max": value.repeat(1, 2), "attrs": value.repeat(1, 7),
                "thumbs": torch.full((n, 2, 2, 3), 7, dtype=torch.uint8) * (index[:, None, None,
                                                                                  None] - 19)}

    buffers.put(batch([24, 21]))  # out of order, and a later batch first
    buffers.put(batch([22, 20]))  # row 23 failed: never put
    out = buffers.finished()
    np.testing.assert_array_equal(out["index"], [20, 21, 22, 24])
    np.testing.assert_array_equal(out["label"], [0, 1, 2, 4])
    np.testing.assert_array_equal(out["codes"][:, 0], [20, 21, 22, 24])
    np.testing.assert_array_equal(out["layers/conv\\1/max"][:, 1], [20, 21, 22, 24])
    np.testing.assert_array_equal(out["image_attrs/aspect"], [20, 21, 22, 24])
    np.testing.assert_array_equal(out["thumbs"][:, 0, 0, 0], [7, 14, 21, 35])
    assert out["layers/conv\\1/mean"].shape == (4, 2) and buffers.n_filled == 4
    with pytest.raises(KeyError):
        buffers.put(batch([25]))


def test_channel_summary_matches_numpy():
    from convscope.extract.summarize import channel_summary, top5

    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 4, 5, 6)).astype(np.float32)
    unit_max, unit_argmax, unit_mean = channel_summary(torch.from_numpy(maps))
    flat = maps.reshape(3, 4, -1)
    np.testing.assert_array_equal(unit_max.numpy(), flat.max(axis=2))
    np.testing.assert_array_equal(unit_argmax.numpy(), flat.argmax(axis=2))
    np.testing.assert_allclose(unit_mean.numpy(), flat.astype(np.float64).mean(axis=2), rtol=1e-5)
    assert unit_argmax.dtype == torch.int32 and unit_mean.dtype == torch.float32
    vectors = channel_summary(torch.from_numpy(maps[:, :, 0, 0]))  # (N, C): itself, at 0
    np.testing.assert_array_equal(vectors[0].numpy(), maps[:, :, 0, 0])
    assert (vectors[1].numpy() == 0).all()

    logits = torch.tensor([[0.0, 2.0, 1.0]])
    top_class, top_prob = top5(logits)
    probs = np.exp([0.0, 2.0, 1.0]) / np.exp([0.0, 2.0, 1.0]).sum()
    np.testing.assert_array_equal(top_class.numpy(), [[1, 2, 0, -1, -1]])
    np.testing.assert_allclose(top_prob.numpy(), [[probs[1], probs[2], probs[0], 0, 0]],
                               rtol=1e-6)


def test_summarize_activations_reads_layers_and_codes_then_unhooks():
    from convscope.extract.summarize import summarize_activations

    torch.manual_seed(0)
    model = DemoCNN(num_classes=3).eval()
    x = torch.randn(2, 3, 32, 32)
    kept = {}
    handles = [model.relu2.register_forward_hook(lambda m, i, o: kept.__setitem__("relu2", o)),
               model.fc.register_forward_pre_hook(lambda m, i: kept.__setitem__("fc_in", i[0]))]
    with torch.no_grad():
        logits = model(x)
    for handle in handles:
        handle.remove()
    with torch.no_grad(), summarize_activations(model, ["relu2"], "fc", "input") as seen:
        model(x)
        out = seen.results(logits)
    relu2 = kept["relu2"].flatten(2)
    torch.testing.assert_close(out["layers/relu2/max"], relu2.amax(2))
    torch.testing.assert_close(out["codes"], kept["fc_in"].flatten(1))
    # a module that is both an analysed layer and the codes (its output): one hook does both
    with torch.no_grad(), summarize_activations(model, ["relu2"], "relu2", "output") as seen:
        model(x)
        torch.testing.assert_close(seen.codes, relu2.flatten(1))
        torch.testing.assert_close(seen.layers["relu2"][2], relu2.mean(2))
    assert not model.relu2._forward_hooks and not model.fc._forward_pre_hooks


def _tf32_flags():
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


@pytest.mark.parametrize("before", [False, True])
def test_tf32_mode_sets_and_restores_the_flags(before):
    torch.backends.cuda.matmul.allow_tf32 = before
    torch.backends.cudnn.allow_tf32 = before
    try:
        saved = _tf32_flags()
        for enabled in (False, True):
            with tf32_mode(enabled):
                assert _tf32_flags() == (enabled, enabled)
            assert _tf32_flags() == saved
        with pytest.raises(RuntimeError), tf32_mode(not before):
            raise RuntimeError("boom")
        assert _tf32_flags() == saved  # restored after an error too
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = True  # torch's defaults


def test_tf32_setting_is_applied_recorded_and_changes_nothing_on_cpu(setup):
    tmp_path, config, info, _, model = setup
    seen = []
    model.relu1.register_forward_hook(lambda *_: seen.append(_tf32_flags()))
    saved = _tf32_flags()
    outputs = {}
    for tf32 in (False, True):
        cfg = validate_config({**config, "extract": {**config["extract"], "tf32": tf32}})
        outputs[tf32] = tmp_path / f"tf32-{tf32}.h5"
        seen.clear()
        extract_with(cfg, tmp_path / "manifest.csv", info, 1, outputs[tf32], network=model)
        assert seen and set(seen) == {(tf32, tf32)}  # set during the forward passes
        assert _tf32_flags() == saved  # and restored afterwards
        assert read_attrs(outputs[tf32])["tf32"] is tf32
    with h5py.File(outputs[False]) as fa, h5py.File(outputs[True]) as fb:
        for name in ("codes", "layers/relu1/max", "topk/prob"):
            np.testing.assert_array_equal(fa[name][()], fb[name][()])
    assert validate_config({})["extract"]["tf32"] is False


@pytest.mark.gpu
def test_fp32_on_gpu_matches_cpu_without_tf32(setup):
    """precision fp32, tf32 false on CUDA: within 1e-4 of the CPU numbers (make test-gpu)."""
    tmp_path, config, info, _, _ = setup
    shards = {}
    for device in ("cpu", "cuda"):
        cfg = validate_config({**config, "extract": {**config["extract"], "device": device,
                                                     "decode": "cpu", "tf32": False}})
        shards[device] = tmp_path / f"{device}.h5"
        extract_with(cfg, tmp_path / "manifest.csv", info, 1, shards[device])
    assert read_attrs(shards["cuda"])["tf32"] is False
    with h5py.File(shards["cpu"]) as fc, h5py.File(shards["cuda"]) as fg:
        for name in ("codes", "layers/relu1/max", "layers/relu3/mean", "topk/prob"):
            np.testing.assert_allclose(fg[name][()], fc[name][()], rtol=1e-4, atol=1e-4,
                                       err_msg=name)
