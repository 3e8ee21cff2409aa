"""Config validation: defaults filled, unknown keys and wrong types named."""

import pytest
import yaml

from convscope.config.validate import ConfigError, load_config, validate_config


def test_embedded_default_is_valid():
    config = load_config("config/config.yaml")
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


def test_example_configs_are_valid(tmp_path):
    from pathlib import Path

    for path in Path("config/examples").glob("*.yaml"):
        with open(path) as fh:
            validate_config(yaml.safe_load(fh))
