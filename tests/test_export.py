"""The export stage's Parquet files, read with pandas, against the shards and the manifest
(read with h5py and pandas) and a brute-force nearest-neighbour search in numpy."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import TINY_CONFIG

pytestmark = pytest.mark.workflow  # reads the session's tiny run


def _shards(run):
    return sorted((run / "results" / "features").glob("shard-*.h5"))


def test_images_table_holds_every_manifest_row_with_the_shards_numbers(tiny_run):
    images = pd.read_parquet(tiny_run / "results" / "export" / "images.parquet")
    manifest = pd.read_csv(tiny_run / "results" / "manifest.csv")
    assert images["index"].tolist() == manifest["index"].tolist()
    assert images["path"].tolist() == manifest["path"].tolist()
    assert (images["label"].to_numpy() == manifest["label"].to_numpy()).all()
    index, top1, prob, codes = [], [], [], []
    for path in _shards(tiny_run):
        with h5py.File(path, "r") as f:
            index.append(f["index"][()])
            top1.append(f["topk/class"][:, 0])
            prob.append(f["topk/prob"][:, 0])
            codes.append(f["codes"][()])
            names = json.loads(f.attrs["class_names"])
    index, top1, prob = np.concatenate(index), np.concatenate(top1), np.concatenate(prob)
    codes = np.concatenate(codes).astype(np.float64)
    rows = images.set_index("index").loc[index]
    assert (rows["prediction"].to_numpy() == top1).all()
    np.testing.assert_allclose(rows["confidence"].to_numpy(), prob, rtol=1e-6)
    assert (rows["correct"].to_numpy() == (top1 == rows["label"].to_numpy())).all()
    assert rows["prediction_name"].tolist() == [names[i] for i in top1]
    coords = pd.read_csv(tiny_run / "results" / "embedding" / "coords.csv").set_index("index")
    np.testing.assert_allclose(rows["tsne_x"].to_numpy(), coords.loc[index, "x"].to_numpy(),
                               rtol=1e-6, equal_nan=True)
    # neighbours: cosine distance of the codes, brute force, self excluded
    k = yaml.safe_load(TINY_CONFIG.read_text()).get("neighbours", {}).get("k", 8)
    unit = codes / np.maximum(np.linalg.norm(codes, axis=1, keepdims=True), 1e-12)
    distance = 1 - unit @ unit.T
    np.fill_diagonal(distance, np.inf)
    for row, (got, got_d) in enumerate(zip(rows["neighbours"], rows["neighbour_distances"])):
        assert len(got) == min(k, len(index) - 1)
        np.testing.assert_allclose(got_d, np.sort(distance[row])[:len(got)], atol=1e-4)
        np.testing.assert_allclose(distance[row, np.searchsorted(index, got)], got_d, atol=1e-4)
    assert images["failed"].isna().all()  # the demo images are all readable


def test_codes_file_equals_the_shards_codes(tiny_run):
    table = pd.read_parquet(tiny_run / "results" / "export" / "codes.parquet")
    for path in _shards(tiny_run):
        with h5py.File(path, "r") as f:
            part = table.set_index("index").loc[f["index"][()], "code"]
            np.testing.assert_array_equal(np.stack(part.to_list()), f["codes"][()])
