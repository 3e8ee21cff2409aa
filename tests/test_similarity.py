"""Linear CKA (unbiased minibatch HSIC) and linear probes against independent references:
Song et al.'s U-statistic summed over index tuples, a direct full-batch computation,
invariances, and a direct scikit-learn fit; the workflow's tables against the shards."""

from __future__ import annotations

import itertools

import h5py
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from convscope.analysis.cka import MinibatchCKA, rebatch
from convscope.analysis.probes import probe_accuracy
from convscope.analysis.similarity import layer_cka
from convscope.config.sections import ProbesConfig


def _u_statistic_hsic(x, y):
    """Song et al. (2012), Theorem 2's U-statistic over all ordered 4-tuples of distinct rows."""
    k, l = x @ x.T, y @ y.T  # noqa: E741
    n, total = len(x), 0.0
    for quad in itertools.permutations(range(n), 4):
        h = 0.0
        for t, u, v, w in itertools.permutations(quad):
            h += k[t, u] * l[t, u] + k[t, u] * l[v, w] - 2 * k[t, u] * l[t, v]
        total += h / 24
    return total / (n * (n - 1) * (n - 2) * (n - 3))


def _features(n, p, seed):
    return np.random.default_rng(seed).normal(size=(n, p))


def test_one_batch_equals_the_u_statistic_and_batches_add_up():
    x, y = _features(10, 3, 0), _features(10, 4, 1)
    y[:, 0] += x[:, 0]
    acc = MinibatchCKA([("x", "y")])
    for batch in rebatch([{"x": x[:4], "y": y[:4]}, {"x": x[4:], "y": y[4:]}], 5):
        acc.add(batch)
    assert acc.batches == 2
    hsic = {(a, b): sum(_u_statistic_hsic(s[i:i + 5], t[i:i + 5]) for i in (0, 5))
            for (a, s), (b, t) in itertools.product([("x", x), ("y", y)], repeat=2)}
    expected = hsic[("x", "y")] / np.sqrt(hsic[("x", "x")] * hsic[("y", "y")])
    assert acc.result()[("x", "y")] == pytest.approx(expected, rel=1e-9)


def test_full_batch_unbiased_cka_approaches_the_direct_biased_cka():
    x = _features(2000, 6, 2)
    y = x @ _features(6, 5, 3) + 0.5 * _features(2000, 5, 4)
    acc = MinibatchCKA([("x", "y")])
    acc.add({"x": x, "y": y})
    xc, yc = x - x.mean(0), y - y.mean(0)  # Kornblith et al.'s feature-space formula
    direct = (np.linalg.norm(yc.T @ xc) ** 2
              / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)))
    assert acc.result()[("x", "y")] == pytest.approx(direct, abs=0.01)


def test_cka_is_one_on_itself_and_invariant_to_rotation_and_scale():
    x, y = _features(40, 5, 5), _features(40, 7, 6) ** 2
    q, _ = np.linalg.qr(_features(5, 5, 7))
    acc = MinibatchCKA([("x", "x"), ("x", "y"), ("xq", "y"), ("x", "3y")])
    for batch in rebatch([{"x": x, "y": y, "xq": x @ q, "3y": 3.0 * y}], 8):
        acc.add(batch)
    out = acc.result()
    assert out[("x", "x")] == pytest.approx(1.0)
    assert out[("xq", "y")] == pytest.approx(out[("x", "y")], rel=1e-9)
    assert out[("x", "3y")] == pytest.approx(out[("x", "y")], rel=1e-9)
    assert 0 < out[("x", "y")] < 1


def test_layer_cka_streams_over_shards_and_leaves_out_a_short_last_batch(tmp_path):
    a, b = _features(13, 3, 8), _features(13, 2, 9)
    paths = []
    for i, rows in enumerate((slice(0, 6), slice(6, 13))):
        path = tmp_path / f"shard-{i}.h5"
        with h5py.File(path, "w") as f:
            f["layers/a/mean"], f["layers/b/mean"] = a[rows], b[rows]
        paths.append(path)
    table, used = layer_cka(paths, ["a", "b"], batch_size=5)
    assert used == 10  # two batches of 5, the last 3 images left out (the estimator needs 4)
    hsic = {(p, q): sum(_u_statistic_hsic(s[i:i + 5], t[i:i + 5]) for i in (0, 5))
            for (p, s), (q, t) in itertools.product([("a", a), ("b", b)], repeat=2)}
    value = table.set_index(["layer_a", "layer_b"])["cka"]
    assert value[("a", "b")] == pytest.approx(
        hsic[("a", "b")] / np.sqrt(hsic[("a", "a")] * hsic[("b", "b")]), rel=1e-9)
    assert value[("a", "a")] == pytest.approx(1.0)


def test_probe_equals_a_direct_scikit_learn_fit():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(90, 4))
    labels = np.where(features[:, 0] + 0.3 * rng.normal(size=90) > 0, "a", "b")
    test = np.arange(90) % 3 == 0
    accuracy, chance = probe_accuracy(features, labels, ~test, test, ProbesConfig())
    scaler = StandardScaler().fit(features[~test])
    model = LogisticRegression(C=1.0, max_iter=1000).fit(scaler.transform(features[~test]),
                                                         labels[~test])
    assert accuracy == pytest.approx((model.predict(scaler.transform(features[test]))
                                      == labels[test]).mean())
    majority = pd.Series(labels[~test]).value_counts().idxmax()
    assert chance == pytest.approx((labels[test] == majority).mean())
