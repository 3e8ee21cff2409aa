"""Unit statistics against numpy and pandas over the raw arrays."""

import h5py
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
CLASSES = ["cat", "dog", "eel"]


def _section(**values) -> UnitStatsConfig:
    return UnitStatsConfig.from_dict(validate_config({"unit_stats": values})["unit_stats"])


def _run(paths, out, section):
    # the shards carry class_names, so the manifest (absent here) is not read
    return run_unit_stats(paths, out / "manifest.csv", section, stats_csv=out / "stats.csv",
                          summary_csv=out / "summary.csv", plot_png=out / "firing_rate.png",
                          histograms_h5=out / "histograms.h5")


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
    labels = []
    paths = []
    start = 0
    for shard_id, n in enumerate([7, 5, 9]):
        label = rng.integers(-1, len(CLASSES), size=n).astype(np.int32)  # -1: unknown
        labels.append(label)
        arrays = {"index": np.arange(start, start + n), "label": label}
        for layer, channels in LAYERS.items():
            pre_relu = layer == "features/3"
            unit_max, unit_mean = _raw_layer(rng, n, channels, dead_channels=(1,),
                                             pre_relu=pre_relu)
            arrays[f"layers/{layer_key(layer)}/max"] = unit_max
            arrays[f"layers/{layer_key(layer)}/mean"] = unit_mean
            raw[layer][0].append(unit_max)
            raw[layer][1].append(unit_mean)
        path = tmp_path / f"shard-{shard_id:05d}.h5"
        write_shard(path, arrays, {"layer_names": list(LAYERS), "class_names": CLASSES})
        paths.append(path)
        start += n
    raw = {layer: (np.concatenate(m), np.concatenate(a)) for layer, (m, a) in raw.items()}
    raw["label"] = np.concatenate(labels)
    return paths, raw


def test_run_unit_stats_matches_numpy(shards, tmp_path):
    paths, raw = shards
    raw = dict(raw)
    raw.pop("label")
    out = tmp_path / "units"
    _run(paths, out, _section())
    assert sorted(p.name for p in out.iterdir()) == ["firing_rate.png", "histograms.h5",
                                                     "stats.csv", "summary.csv"]
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
    _run(paths, tmp_path / "one", _section(layers=["features/3"], firing_rate_histogram_bins=5))
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


def _expected_selectivity(unit_max, labels):
    """Preferred class name and selectivity per channel, by pandas groupby and a loop."""
    known = labels >= 0
    frame = pd.DataFrame(unit_max[known].astype(np.float64))
    means = frame.groupby(labels[known]).mean()  # index: class ids with images
    preferred, selectivity = [], []
    for channel in means.columns:
        column = means[channel]
        best = column.idxmax()  # first among ties, as the smallest id
        mu_pref = column[best]
        mu_rest = column.drop(best).mean()
        preferred.append(CLASSES[best])
        total = mu_pref + mu_rest
        selectivity.append(0.0 if mu_pref == 0 and mu_rest == 0 else (mu_pref - mu_rest) / total)
    return preferred, np.array(selectivity)


def test_class_selectivity_matches_pandas(shards, tmp_path):
    paths, raw = shards
    out = tmp_path / "units"
    _run(paths, out, _section())
    stats = pd.read_csv(out / "stats.csv", keep_default_na=False)
    for layer in LAYERS:
        rows = stats[stats["layer"] == layer].sort_values("channel")
        preferred, selectivity = _expected_selectivity(raw[layer][0], raw["label"])
        assert rows["preferred_class"].tolist() == preferred
        np.testing.assert_allclose(rows["class_selectivity"].astype(float), selectivity,
                                   rtol=1e-9, atol=1e-12)
    relu = stats[stats["layer"] == "features.0"]
    dead = relu["dead"].astype(str) == "True"
    # post-ReLU: selectivity in [0, 1]; a dead channel (all 0) has selectivity 0
    assert relu["class_selectivity"].astype(float).between(0, 1).all()
    assert (relu.loc[dead, "class_selectivity"].astype(float) == 0).all()


def test_histograms_match_numpy(shards, tmp_path):
    paths, raw = shards
    out = tmp_path / "units"
    _run(paths, out, _section(histogram_bins=7))
    with h5py.File(out / "histograms.h5", "r") as f:
        assert sorted(f) == sorted(layer_key(layer) for layer in LAYERS)
        for layer, channels in LAYERS.items():
            group = f[layer_key(layer)]
            assert group.attrs["layer"] == layer
            counts, edges = group["counts"][()], group["edges"][()]
            assert counts.shape == (channels, 7) and counts.dtype == np.int64
            assert edges.shape == (channels, 8) and edges.dtype == np.float64
            unit_max = raw[layer][0].astype(np.float64)
            for channel in range(channels):
                expected, expected_edges = np.histogram(unit_max[:, channel], bins=7)
                np.testing.assert_array_equal(counts[channel], expected)
                np.testing.assert_allclose(edges[channel], expected_edges, rtol=1e-12)
            assert (counts.sum(axis=1) == unit_max.shape[0]).all()


def test_streaming_accumulators_merge_like_one_pass():
    from convscope.stats.class_means import ClassMeans
    from convscope.stats.histogram import ChannelHistogram, histogram_edges

    rng = np.random.default_rng(3)
    values = rng.normal(size=(40, 3))
    labels = rng.integers(-1, 4, size=40)
    edges = histogram_edges(values.min(0), values.max(0), 5)
    whole_hist, whole_means = ChannelHistogram(edges), ClassMeans(3)
    whole_hist.add(values)
    whole_means.add(labels, values)
    left_hist, right_hist = ChannelHistogram(edges), ChannelHistogram(edges)
    left_means, right_means = ClassMeans(3), ClassMeans(3)
    left_hist.add(values[:13])
    right_hist.add(values[13:])
    left_means.add(labels[:13], values[:13])
    right_means.add(labels[13:], values[13:])
    hist = ChannelHistogram(state=left_hist.state_dict())
    hist.merge(right_hist)
    means = ClassMeans(state=right_means.state_dict())  # fewer classes seen may come first
    means.merge(left_means)
    np.testing.assert_array_equal(hist.result()["counts"], whole_hist.result()["counts"])
    np.testing.assert_allclose(means.result()["means"], whole_means.result()["means"])
    np.testing.assert_array_equal(means.result()["counts"],
                                  np.bincount(labels[labels >= 0], minlength=4))
    with pytest.raises(ValueError, match="different edges"):
        hist.merge(ChannelHistogram(histogram_edges(values.min(0), values.max(0) + 1, 5)))


@pytest.mark.workflow
def test_tiny_run_unit_stats(tiny_run):
    """The tiny run's stats.csv and histograms.h5 against numpy over its shards' arrays."""
    from convscope.config.validate import load_schema
    from convscope.store.shards import read_attrs, read_concat

    units = tiny_run / "results" / "units"
    shards = sorted((tiny_run / "results" / "features").glob("shard-*.h5"))
    names = read_attrs(shards[0])["class_names"]
    labels = read_concat(shards, "label")
    bins = load_schema()["properties"]["unit_stats"]["properties"]["histogram_bins"]["default"]
    stats = pd.read_csv(units / "stats.csv", keep_default_na=False)
    assert list(stats.columns) == STATS_COLUMNS
    with h5py.File(units / "histograms.h5", "r") as f:
        assert len(f) == stats["layer"].nunique()
        for layer, rows in stats.groupby("layer", sort=False):
            unit_max = read_concat(shards, f"layers/{layer_key(layer)}/max").astype(np.float64)
            counts, edges = f[layer_key(layer)]["counts"][()], f[layer_key(layer)]["edges"][()]
            assert counts.shape == (unit_max.shape[1], bins)
            assert edges.shape == (unit_max.shape[1], bins + 1)
            for channel in range(unit_max.shape[1]):
                expected, _ = np.histogram(unit_max[:, channel], bins=bins)
                np.testing.assert_array_equal(counts[channel], expected)
            known = labels >= 0
            means = pd.DataFrame(unit_max[known]).groupby(labels[known]).mean()
            rows = rows.sort_values("channel")
            alive = rows["dead"].astype(str) != "True"
            # a live unit's preferred class has the highest class mean (ties aside)
            for channel in rows.loc[alive, "channel"]:
                best = rows.loc[rows["channel"] == channel, "preferred_class"].item()
                assert means.loc[names.index(best), channel] == pytest.approx(
                    means[channel].max())
            selectivity = rows["class_selectivity"].astype(float)
            assert selectivity.between(0, 1).all()  # post-ReLU layers
            assert set(rows["preferred_class"]) <= set(names)
