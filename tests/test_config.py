"""Config validation: defaults filled, unknown keys and wrong types named."""

import dataclasses
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
import yaml

from convscope.config import (SECTIONS, ConfigError, Section, load_config, load_schema,
                              validate_config)
from convscope.config import sections
from convscope.config.validate import config_hash, describe_config, merge_configs, write_config_used

REPO = Path(__file__).resolve().parent.parent


def test_embedded_default_is_valid():
    config = load_config(REPO / "config" / "config.yaml")
    assert config["dataset"]["kind"] == "demo"
    assert config["extract"]["shard_size"] == 1000


def test_defaults_are_filled_for_missing_sections():
    config = validate_config({"layers": ["conv1"]})
    assert config["extract"]["batch_size"] == 128
    assert config["preprocess"]["crop"] == "center"
    assert config["units"]["top_k"] == 9


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
    assert set(SECTIONS) | {"seed", "layers", "codes_layer", "stages"} == set(_schema_keys(schema))
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
        SECTIONS["units"].from_dict({"top_k": 3})


#: one value of each JSON-Schema type, and the Python types a field of that type must accept
_SAMPLES = {"integer": 3, "number": 0.5, "string": "s", "boolean": True, "null": None,
            "array": [], "object": {}}


def _accepts(annotation, value) -> bool:
    """Whether ``value`` has the type ``annotation`` (int | None, list[str], Literal...)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is typing.Any:
        return True
    if origin is typing.Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in args)
    if origin is list:
        return isinstance(value, list) and all(_accepts(args[0], v) for v in value)
    if annotation is type(None):
        return value is None
    if isinstance(value, bool) and annotation is not bool:
        return False
    if annotation is float:
        return isinstance(value, (int, float))
    return isinstance(value, origin or annotation)


def _walk_fields(cls, schema, where=""):
    """(dotted key, dataclass field, the key's schema) of every key of a section, nested too."""
    for field in dataclasses.fields(cls):
        sub = _schema_keys(schema)[field.name]
        yield f"{where}{field.name}", field, sub
        if field.name in cls._nested:
            yield from _walk_fields(cls._nested[field.name], sub, f"{where}{field.name}.")


def test_typed_sections_match_the_schema_field_by_field():
    """Name, type, default and allowed values of every field agree with the schema."""
    schema = load_schema()
    for key, cls in SECTIONS.items():
        for name, field, sub in _walk_fields(cls, _schema_keys(schema)[key], f"{key}."):
            if field.default_factory is not dataclasses.MISSING:
                default = field.default_factory()
                default = default.to_dict() if isinstance(default, Section) else default
            else:
                default = field.default
            if sub.get("properties"):  # a nested section: its defaults, key by key
                assert set(default) == set(sub["properties"]), name
                continue
            assert default == sub["default"], name
            assert _accepts(field.type, sub["default"]), (name, field.type)
            if "enum" in sub:
                assert typing.get_args(field.type) == tuple(sub["enum"]), name
            elif isinstance(sub.get("type"), (str, list)):
                kinds = [sub["type"]] if isinstance(sub["type"], str) else sub["type"]
                for kind, value in _SAMPLES.items():
                    assert _accepts(field.type, value) == (kind in kinds or (
                        kind == "integer" and "number" in kinds)), (name, kind, field.type)


def test_a_schema_edit_changes_the_typed_sections():
    schema = load_schema()
    schema["properties"]["units"]["properties"]["top_k"]["default"] = 5
    schema["properties"]["units"]["properties"]["shape"] = {"enum": ["a", "b"], "default": "b"}
    units = sections._build_all(schema)["UnitsConfig"]()
    assert units.top_k == 5 and units.shape == "b"
    field = {f.name: f for f in dataclasses.fields(type(units))}["shape"]
    assert typing.get_args(field.type) == ("a", "b")


def test_one_top_level_seed_fills_every_section_seed_left_null():
    config = validate_config({"seed": 7, "embedding": {"seed": 3}})
    assert config["seed"] == 7
    assert config["embedding"]["seed"] == 3
    seeds = {"dataset.demo": config["dataset"]["demo"]["seed"],
             "model.train": config["model"]["train"]["seed"],
             "neighbours": config["neighbours"]["seed"],
             "explain.images": config["explain"]["images"]["seed"],
             "synthesis.adversarial": config["synthesis"]["adversarial"]["seed"]}
    assert set(seeds.values()) == {7}, seeds
    nested = validate_config({"synthesis": {"seed": 4}})["synthesis"]
    assert nested["adversarial"]["seed"] == 4 and validate_config({})["filters"]["seed"] == 0


#: the demo's preprocessing and layers (the schema's defaults before they became neutral);
#: the demo's results are byte-identical only if its validated config keeps them
DEMO_PREPROCESS = {"input_size": 32, "channels": 3, "resize": 32, "crop": "center",
                   "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
DEMO_LAYERS = ["relu1", "relu2", "relu3", "relu4"]
IMAGENET_PREPROCESS = {"input_size": 224, "channels": 3, "resize": 256, "crop": "center",
                       "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def test_config_yaml_holds_the_demo_settings_and_nothing_else():
    """config/config.yaml is the demo's config; every other value is the schema's."""
    with open(REPO / "config" / "config.yaml") as fh:
        embedded = yaml.safe_load(fh)
    assert embedded == {"dataset": {"kind": "demo"}, "model": {"kind": "demo"},
                        "preprocess": DEMO_PREPROCESS, "layers": DEMO_LAYERS,
                        "dissect": {"n_images": 400,
                                    "image_concepts": ["background"]},
                        "ablation": {"n_images": 300}}
    assert (REPO / "config" / "schema.yaml").resolve() == (
        REPO / "convscope" / "config" / "schema.yaml").resolve()


def test_demo_configs_keep_the_demo_preprocessing():
    for path in (REPO / "config" / "config.yaml", REPO / "tests" / "data" / "tiny_config.yaml"):
        config = load_config(path)
        assert config["preprocess"] == DEMO_PREPROCESS, path
        assert config["layers"] == DEMO_LAYERS and config["codes_layer"] is None, path


def test_a_user_config_gets_neutral_defaults_not_the_demos():
    config = validate_config({"dataset": {"kind": "folder", "path": "/data/images"},
                              "model": {"kind": "torchvision", "name": "resnet18"}})
    assert config["preprocess"] == IMAGENET_PREPROCESS
    assert config["layers"] is None  # no default: preflight asks for it (tests/test_bad_config.py)


def _snakemake_parse(workdir: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-s",
                           str(REPO / "Snakefile"), "-n", "--quiet", *args], cwd=workdir,
                          capture_output=True, text=True, timeout=300)


def test_snakefile_reads_config_yaml_only_without_a_configfile(tmp_path):
    """Snakemake would merge --configfile over config/config.yaml: the Snakefile skips it then."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((REPO / "config" / "config.yaml").read_text())
    demo = _snakemake_parse(tmp_path)
    assert demo.returncode == 0, demo.stderr[-3000:]
    (tmp_path / "images" / "cat").mkdir(parents=True)
    (tmp_path / "images" / "cat" / "a.png").write_bytes(b"")
    (tmp_path / "user.yaml").write_text(
        "dataset: {kind: folder, path: images}\nmodel: {kind: torchvision, name: resnet18}\n")
    user = _snakemake_parse(tmp_path, "--configfile", "user.yaml")
    assert user.returncode != 0
    assert "config key 'layers' is not set" in user.stderr  # the demo's layers were not inherited


def test_preprocess_mean_and_std_as_one_number():
    number = validate_config({"preprocess": {"channels": 1, "mean": 0.5, "std": 0.25}})
    listed = validate_config({"preprocess": {"channels": 1, "mean": [0.5], "std": [0.25]}})
    assert number == listed and number["preprocess"]["mean"] == [0.5]
    assert config_hash(number, ["preprocess"]) == config_hash(listed, ["preprocess"])
    with pytest.raises(ConfigError, match="preprocess.std"):
        validate_config({"preprocess": {"std": 0}})


def test_home_is_expanded_in_every_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    config = validate_config({"dataset": {"kind": "manifest", "path": "~/data/m.csv",
                                          "class_names": "~/data/names.txt"},
                              "model": {"kind": "custom", "factory": "m:f", "weights": "~/w.pt"}})
    assert config["dataset"]["path"] == str(tmp_path / "data" / "m.csv")
    assert config["dataset"]["class_names"] == str(tmp_path / "data" / "names.txt")
    assert config["model"]["weights"] == str(tmp_path / "w.pt")
    listed = validate_config({"dataset": {"class_names": ["~cat", "dog"]}})
    assert listed["dataset"]["class_names"] == ["~cat", "dog"]  # names, not paths


def test_the_config_used_is_written_and_reads_back(tmp_path):
    config = load_config(REPO / "tests" / "data" / "tiny_config.yaml")
    write_config_used(config, tmp_path / "results" / "config.yaml")
    text = (tmp_path / "results" / "config.yaml").read_text()
    assert "shard_size: 50  # images per shard" in text
    assert load_config(tmp_path / "results" / "config.yaml") == config


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
    with open(REPO / "config" / "config.yaml") as fh:
        demo = yaml.safe_load(fh)
    assert printed == validate_config(merge_configs(demo, {"extract": {"shard_size": 7}}))
    assert "shard_size: 7  # images per shard" in proc.stdout
    assert describe_config(printed).count("\n") == proc.stdout.count("\n")
