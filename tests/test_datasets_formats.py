"""The datasets people have: WebDataset tars and Hugging Face datasets (save_to_disk and
parquet), written in the test with the ``webdataset`` and ``datasets`` packages.

Each is read into a manifest and extracted by `extract_shard`; the codes must equal a
plain-torch forward pass over the same images decoded by hand with Pillow."""

from __future__ import annotations

import io

import datasets as hf_datasets  # the test extra has datasets and webdataset
import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import webdataset as wds
from PIL import Image

from convscope.config import ExtractConfig, ModelConfig, PreprocessConfig, validate_config
from convscope.data.manifest import DatasetError, build_manifest, read_manifest, write_manifest
from convscope.data.preprocess import to_model_input
from convscope.data.tars import expand_tar_pattern
from convscope.extract.pipeline import extract_shard
from convscope.nn.models import DemoCNN
from convscope.preflight import PreflightError, check_dataset
from convscope.store.rows import manifest_shards, tar_runs
from conftest import describe_from_config


CLASSES = ["cat", "dog", "eel"]


def _png(rng, size) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size + 3, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pictures():
    """Nine PNG images (bytes), their labels and a per-image attribute."""
    rng = np.random.default_rng(3)
    return [(_png(rng, 30 + 2 * i), i % 3, float(i) / 2) for i in range(9)]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    weights = folder / "model.pt"
    torch.save(DemoCNN(num_classes=3).state_dict(), weights)
    network = DemoCNN(num_classes=3)
    network.load_state_dict(torch.load(weights))
    return str(weights), network.eval()


def _extract(tmp_path, manifest, classes, model, dataset: dict):
    """Extract the manifest's one shard; ``(shard file, manifest read back)``."""
    weights, network = model
    write_manifest(manifest, classes, tmp_path / "manifest.csv")
    config = validate_config({
        "dataset": dataset, "model": {"kind": "demo", "weights": weights},
        "preprocess": {"input_size": 32, "resize": 36}, "layers": ["relu1", "relu3"],
        "extract": {"shard_size": 50, "batch_size": 4, "num_workers": 0, "thumb_px": 8,
                    "device": "cpu"}})
    outs = []
    for shard in range(len(manifest_shards(manifest["path"].tolist(), 50))):
        outs.append(tmp_path / f"shard-{shard:05d}.h5")
        extract_shard(tmp_path / "manifest.csv", describe_from_config(network, config), shard,
                      outs[-1], model=ModelConfig.from_dict(config["model"]),
                      preprocess=PreprocessConfig.from_dict(config["preprocess"]),
                      extract=ExtractConfig.from_dict(config["extract"]),
                      layers=["relu1", "relu3"], codes_layer=None, weights_file=weights)
    return outs, read_manifest(tmp_path / "manifest.csv")[0], config


def _by_hand(network, image_bytes: list[bytes], preprocess) -> tuple[np.ndarray, np.ndarray]:
    """Plain torch: Pillow decode, the model, a hook on the classifier's input."""
    images = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in image_bytes]
    seen = {}
    hook = network.fc.register_forward_hook(lambda m, i, o: seen.update(code=i[0]))
    with torch.no_grad():
        logits = network(to_model_input(images, preprocess))
    hook.remove()
    return seen["code"].numpy(), torch.softmax(logits, 1).amax(1).numpy()


def _check_codes(outs, network, expected_bytes, expected_labels, config):
    """Codes, top probability and labels of the shards ``outs`` (in order) against
    `_by_hand`; returns the failed rows ``{manifest row: reason}``."""
    codes, prob = _by_hand(network, expected_bytes, config["preprocess"])
    found = {"codes": [], "prob": [], "label": []}
    failed = {}
    for out in outs:
        with h5py.File(out, "r") as f:
            found["codes"].append(f["codes"][()])
            found["prob"].append(f["topk/prob"][:, 0])
            found["label"].append(f["label"][()])
            failed.update((int(i), r.decode()) for i, r in zip(f["failed/index"][()],
                                                                f["failed/reason"][()]))
    np.testing.assert_allclose(np.concatenate(found["codes"]), codes, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.concatenate(found["prob"]), prob, rtol=1e-4)
    np.testing.assert_array_equal(np.concatenate(found["label"]), expected_labels)
    return failed


def _write_tars(folder, pictures, corrupt: int) -> None:
    for shard in range(3):
        with wds.TarWriter(str(folder / f"shards-{shard:03d}.tar")) as sink:
            for i in range(3 * shard, 3 * shard + 3):
                png, label, brightness = pictures[i]
                sink.write({"__key__": f"sample{i:04d}", "png": b"broken" if i == corrupt else png,
                            "cls": label, "json": {"brightness_given": brightness, "site": f"s{i % 2}"}})


def test_webdataset_tars_give_the_codes_of_a_plain_torch_loop(tmp_path, pictures, model):
    _write_tars(tmp_path, pictures, corrupt=4)
    pattern = str(tmp_path / "shards-{000..002}.tar")
    assert expand_tar_pattern(pattern) == [str(tmp_path / f"shards-{i:03d}.tar") for i in range(3)]
    manifest, classes = build_manifest("webdataset", pattern, class_names=CLASSES)
    assert classes == CLASSES
    assert manifest["key"].tolist() == [f"sample{i:04d}" for i in range(9)]  # tar order
    assert manifest["slot"].tolist() == [0, 1, 2] * 3
    assert manifest["site"].tolist() == [f"s{i % 2}" for i in range(9)]
    np.testing.assert_allclose(manifest["brightness_given"], [p[2] for p in pictures])
    outs, read_back, config = _extract(tmp_path, manifest, classes, model,
                                       {"kind": "webdataset", "path": pattern, "class_names": CLASSES})
    assert len(outs) == 3  # one shard per tar, whatever extract.shard_size (50 here)
    assert read_back["path"].tolist() == manifest["path"].tolist()
    good = [i for i in range(9) if i != 4]
    failed = _check_codes(outs, model[1], [pictures[i][0] for i in good],
                          [pictures[i][1] for i in good], config)
    assert failed == {4: "cannot identify image file"}  # the corrupt member, recorded


def test_tar_runs_are_the_shards_of_a_webdataset_manifest():
    assert tar_runs(["a.tar", "a.tar", "b.tar", "c.TAR"]) == [range(0, 2), range(2, 3), range(3, 4)]
    assert tar_runs(["a.tar", "x.png"]) is None
    assert manifest_shards(["x.png"] * 5, 2) == [range(0, 2), range(2, 4), range(4, 5)]


def test_webdataset_labels_from_a_json_field(tmp_path, pictures):
    with wds.TarWriter(str(tmp_path / "a.tar")) as sink:
        for i in range(3):
            sink.write({"__key__": f"k{i}", "jpg": pictures[i][0],
                        "json": {"animal": CLASSES[2 - i], "split": "test"}})
    manifest, classes = build_manifest("webdataset", [str(tmp_path / "a.tar")],
                                       label_column="animal", class_names=CLASSES)
    assert manifest["label"].tolist() == [2, 1, 0] and manifest["split"].tolist() == ["test"] * 3
    assert "animal" not in manifest.columns


def _preflight(path) -> None:
    config = validate_config({"dataset": {"kind": "webdataset", "path": path}})
    check_dataset(config)


def test_empty_or_truncated_tar_is_refused_before_any_job_naming_the_file(tmp_path, pictures):
    _write_tars(tmp_path, pictures, corrupt=-1)
    whole = (tmp_path / "shards-001.tar").read_bytes()
    (tmp_path / "shards-001.tar").write_bytes(whole[:1500])  # cut inside the first image
    with pytest.raises(PreflightError, match=r"shards-001\.tar.*truncated"):
        _preflight(str(tmp_path / "shards-{000..002}.tar"))
    (tmp_path / "empty.tar").write_bytes(b"")
    with pytest.raises(PreflightError, match=r"empty\.tar is empty"):
        _preflight([str(tmp_path / "shards-000.tar"), str(tmp_path / "empty.tar")])
    with pytest.raises(DatasetError, match=r"missing\.tar does not exist"):
        build_manifest("webdataset", str(tmp_path / "missing.tar"))


def test_huggingface_save_to_disk_and_parquet_give_the_codes_of_a_plain_torch_loop(
        tmp_path, pictures, model):
    features = hf_datasets.Features({"image": hf_datasets.Image(),
                                     "label": hf_datasets.ClassLabel(names=CLASSES),
                                     "brightness_given": hf_datasets.Value("float32")})
    data = hf_datasets.Dataset.from_dict(
        {"image": [{"bytes": p[0], "path": None} for p in pictures],
         "label": [p[1] for p in pictures], "brightness_given": [p[2] for p in pictures]},
        features=features)
    data.save_to_disk(str(tmp_path / "saved"))
    manifest, classes = build_manifest("huggingface", tmp_path / "saved")
    assert classes == CLASSES  # from the ClassLabel feature
    assert manifest["slot"].tolist() == list(range(9))
    np.testing.assert_allclose(manifest["brightness_given"], [p[2] for p in pictures])
    outs, _, config = _extract(tmp_path, manifest, classes, model,
                              {"kind": "huggingface", "path": str(tmp_path / "saved")})
    assert _check_codes(outs, model[1], [p[0] for p in pictures], [p[1] for p in pictures],
                        config) == {}
    # the same rows as parquet (plain binary column and integer labels), one broken
    table = pa.table({"img": [b"broken"] + [p[0] for p in pictures[1:]],
                      "label": [p[1] for p in pictures]})
    pq.write_table(table, tmp_path / "data.parquet")
    manifest, classes = build_manifest("huggingface", tmp_path / "data.parquet",
                                       class_names=CLASSES)
    outs, _, config = _extract(tmp_path, manifest, classes, model,
                              {"kind": "huggingface", "path": str(tmp_path / "data.parquet")})
    assert _check_codes(outs, model[1], [p[0] for p in pictures[1:]],
                        [p[1] for p in pictures[1:]], config) == {0: "cannot identify image file"}


def test_parquet_without_an_image_column_is_refused_naming_file_and_columns(tmp_path):
    pq.write_table(pa.table({"caption": ["a", "b"], "label": [0, 1]}), tmp_path / "t.parquet")
    config = validate_config({"dataset": {"kind": "huggingface", "path": str(tmp_path / "t.parquet")}})
    with pytest.raises(PreflightError, match=r"t\.parquet has no image column.*columns found: "
                                             r"caption, label"):
        check_dataset(config)
    with pytest.raises(DatasetError, match=r"t\.parquet has no image column"):
        build_manifest("huggingface", tmp_path / "t.parquet")
