"""Check that every shard fits the current config, and list them in one small file.

Downstream rules depend on this index, so shards extracted for another model,
layer set, preprocessing or manifest are refused before any analysis reads
them, with a message that says which setting differs.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py

from convscope.extract.pipeline import shard_identity
from convscope.store.shards import check_identity, read_attrs

__all__ = ["write_shard_index"]


def write_shard_index(shard_paths, config: dict, manifest_csv, out_json,
                      weights_file=None) -> dict:
    """Verify the shards' identity against the config; write a JSON listing of them.

    Raises `convscope.store.shards.ShardIdentityError` naming the shard and the
    differing settings.
    """
    expected = shard_identity(config, manifest_csv, weights_file)
    check_identity(shard_paths, expected)
    shards = []
    for path in shard_paths:
        with h5py.File(path, "r", locking=False) as f:
            n_images, n_failed = len(f["index"]), len(f["failed/index"])
        attrs = read_attrs(path)
        shards.append({"path": str(path), "row_range": attrs.get("row_range"),
                       "images": n_images, "failed": n_failed,
                       "device": attrs.get("device"), "precision": attrs.get("precision")})
    index = {"identity": expected, "shards": shards,
             "images": sum(s["images"] for s in shards),
             "failed": sum(s["failed"] for s in shards)}
    Path(out_json).parent.mkdir(parents=True, exist_ok=True)
    Path(out_json).write_text(json.dumps(index, indent=2))
    print(f"{len(shards)} shards, {index['images']} images, {index['failed']} failed")
    return index
