"""Downstream stages refuse shards extracted with another setup."""

import copy
import json

import pytest

from convscope.extract.pipeline import extract_shard
from convscope.store.index import write_shard_index
from convscope.store.shards import ShardIdentityError
from test_extract import setup  # noqa: F401 - the shared fixture


def test_index_lists_shards_and_refuses_a_changed_config(setup):  # noqa: F811
    tmp_path, config, info, manifest, _ = setup
    paths = [tmp_path / f"shard-{i:05d}.h5" for i in range(2)]
    for i, path in enumerate(paths):
        extract_shard(config, tmp_path / "manifest.csv", info, i, path)
    index = write_shard_index(paths, config, tmp_path / "manifest.csv", tmp_path / "index.json")
    assert index["images"] + index["failed"] == len(manifest)
    assert json.loads((tmp_path / "index.json").read_text())["shards"][1]["row_range"] == [10, 16]

    changed = copy.deepcopy(config)
    changed["layers"] = ["relu2"]
    with pytest.raises(ShardIdentityError, match="layers: shard has \\['relu1', 'relu3'\\]"):
        write_shard_index(paths, changed, tmp_path / "manifest.csv", tmp_path / "index2.json")
    changed = copy.deepcopy(config)
    changed["preprocess"]["resize"] = 40
    with pytest.raises(ShardIdentityError, match="preprocess"):
        write_shard_index(paths, changed, tmp_path / "manifest.csv", tmp_path / "index3.json")
