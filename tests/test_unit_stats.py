"""Unit statistics against numpy over the raw arrays."""

import numpy as np
import pandas as pd
import pytest

from convscope.config import validate_config
from convscope.config.sections import UnitStatsConfig
from convscope.store.shards import layer_key, write_shard
from convscope.analysis.unit_stats import (
    STATS_COLUMNS,
    SUMMARY_COLUMNS,
    UnitStats,
    read_dead_masks,
    run_unit_stats,
)

LAYERS = {"features.0": 6, "features/3": 4}


def _section(**values) -> UnitStatsConfig:
    return UnitStatsConfig.from_dict(validate_config({"unit_stats": values})["unit_stats"])


def _run(paths, out, section):
    return run_unit_stats(paths, section, stats_csv=out / "stats.csv",
                          summary_csv=out / "summary.csv", plot_png=out / "firing_rate.png")


def _raw_layer(rng, n, channels, dead_channels=(), pre_relu=False):
    unit_max = rng.normal(size=(n, channels)).astype(np.float32)
    if not pre_relu:
        unit_max = np.maximum(unit_max, 0)
    unit_max[:, list(dead_channels)] = -np.abs(unit_max[:, list(dead_channels)]) if pre_relu else 0
    unit_mean = (unit_max - np.abs(rng.normal(size=(n, channels)))).astype(np.float32)
    return unit_max, unit_mean


@pytest.fixture
def shards(tmp_path):
    rng = np.random.default_rng(0)
    raw = {layer: ([], []) for layer in LAYERS}
    paths = []
    start = 0
    for shard_id, n in enumerate([7, 5, 9]):
        arrays = {"index": np.arange(start, start + n), "label": np.zeros(n, np.int32)}
        for layer, channels in LAYERS.items():
            pre_relu = layer == "features/3"
            unit_max, unit_mean = _raw_layer(rng, n, channels, dead_channels=(1,),
                                             pre_relu=pre_relu)
            arrays[f"layers/{layer_key(layer)}/max"] = unit_max
            arrays[f"layers/{layer_key(layer)}/mean"] = unit_mean
            raw[layer][0].append(unit_max)
            raw[layer][1].append(unit_mean)
        path = tmp_path / f"shard-{shard_id:05d}.h5"
        write_shard(path, arrays, {"layer_names": list(LAYERS)})
        paths.append(path)
        start += n
    raw = {layer: (np.concatenate(m), np.concatenate(a)) for layer, (m, a) in raw.items()}
    return paths, raw


def test_run_unit_stats_matches_numpy(shards, tmp_path):
    paths, raw = shards
    out = tmp_path / "units"
    _run(paths, out, _section())
    assert sorted(p.name for p in out.iterdir()) == ["firing_rate.png", "stats.csv",
                                                     "summary.csv"]
    stats = pd.read_csv(out / "stats.csv")
    summary = pd.read_csv(out / "summary.csv")
    assert list(stats.columns) == STATS_COLUMNS
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert (out / "firing_rate.png").stat().st_size > 0
    for layer, (unit_max, unit_mean) in raw.items():
        rows = stats[stats["layer"] == layer].sort_values("channel")
        np.testing.assert_array_equal(rows["channel"], np.arange(unit_max.shape[1]))
        np.testing.assert_allclose(rows["firing_rate"], (unit_max > 0).mean(axis=0))
        np.testing.assert_allclose(rows["mean_activation"], unit_mean.mean(axis=0), rtol=1e-6)
        np.testing.assert_allclose(rows["mean_max"], unit_max.mean(axis=0), rtol=1e-6)
        np.testing.assert_allclose(rows["max_activation"], unit_max.max(axis=0), rtol=1e-6)
        expected_dead = ~(unit_max > 0).any(axis=0)
        np.testing.assert_array_equal(rows["dead"].to_numpy(bool), expected_dead)
        assert expected_dead[1] and expected_dead.sum() == 1
        row = summary[summary["layer"] == layer].iloc[0]
        assert row["channels"] == unit_max.shape[1]
        assert row["dead"] == expected_dead.sum()
        assert row["dead_fraction"] == pytest.approx(expected_dead.mean())
        assert row["sparsity"] == pytest.approx((unit_max <= 0).mean())
        assert row["images"] == unit_max.shape[0]
    masks = read_dead_masks(out / "stats.csv")
    np.testing.assert_array_equal(masks["features/3"], ~(raw["features/3"][0] > 0).any(0))


def test_layer_choice_and_error(shards, tmp_path):
    paths, _ = shards
    _run(paths, tmp_path / "one", _section(layers=["features/3"], hist_bins=5))
    assert set(pd.read_csv(tmp_path / "one" / "stats.csv")["layer"]) == {"features/3"}
    with pytest.raises(ValueError, match="'unit_stats.layers'.*valid names: features.0, features/3"):
        _run(paths, tmp_path / "bad", _section(layers=["conv9"]))
    assert not (tmp_path / "bad").exists()


def test_accumulator_merge_state_and_nonfinite():
    rng = np.random.default_rng(1)
    unit_max = rng.normal(size=(30, 5))
    unit_mean = rng.normal(size=(30, 5))
    unit_max[3, 2] = np.nan
    whole = UnitStats(5)
    whole.add(unit_max, unit_mean)
    left, right = UnitStats(5), UnitStats(5)
    left.add(unit_max[:11], unit_mean[:11])
    right.add(unit_max[11:], unit_mean[11:])
    restored = UnitStats(state=left.state_dict())
    restored.merge(right)
    keep = np.ones(30, bool)
    keep[3] = False
    for acc in (whole, restored):
        res = acc.result()
        assert res["count"] == 29 and acc.skipped == 1
        np.testing.assert_allclose(res["firing_rate"], (unit_max[keep] > 0).mean(0))
        np.testing.assert_allclose(res["mean_activation"], unit_mean[keep].mean(0))
        np.testing.assert_allclose(res["max_activation"], unit_max[keep].max(0))
    with pytest.raises(ValueError, match="shape"):
        whole.add(unit_max[:, :4], unit_mean[:, :4])
