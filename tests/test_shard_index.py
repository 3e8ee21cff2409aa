"""Downstream stages refuse shards extracted with another setup."""

import copy
import json

import pytest

from convscope.config import ModelConfig, PreprocessConfig
from convscope.store.index import write_shard_index
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
