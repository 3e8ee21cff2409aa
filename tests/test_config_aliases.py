"""Old spellings of config keys (read as the new key, with a warning) and the config reference."""

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from convscope.config import ConfigError, load_schema, validate_config
from convscope.config.aliases import ConfigAliasWarning, alias_table
from convscope.config.reference import markdown_reference

REPO = Path(__file__).resolve().parent.parent

#: the renames of issue 19, written out by hand: old dotted key -> new dotted key
RENAMES = {
    "extract.thumb_size": "extract.thumb_px",
    "units.topk": "units.top_k",
    "unit_stats.hist_bins": "unit_stats.firing_rate_histogram_bins",
    "embedding.neighbors": "embedding.neighbours",
    "embedding.transform_batch": "embedding.transform_batch_size",
    "explain.images.topk_units": "explain.images.top_k_units",
    "explain.images.topk_images": "explain.images.top_k_images",
    "explain.attribution.occlusion_batch": "explain.attribution.occlusion_batch_size",
    "explain.reconstructions.topk": "explain.reconstructions.top_k",
    "explain.invariance.rotation_deg": "explain.invariance.rotation_degrees",
    "explain.invariance.steps": "explain.invariance.amounts_per_transform",
    "neighbours.query_indices": "neighbours.query_rows",
    "synthesis.evolution.sample_size": "synthesis.evolution.n_images",
    "synthesis.visualisation.max_units": "synthesis.visualisation.units_per_layer",
    "synthesis.visualisation.rotate_degrees": "synthesis.visualisation.rotation_degrees",
    "synthesis.evolution.channels_per_layer": "synthesis.evolution.units_per_layer",
    "synthesis.dream.lr": "synthesis.dream.learning_rate",
    "synthesis.dream.jitter": "synthesis.dream.jitter_px",
    "synthesis.style.lr": "synthesis.style.learning_rate",
    "synthesis.fooling.lr": "synthesis.fooling.learning_rate",
    "synthesis.fooling.max_steps": "synthesis.fooling.steps",
}


def _nested(dotted: str, value) -> dict:
    *parents, key = dotted.split(".")
    config = {key: value}
    for parent in reversed(parents):
        config = {parent: config}
    return config


def _get(config: dict, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


def test_the_schema_lists_exactly_the_renames():
    assert alias_table(load_schema()) == RENAMES


@pytest.mark.parametrize("old", sorted(RENAMES))
def test_an_old_spelling_is_read_as_the_new_key_with_one_warning(old):
    new = RENAMES[old]
    default = _get(validate_config({}), new)
    value = default[::-1] if isinstance(default, list) else {int: 16, float: 7.5}.get(
        type(default), "exact")
    if old.endswith("topk_units"):
        value = [{"layer": "relu1", "channels": [1]}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = validate_config(_nested(old, value))
    assert _get(config, new) == value
    assert old.rsplit(".", 1)[1] not in _get(config, new.rsplit(".", 1)[0])
    messages = [str(w.message) for w in caught if issubclass(w.category, ConfigAliasWarning)]
    assert len(messages) == 1 and repr(new) in messages[0] and repr(old) in messages[0], messages


def test_both_spellings_of_one_key_are_refused_naming_both():
    config = {"synthesis": {"dream": {"lr": 0.1, "learning_rate": 0.2}}}
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert "'synthesis.dream.lr'" in str(err.value)
    assert "'synthesis.dream.learning_rate'" in str(err.value)


def test_the_old_spelling_warning_reaches_the_console(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"units": {"topk": 4}, "layers": ["relu1"]}))
    done = subprocess.run([sys.executable, "-m", "convscope.config", str(path)], cwd=REPO,
                          capture_output=True, text=True, check=True)
    assert "'units.topk' is an old spelling: read as 'units.top_k'" in done.stderr
    assert "top_k: 4" in done.stdout


def test_config_readme_is_current():
    """config/README.md is generated: python -m convscope.config --markdown > config/README.md"""
    written = (REPO / "config" / "README.md").read_text()
    assert written == markdown_reference(load_schema()), \
        "config/README.md is stale: run python -m convscope.config --markdown > config/README.md"


def test_config_readme_lists_every_key_with_its_default():
    text = (REPO / "config" / "README.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line.split("|")[2].strip()
            for line in text.splitlines() if line.startswith("| `")}

    def walk(schema, where):
        for key, sub in schema.get("properties", {}).items():
            if sub.get("type") == "object" and "properties" in sub:
                walk(sub, f"{where}{key}.")
            else:
                assert f"{where}{key}" in rows, f"{where}{key}"
                default = yaml.safe_load(rows[f"{where}{key}"].strip("`"))
                assert default == sub["default"], (f"{where}{key}", default)

    walk(load_schema(), "")
    assert rows["units.top_k"] == "`9`" and "*Old spelling*: `topk`" in text
