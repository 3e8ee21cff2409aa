"""Old spellings of config keys, read as the new key with a warning.

A schema property may list its old names under ``aliases`` (``units.top_k`` has
``aliases: [topk]``). A config that uses an old name is read as if it used the
new one, with one `ConfigAliasWarning` naming the new key; a config that gives
both spellings of one key is refused, naming both.
"""

from __future__ import annotations

import warnings

__all__ = ["ConfigAliasWarning", "alias_table", "resolve_aliases"]


class ConfigAliasWarning(UserWarning):
    """A config key was given by its old spelling (shown once per key on the console)."""


def alias_table(schema: dict, prefix: str = "") -> dict[str, str]:
    """Every old dotted key -> its new dotted key, e.g. ``{"units.topk": "units.top_k"}``."""
    table = {}
    for key, sub in schema.get("properties", {}).items():
        for old in sub.get("aliases", []):
            table[prefix + old] = prefix + key
        if sub.get("properties"):
            table.update(alias_table(sub, f"{prefix}{key}."))
    return table


def resolve_aliases(instance: dict, schema: dict, error: type[Exception] = ValueError,
                    prefix: str = "") -> None:
    """Rename old keys of ``instance`` (a raw config, changed in place) to the schema's keys.

    Raises ``error`` naming both spellings when a mapping holds a key under both.
    """
    for key, sub in schema.get("properties", {}).items():
        for old in sub.get("aliases", []):
            if old not in instance:
                continue
            if key in instance:
                raise error(f"config keys {prefix + old!r} and {prefix + key!r} are two spellings "
                            f"of one setting; keep only {prefix + key!r}")
            instance[key] = instance.pop(old)
            warnings.warn(f"config key {prefix + old!r} is an old spelling: read as "
                          f"{prefix + key!r} (rename it in your config)",
                          ConfigAliasWarning, stacklevel=2)
        if isinstance(instance.get(key), dict) and sub.get("properties"):
            resolve_aliases(instance[key], sub, error, f"{prefix}{key}.")
