"""End to end: the snakemake command on the tiny demo, outputs checked for content."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from conftest import TINY_CONFIG, run_snakemake

pytestmark = pytest.mark.workflow


def test_manifest_and_shards(tiny_run):
    manifest = pd.read_csv(tiny_run / "results/manifest.csv")
    assert len(manifest) == 120
    assert {"colour", "rotation", "background", "clutter"} <= set(manifest.columns)
    shards = sorted((tiny_run / "results/features").glob("shard-*.h5"))
    assert [p.name for p in shards] == ["shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]
    index = np.concatenate([h5py.File(p)["index"][()] for p in shards])
    np.testing.assert_array_equal(index, np.arange(120))
    with h5py.File(shards[0]) as f:
        assert f["codes"].shape == (50, 128)
        assert f["layers/relu4/max"].shape == (50, 128)
        assert f["thumbs"].shape == (50, 16, 16, 3)


def test_model_info_and_training(tiny_run):
    info = json.loads((tiny_run / "results/model/model_info.json").read_text())
    assert info["layers"]["relu2"]["receptive_field"] == {"size": [10, 10], "stride": [2, 2],
                                                          "start": [-4, -4]}
    metrics = json.loads((tiny_run / "results/model/train_metrics.json").read_text())
    assert metrics["n_train"] + metrics["n_test"] == 120


def test_topk_table_matches_brute_force_over_shards(tiny_run):
    table = pd.read_csv(tiny_run / "results/units/topk.csv")
    shards = sorted((tiny_run / "results/features").glob("shard-*.h5"))
    values = np.concatenate([h5py.File(p)["layers/relu3/max"][()] for p in shards])
    index = np.concatenate([h5py.File(p)["index"][()] for p in shards])
    layer = table[table.layer == "relu3"]
    for channel in range(0, 128, 17):
        got = layer[layer.channel == channel].sort_values("rank")
        expected = np.sort(values[:, channel])[::-1][:4]
        np.testing.assert_allclose(got["value"].to_numpy(), expected, rtol=1e-6)
        assert values[index == got["index"].iloc[0], channel][0] == pytest.approx(expected[0])
    assert ((layer.x1 > layer.x0) & (layer.x0 >= 0) & (layer.x1 <= 32)).all()
    pages = sorted((tiny_run / "results/units/topk/relu1").glob("patches*.png"))
    assert [p.name for p in pages] == ["patches-000.png", "patches-001.png"]  # 32 channels, 16 a page


def test_analyses_and_report(tiny_run):
    stats = pd.read_csv(tiny_run / "results/units/stats.csv")
    assert set(stats.layer) == {"relu1", "relu2", "relu3", "relu4"}
    overall = pd.read_csv(tiny_run / "results/performance/overall.csv")
    assert overall.loc[0, "n"] == 30  # the test split
    html = (tiny_run / "results/report/index.html").read_text()
    assert "Accuracy" in html and "relu4" in html
    assert 'href="pages/units.html"' in html  # the site's navigation
    gallery = (tiny_run / "results/report/pages/layer-relu1.html").read_text()
    assert "assets/data/layer-relu1.js" in gallery
    # no workflow bookkeeping shipped inside the site
    assert not [p for p in (tiny_run / "results/report").rglob(".*")]


def test_rerun_does_nothing(tiny_run):
    result = run_snakemake(tiny_run, "--configfile", TINY_CONFIG, "--cores", "1", "-n")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_unknown_config_key_stops_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("extract:\n  shard_sise: 5\n")
    result = run_snakemake(tmp_path, "--configfile", bad, "--cores", "1", check=False)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "extract.shard_sise" in out and "shard_size" in out
    assert not (tmp_path / "results").exists()
