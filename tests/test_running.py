"""RunningTopK against brute-force numpy over every row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convscope.stats.running import RunningTopK


def brute_topk(values: np.ndarray, ids: np.ndarray, payload: np.ndarray, k: int):
    """Per channel: sort all rows by (value desc, id asc), NaN as -inf, keep k."""
    values = np.where(np.isnan(values), -np.inf, values)
    n, channels = values.shape
    kept = min(k, n)
    out_values = np.empty((channels, kept), dtype=np.float64)
    out_ids = np.empty((channels, kept), dtype=np.int64)
    out_payload = np.empty((channels, kept), dtype=np.int64)
    for c in range(channels):
        order = sorted(range(n), key=lambda r: (-values[r, c], ids[r]))[:kept]
        out_values[c] = values[order, c]
        out_ids[c] = ids[order]
        out_payload[c] = payload[order, c]
    return out_values, out_ids, out_payload


def make_data(seed: int, n: int = 300, channels: int = 7, levels: int = 6):
    rng = np.random.default_rng(seed)
    # few distinct levels -> many ties, including at the k-th place
    values = rng.integers(0, levels, size=(n, channels)).astype(np.float32)
    values[:, 0] = rng.normal(size=n)  # one channel without ties
    values[:, 1] = 0.0  # a dead channel: every row ties
    values[rng.random((n, channels)) < 0.1] = np.nan
    values[:, 2] = np.nan  # an all-NaN channel
    ids = rng.permutation(10 * n)[:n].astype(np.int64)  # unique, unordered
    payload = rng.integers(0, 1000, size=(n, channels)).astype(np.int64)
    return values, ids, payload


def assert_same(result, expected):
    np.testing.assert_array_equal(result[0], expected[0])
    np.testing.assert_array_equal(result[1], expected[1])
    np.testing.assert_array_equal(result[2], expected[2])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 9, 40])
def test_add_in_batches_matches_brute_force(seed, k):
    values, ids, payload = make_data(seed)
    topk = RunningTopK(k)
    bounds = np.sort(np.random.default_rng(seed).choice(np.arange(1, len(ids)), 5, replace=False))
    for part in np.split(np.arange(len(ids)), bounds):
        topk.add(values[part], ids[part], payload[part])
    assert topk.count == len(ids)
    assert_same(topk.result(), brute_topk(values, ids, payload, k))
    assert not np.isnan(topk.result()[0]).any()


@pytest.mark.parametrize("seed", range(3))
def test_merge_and_state_dict_match_brute_force(seed):
    k = 9
    values, ids, payload = make_data(seed, n=240)
    parts = np.array_split(np.random.default_rng(seed).permutation(len(ids)), 6)
    partials = []
    for part in parts:
        acc = RunningTopK(k)
        for half in np.array_split(part, 2):
            acc.add(values[half], ids[half], payload[half])
        partials.append(RunningTopK(k, state=acc.state_dict()))  # round trip through a "file"
    for order in ([0, 1, 2, 3, 4, 5], [5, 3, 1, 0, 4, 2]):
        merged = RunningTopK(k)
        for i in order:
            merged.merge(partials[i])
        assert merged.count == len(ids)
        assert_same(merged.result(), brute_topk(values, ids, payload, k))


def test_fewer_rows_than_k_and_empty():
    values, ids, payload = make_data(0, n=5)
    topk = RunningTopK(9)
    assert topk.result()[0].shape == (0, 0)
    topk.add(values[:0], ids[:0], payload[:0])
    topk.add(values[:3], ids[:3], payload[:3])
    topk.add(values[3:], ids[3:], payload[3:])
    result = topk.result()
    assert result[0].shape == (7, 5)
    assert_same(result, brute_topk(values, ids, payload, 9))


def test_missing_payload_is_minus_one_and_state_restores_k():
    values, ids, _ = make_data(1, n=50)
    topk = RunningTopK(4)
    topk.add(values, ids)
    assert (topk.result()[2] == -1).all()
    smaller = RunningTopK(2, state=topk.state_dict())
    np.testing.assert_array_equal(smaller.result()[1], topk.result()[1][:, :2])


def test_torch_matches_numpy_and_keeps_device():
    values, ids, payload = make_data(2)
    values = values.astype(np.float16).astype(np.float32)  # exact in half precision
    expected = brute_topk(values, ids, payload, 9)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        topk = RunningTopK(9)
        for part in np.array_split(np.arange(len(ids)), 4):
            topk.add(torch.from_numpy(values[part]).to(device).half().float(),
                     torch.from_numpy(ids[part]).to(device),
                     torch.from_numpy(payload[part]).to(device))
        assert topk.device.type == device
        assert_same(topk.result(), expected)
        # numpy batches are moved to the state's device
        topk.add(values[:3] - 100, ids[:3] + 10_000, payload[:3])
        assert_same(topk.result(), expected)


def test_half_precision_is_widened():
    values = torch.tensor([[1.0, 2.0], [3.0, 0.5]], dtype=torch.float16)
    topk = RunningTopK(1)
    topk.add(values, torch.tensor([7, 3]))
    result = topk.result()
    assert result[0].dtype == np.float32
    np.testing.assert_array_equal(result[0], [[3.0], [2.0]])
    np.testing.assert_array_equal(result[1], [[3], [7]])


def test_bad_shapes_are_reported():
    topk = RunningTopK(3)
    topk.add(np.zeros((4, 5), np.float32), np.arange(4))
    with pytest.raises(ValueError, match="5"):
        topk.add(np.zeros((4, 6), np.float32), np.arange(4))
    with pytest.raises(ValueError, match="ids"):
        topk.add(np.zeros((4, 5), np.float32), np.arange(3))
    with pytest.raises(ValueError, match="k must be"):
        RunningTopK(0)
