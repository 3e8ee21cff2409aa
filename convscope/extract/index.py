"""Check that every shard fits the current config, and list them in one small file.

Downstream rules depend on this index, so shards extracted for another model,
layer set, preprocessing or manifest are refused before any analysis reads
them, with a message that says which setting differs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from convscope.config.sections import ModelConfig, PreprocessConfig
from convscope.config.validate import config_hash
from convscope.nn.models import model_identity
from convscope.store.atomic import write_text
from convscope.store.hashes import file_sha256
from convscope.store.shards import check_identity, open_shard, read_attrs, verify_shards

__all__ = ["shard_identity", "write_shard_index"]


def shard_identity(manifest_csv: str | os.PathLike, *, model: ModelConfig,
                   weights_file: str | os.PathLike | None, preprocess: PreprocessConfig,
                   layers: Sequence[str], codes_layer: str | None, shard_size: int) -> dict:
    """What must match for shards to be combined: model (kind, name, weights hash), layers,
    preprocessing (hash of the section), manifest (file hash) and shard size."""
    return {
        "model": model_identity(model, weights_file),
        "layers": list(layers),
        "codes_layer": codes_layer,
        "preprocess": config_hash({"preprocess": preprocess.to_dict()}, ["preprocess"]),
        "manifest_sha256": file_sha256(manifest_csv),
        "shard_size": int(shard_size),
    }


def write_shard_index(shard_paths: Sequence[str | os.PathLike],
                      manifest_csv: str | os.PathLike, out_json: str | os.PathLike, *, model: ModelConfig,
                      weights_file: str | os.PathLike | None, preprocess: PreprocessConfig,
                      layers: Sequence[str], codes_layer: str | None, shard_size: int) -> dict:
    """Verify the shards' identity against the settings; write a JSON listing of them.

    Every dataset of every shard is read first, checking its checksums: damaged
    shards raise one `convscope.store.shards.ShardCorruptError` that lists them
    all. Raises `convscope.store.shards.ShardIdentityError` naming the shard and the
    differing settings. Returns the listing: ``identity``, ``shards`` (path, row
    range, images, failed, device, precision of each), ``images``, ``failed``.
    """
    expected = shard_identity(manifest_csv, model=model, weights_file=weights_file,
                              preprocess=preprocess, layers=layers, codes_layer=codes_layer,
                              shard_size=shard_size)
    verify_shards(shard_paths)
    check_identity(shard_paths, expected)
    shards = [_describe_shard(path) for path in shard_paths]
    index = {"identity": expected, "shards": shards,
             "images": sum(s["images"] for s in shards),
             "failed": sum(s["failed"] for s in shards)}
    write_text(out_json, json.dumps(index, indent=2))
    print(f"{len(shards)} shards, {index['images']} images, {index['failed']} failed")
    return index


def _describe_shard(path: str | os.PathLike) -> dict:
    with open_shard(path) as f:
        n_images, n_failed = len(f["index"]), len(f["failed/index"])
    attrs = read_attrs(path)
    return {"path": str(path), "row_range": attrs.get("row_range"),
            "images": n_images, "failed": n_failed,
            "device": attrs.get("device"), "precision": attrs.get("precision")}
