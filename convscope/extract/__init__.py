"""Extraction: the model over one shard of the manifest, into a shard file.

- `loader`: the shard's images, decoded on the CPU or the GPU, in model batches;
- `summarize`: per-channel statistics computed on the device in forward hooks;
- `backoff`: a batch through the model, halving the batch size on out-of-memory;
- `buffers`: host arrays filled by manifest row;
- `pipeline`: `extract_shard`, the loop over them.
"""

from convscope.extract.pipeline import ImageFailure, extract_shard, n_shards, shard_rows
from convscope.extract.index import shard_identity

__all__ = ["ImageFailure", "extract_shard", "n_shards", "shard_rows", "shard_identity"]
