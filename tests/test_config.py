"""Config validation: defaults filled, unknown keys and wrong types named."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from convscope.config import SECTIONS, ConfigError, load_config, load_schema, validate_config
from convscope.config.validate import describe_config, merge_configs

REPO = Path(__file__).resolve().parent.parent


def test_embedded_default_is_valid():
    config = load_config(REPO / "config" / "config.yaml")
    assert config["dataset"]["kind"] == "demo"
    assert config["extract"]["shard_size"] == 1000


def test_defaults_are_filled_for_missing_sections():
    config = validate_config({"layers": ["conv1"]})
    assert config["extract"]["batch_size"] == 128
    assert config["preprocess"]["crop"] == "center"
    assert config["units"]["topk"] == 9


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError) as err:
        validate_config({"extract": {"shard_sise": 10}})
    message = str(err.value)
    assert "extract.shard_sise" in message
    assert "did you mean 'shard_size'" in message


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match="unknown config key 'layer'"):
        validate_config({"layer": ["conv1"]})


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="extract.batch_size"):
        validate_config({"extract": {"batch_size": "big"}})


def test_wrong_enum_lists_valid_values():
    with pytest.raises(ConfigError) as err:
        validate_config({"dataset": {"kind": "imagenet"}})
    assert "dataset.kind" in str(err.value) and "'folder'" in str(err.value)


def test_example_configs_are_valid():
    examples = sorted((REPO / "config" / "examples").glob("*.yaml"))
    assert len(examples) >= 3, examples
    for path in examples:
        with open(path) as fh:
            validate_config(yaml.safe_load(fh))


def _schema_keys(schema: dict) -> dict[str, dict]:
    return schema.get("properties", {})


def test_every_schema_key_has_a_description_and_a_default():
    missing = []

    def walk(schema, where):
        for key, sub in _schema_keys(schema).items():
            if not str(sub.get("description", "")).strip():
                missing.append(f"{where}{key}: description")
            if "default" not in sub:
                missing.append(f"{where}{key}: default")
            walk(sub, f"{where}{key}.")

    walk(load_schema(), "")
    assert not missing, missing


def _section_fields(cls) -> dict[str, object]:
    return {field.name: field for field in dataclasses.fields(cls)}


def test_typed_sections_have_exactly_the_schema_keys():
    schema = load_schema()
    assert set(SECTIONS) | {"layers", "codes_layer"} == set(_schema_keys(schema))
    for key, cls in SECTIONS.items():
        sub = _schema_keys(schema)[key]
        assert set(_section_fields(cls)) == set(_schema_keys(sub)), key
        for name, nested in cls._nested.items():
            assert set(_section_fields(nested)) == set(_schema_keys(_schema_keys(sub)[name])), name


def test_sections_round_trip_the_validated_config():
    config = validate_config({"embedding": {"perplexity": 5}, "model": {"train": {"epochs": 3}}})
    for key, cls in SECTIONS.items():
        section = cls.from_dict(config[key])
        assert section.to_dict() == config[key], key
    embedding = SECTIONS["embedding"].from_dict(config["embedding"])
    assert embedding.perplexity == 5 and embedding.pca_dims == 50
    assert SECTIONS["model"].from_dict(config["model"]).train.epochs == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        embedding.perplexity = 10


def test_a_section_built_from_an_unvalidated_dict_is_refused():
    with pytest.raises(TypeError, match="missing keys"):
        SECTIONS["units"].from_dict({"topk": 3})


def test_defaults_live_only_in_the_schema():
    """config/config.yaml sets only what makes it the demo; every other value is the schema's."""
    with open(REPO / "config" / "config.yaml") as fh:
        embedded = yaml.safe_load(fh)
    assert embedded == {"dataset": {"kind": "demo"}, "model": {"kind": "demo"}}
    assert (REPO / "config" / "schema.yaml").resolve() == (
        REPO / "convscope" / "config" / "schema.yaml").resolve()


def test_merge_configs_merges_nested_keys_like_snakemake():
    base = {"extract": {"batch_size": 8, "device": "cpu"}, "layers": ["a", "b"]}
    merged = merge_configs(base, {"extract": {"batch_size": 16}, "layers": ["c"]})
    assert merged == {"extract": {"batch_size": 16, "device": "cpu"}, "layers": ["c"]}
    assert base["extract"]["batch_size"] == 8


def test_printed_configuration_is_the_validated_one_with_descriptions(tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text("extract:\n  shard_size: 7\n")
    proc = subprocess.run([sys.executable, "-m", "convscope.config", str(REPO / "config" / "config.yaml"),
                           str(user)], capture_output=True, text=True, check=True)
    printed = yaml.safe_load(proc.stdout)
    assert printed == validate_config({"extract": {"shard_size": 7}})
    assert "shard_size: 7  # images per shard" in proc.stdout
    assert describe_config(printed).count("\n") == proc.stdout.count("\n")
