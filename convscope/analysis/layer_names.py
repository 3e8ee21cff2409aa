"""Layer names as the unit analyses meet them: checked against the shards, made into file names.

The shards list the layers they hold (attribute ``layer_names``, extraction
order). A stage that analyses some of them checks the names it was given
with `select_shard_layers`, whose message names the config key and the valid
choices (worded like `convscope.nn.layers`). Figures are written one folder
or file per layer under names from `layer_file_names`: file-name-safe and
distinct even when two layer names differ only in characters a file name
cannot hold.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from convscope.nn.layers import LayerNameError, did_you_mean, listing

__all__ = ["select_shard_layers", "safe_layer_name", "layer_file_names"]


def select_shard_layers(attrs: dict, names: str | Sequence[str] | None, key: str,
                        source: str = "the shards") -> list[str]:
    """The layers to analyse: ``names`` if all are in the shards, every shard layer if None.

    Args:
        attrs: a shard's attributes (`convscope.store.shards.read_attrs`).
        names: requested layer names, or None for all of them.
        key: the config key the names come from, for the error message.
        source: what the shards are, for the error message (e.g. a path).
    Raises:
        LayerNameError: a name is not a layer of the shards.
    """
    available = [str(name) for name in attrs.get("layer_names", [])]
    if names is None:
        return available
    names = [names] if isinstance(names, str) else [str(name) for name in names]
    for name in names:
        if name not in available:
            raise LayerNameError(f"config key {key!r}: layer {name!r} is not in {source}"
                                 f"{did_you_mean(name, available)}; valid names: "
                                 f"{listing(available)}")
    return names


def safe_layer_name(layer: str) -> str:
    """A file-name-safe version of a layer name (``features/0`` -> ``features_0``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", layer).strip("._") or "layer"


def layer_file_names(layers: Sequence[str]) -> dict[str, str]:
    """Layer -> distinct file-name-safe name (``a/b`` and ``a_b`` -> ``a_b``, ``a_b-2``)."""
    names: dict[str, str] = {}
    used: set[str] = set()
    for layer in layers:
        base = name = safe_layer_name(layer)
        suffix = 1
        while name in used:
            suffix += 1
            name = f"{base}-{suffix}"
        used.add(name)
        names[layer] = name
    return names
