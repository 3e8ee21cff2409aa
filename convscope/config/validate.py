"""Validate a workflow config against the schema (convscope/config/schema.yaml), filling defaults.

Errors name the key (``extract.shard_size``) and what would be valid, so a
typo stops the run before any job starts.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
from pathlib import Path

import jsonschema
import yaml

from convscope.config.aliases import resolve_aliases
from convscope.config.auto import apply_model_facts, missing_auto_keys

__all__ = ["ConfigError", "SCHEMA_PATH", "load_schema", "validate_config", "load_config",
           "config_hash", "merge_configs", "describe_config", "write_config_used"]

SCHEMA_PATH = Path(__file__).resolve().parent / "schema.yaml"


class ConfigError(ValueError):
    """The config has an unknown key, a wrong type or a value out of range."""


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    """The schema as a new dict (read with libyaml when present: it is read at every import)."""
    with open(path) as fh:
        return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _fill_defaults(instance: dict, schema: dict) -> None:
    """Insert schema defaults for absent keys, recursively (before validation)."""
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(instance[key], sub)


def _subschema(schema: dict, path) -> dict:
    for part in path:
        schema = schema.get("properties", {}).get(part, {})
    return schema


def _describe(error: jsonschema.ValidationError, schema: dict) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        allowed = sorted(_subschema(schema, error.absolute_path).get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        lines = []
        for key in unknown:
            full = f"{where}.{key}" if error.absolute_path else key
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"unknown config key {full!r}{hint}; valid keys here: "
                         + ", ".join(allowed))
        return "\n".join(lines)
    if error.validator == "enum":
        return (f"config key {where!r} is {error.instance!r}; valid values: "
                + ", ".join(repr(v) for v in error.validator_value))
    if error.validator in ("type", "oneOf"):
        wanted = _subschema(schema, error.absolute_path)
        kind = wanted.get("type") or [s.get("type") for s in wanted.get("oneOf", [])]
        return f"config key {where!r} is {error.instance!r}, which is not of type {kind}"
    return f"config key {where!r}: {error.message}"


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Return a copy of ``config`` with defaults filled, or raise `ConfigError`.

    ``preprocess: auto`` keys and the class names of torchvision weights named by enum are
    read from the model (`convscope.config.auto`, in a child process: torch stays unimported).

    Every problem found is listed, one per line.
    """
    schema = schema or load_schema()
    config = copy.deepcopy(dict(config))
    resolve_aliases(config, schema, ConfigError)
    missing_auto = missing_auto_keys(config)
    _fill_defaults(config, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("invalid config:\n" + "\n".join(_describe(e, schema) for e in errors))
    try:
        apply_model_facts(config, missing_auto)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    _normalise(config)
    _fill_seeds(config, schema, config.get("seed"))
    return config


def _fill_seeds(section: dict, schema: dict, seed) -> None:
    """A null ``seed`` in a section takes the seed of the section around it, up to the
    top-level ``seed`` (``synthesis.adversarial.seed`` null -> ``synthesis.seed``)."""
    if "seed" in section and section["seed"] is None:
        section["seed"] = seed
    for key, sub in schema.get("properties", {}).items():
        if isinstance(section.get(key), dict) and sub.get("properties"):
            _fill_seeds(section[key], sub, section.get("seed", seed))


def _expand_user(value):
    """``~`` expanded in a path value (None and lists pass through)."""
    return os.path.expanduser(value) if isinstance(value, str) else value


def _normalise(config: dict) -> None:
    """One spelling for values the schema accepts in two: ``~`` expanded in the paths
    (``dataset.path``, ``dataset.class_names`` when a file, ``model.weights``), and a single
    ``preprocess.mean`` / ``std`` number made a one-item list (so ``0.5`` and ``[0.5]`` give
    the same config, the same shard identity and the same hash)."""
    dataset, model, preprocess = (config.get(k) for k in ("dataset", "model", "preprocess"))
    if isinstance(dataset, dict):
        for key in ("path", "class_names"):
            if key in dataset:
                dataset[key] = _expand_user(dataset[key])
    if isinstance(model, dict) and "weights" in model:
        model["weights"] = _expand_user(model["weights"])
    if isinstance(preprocess, dict):
        for key in ("mean", "std"):
            if isinstance(preprocess.get(key), (int, float)):
                preprocess[key] = [float(preprocess[key])]


def load_config(path: str | Path) -> dict:
    """Read a YAML config file and validate it."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(raw).__name__}")
    return validate_config(raw)


def config_hash(config: dict, sections=None) -> str:
    """Short stable hash of (some sections of) a config."""
    part = {k: config.get(k) for k in sections} if sections else config
    blob = json.dumps(part, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def merge_configs(base: dict, override: dict) -> dict:
    """``override`` merged into ``base`` key by key (nested mappings merged, the rest replaced),
    as Snakemake merges ``--configfile`` files; neither input is changed."""
    merged = copy.deepcopy(dict(base))
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_configs(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _yaml_value(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def describe_config(config: dict, schema: dict | None = None, indent: int = 0) -> str:
    """YAML text of a validated ``config`` with each key's schema description as a comment."""
    schema = schema or load_schema()
    lines = []
    known = list(schema.get("properties", {}))
    for key in [k for k in known if k in config] + [k for k in config if k not in known]:
        value = config[key]
        sub = schema.get("properties", {}).get(key, {})
        note = " ".join(str(sub.get("description", "")).split())
        pad = " " * indent
        if isinstance(value, dict) and sub.get("properties"):
            lines.append(f"{pad}{key}:" + (f"  # {note}" if note else ""))
            lines.append(describe_config(value, sub, indent + 2).rstrip("\n"))
        else:
            lines.append(f"{pad}{key}: {_yaml_value(value)}" + (f"  # {note}" if note else ""))
    return "\n".join(lines) + "\n"


def write_config_used(config: dict, path: str | os.PathLike) -> None:
    """Write the validated ``config`` a run used (every key, defaults included, each with its
    description as a comment) to ``path`` as YAML, atomically; `load_config` reads it back."""
    from convscope.store.atomic import write_text

    header = ("# The configuration this run used: your --configfile (or config/config.yaml for "
              "the demo)\n# merged with the schema's defaults. Rerun it with --configfile "
              "<this file>.\n")
    if not {"batch_size", "num_workers", "device"} & set(config.get("extract", {})):
        header += ("# extract.batch_size, num_workers and device are left out: they change how "
                   "fast, not what, is computed.\n")
    write_text(path, header + describe_config(config))
