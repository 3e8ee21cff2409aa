"""Downstream stages refuse shards extracted with another setup."""

import copy
import json

import pytest

from convscope.config import ModelConfig, PreprocessConfig
from convscope.extract.index import write_shard_index
from convscope.store.shards import ShardIdentityError
from test_extract import extract_with, setup  # noqa: F401 - the shared fixture


def _index(config, paths, manifest_csv, out):
    return write_shard_index(paths, manifest_csv, out,
                             model=ModelConfig.from_dict(config["model"]),
                             weights_file=config["model"]["weights"],
                             preprocess=PreprocessConfig.from_dict(config["preprocess"]),
                             layers=config["layers"], codes_layer=config["codes_layer"],
                             shard_size=config["extract"]["shard_size"])


def test_index_lists_shards_and_refuses_a_changed_config(setup):  # noqa: F811
    tmp_path, config, info, manifest, _ = setup
    paths = [tmp_path / f"shard-{i:05d}.h5" for i in range(2)]
    for i, path in enumerate(paths):
        extract_with(config, tmp_path / "manifest.csv", info, i, path)
    index = _index(config, paths, tmp_path / "manifest.csv", tmp_path / "index.json")
    assert index["images"] + index["failed"] == len(manifest)
    assert index["failed"] == 2
    listing = json.loads((tmp_path / "index.json").read_text())
    assert listing["shards"][1]["row_range"] == [10, len(manifest)]
    assert [s["images"] + s["failed"] for s in listing["shards"]] == [10, len(manifest) - 10]

    changed = copy.deepcopy(config)
    changed["layers"] = ["relu2"]
    with pytest.raises(ShardIdentityError, match="layers: shard has \\['relu1', 'relu3'\\]"):
        _index(changed, paths, tmp_path / "manifest.csv", tmp_path / "index2.json")
    changed = copy.deepcopy(config)
    changed["preprocess"]["resize"] = 40
    with pytest.raises(ShardIdentityError, match="preprocess"):
        _index(changed, paths, tmp_path / "manifest.csv", tmp_path / "index3.json")
    changed = copy.deepcopy(config)
    changed["extract"]["shard_size"] = 5
    with pytest.raises(ShardIdentityError, match="shard_size"):
        _index(changed, paths, tmp_path / "manifest.csv", tmp_path / "index4.json")
    assert not (tmp_path / "index4.json").exists()


def test_index_reads_every_shard_and_names_all_damaged_ones(setup):  # noqa: F811
    """A shard changed in place (same size) and a truncated one: one message names both."""
    import h5py

    from convscope.store.shards import ShardCorruptError

    tmp_path, config, info, manifest, _ = setup
    paths = [tmp_path / f"shard-{i:05d}.h5" for i in range(2)]
    for i, path in enumerate(paths):
        extract_with(config, tmp_path / "manifest.csv", info, i, path)
    with h5py.File(paths[0]) as f:
        chunk = f["layers/relu3/max"].id.get_chunk_info(0)
    size = paths[0].stat().st_size
    with open(paths[0], "r+b") as fh:
        fh.seek(chunk.byte_offset + chunk.size // 2)
        fh.write(b"\x00\x01\x02\x03")
    assert paths[0].stat().st_size == size
    paths[1].write_bytes(paths[1].read_bytes()[:2048])
    with pytest.raises(ShardCorruptError) as excinfo:
        _index(config, paths, tmp_path / "manifest.csv", tmp_path / "index.json")
    assert str(paths[0]) in str(excinfo.value) and str(paths[1]) in str(excinfo.value)
    assert "Delete them and rerun" in str(excinfo.value)
    assert not (tmp_path / "index.json").exists()
