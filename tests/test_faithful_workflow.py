"""The faithfulness, CKA and probe stages in the tiny run: their tables against the maps,
the shards and the manifest (a direct full-batch CKA, a direct scikit-learn probe)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler


def _shard_means(results, layer):
    paths = sorted((results / "features").glob("shard-*.h5"))
    index, means = [], []
    for path in paths:
        with h5py.File(path, "r") as f:
            index.append(f["index"][:])
            means.append(f[f"layers/{layer}/mean"][:].astype(np.float64))
    return np.concatenate(index), np.concatenate(means)


def _unbiased_hsic(x, y):
    n = len(x)
    k, l = x @ x.T, y @ y.T  # noqa: E741
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    return (np.trace(k @ l) + k.sum() * l.sum() / ((n - 1) * (n - 2))
            - 2 / (n - 2) * k.sum(0) @ l.sum(0)) / (n * (n - 3))


@pytest.mark.workflow
def test_faithfulness_tables(tiny_run):
    results = tiny_run / "results" / "explain"
    scores = pd.read_csv(results / "faithfulness.csv")
    assert list(scores.columns) == ["method", "image_id", "deletion_auc", "insertion_auc",
                                    "road_morf", "road_lerf"]
    with h5py.File(results / "attribution" / "maps.h5", "r") as f:
        methods = [m for m in f.attrs["methods"] if m != "zf_occlusion"]
        index = f["index"][:]
    assert list(dict.fromkeys(scores["method"])) == methods
    assert {"integrated_gradients", "smoothgrad", "lrp"} <= set(methods)
    for _, rows in scores.groupby("method"):
        assert rows["image_id"].tolist() == index.tolist()
    assert scores[["deletion_auc", "insertion_auc", "road_morf", "road_lerf"]].stack().between(
        0, 1).all()
    mprt = pd.read_csv(results / "mprt.csv")
    assert list(mprt.columns) == ["method", "layer", "spearman"]
    for _, rows in mprt.groupby("method"):  # tiny config: the top 3 layers with parameters
        assert rows["layer"].tolist() == ["fc", "bn4", "conv4"]
    assert mprt["spearman"].dropna().between(-1, 1).all()
    summary = json.loads((results / "faithfulness" / "summary.json").read_text())
    ranking = pd.read_csv(results / "faithfulness" / summary["tables"][0]["path"])
    assert sorted(ranking["method"]) == sorted(methods)


@pytest.mark.workflow
def test_cka_equals_a_direct_full_batch_computation(tiny_run):
    results = tiny_run / "results"
    table = pd.read_csv(results / "compare" / "cka.csv")
    assert list(table.columns) == ["model_a", "layer_a", "model_b", "layer_b", "cka"]
    within = table[table["model_b"] == "model"].set_index(["layer_a", "layer_b"])["cka"]
    layers = ["relu1", "relu2", "relu3", "relu4"]
    feats = {layer: _shard_means(results, layer)[1] for layer in layers}
    assert len(feats["relu1"]) < 256  # tiny run: one minibatch, i.e. the full batch
    for a in layers:
        for b in layers:
            expected = _unbiased_hsic(feats[a], feats[b]) / np.sqrt(
                _unbiased_hsic(feats[a], feats[a]) * _unbiased_hsic(feats[b], feats[b]))
            assert within[(a, b)] == pytest.approx(expected, rel=1e-6)
    across = table[table["model_b"] != "model"]
    assert set(across["model_b"]) == {"epoch-001"} and across["layer_a"].tolist() == layers
    assert (across["layer_a"] == across["layer_b"]).all() and across["cka"].le(1 + 1e-9).all()


@pytest.mark.workflow
def test_probes_equal_a_direct_scikit_learn_fit(tiny_run):
    results = tiny_run / "results"
    table = pd.read_csv(results / "probes" / "probes.csv")
    assert list(table.columns) == ["layer", "target", "accuracy", "chance"]
    assert {"class", "colour", "background"} <= set(table["target"])
    manifest = pd.read_csv(results / "manifest.csv").set_index("index")
    index, x = _shard_means(results, "relu4")
    rows = manifest.loc[index]
    train, test = (rows["split"] == "train").to_numpy(), (rows["split"] == "test").to_numpy()
    for target, column in (("class", "label"), ("colour", "colour")):
        y = rows[column].astype(str).to_numpy()
        scaler = StandardScaler().fit(x[train])
        probe = LogisticRegression(max_iter=1000).fit(scaler.transform(x[train]), y[train])
        accuracy = (probe.predict(scaler.transform(x[test])) == y[test]).mean()
        majority = pd.Series(y[train]).value_counts().idxmax()
        row = table[(table["layer"] == "relu4") & (table["target"] == target)].iloc[0]
        assert row["accuracy"] == pytest.approx(accuracy, abs=1e-6)
        assert row["chance"] == pytest.approx((y[test] == majority).mean(), abs=1e-6)
