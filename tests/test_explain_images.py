"""Image sets: each kind against a pandas computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from convscope.config import validate_config
from convscope.config.sections import ExplainImagesConfig
from convscope.explain.image_sets import IMAGE_SET_COLUMNS, select_images


def _images(**values):
    return ExplainImagesConfig.from_dict(validate_config({"explain": {"images": values}})
                                         ["explain"]["images"])


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    n = 60
    predictions = pd.DataFrame({"index": np.arange(n) * 2, "label": rng.integers(-1, 4, n),
                                "predicted": rng.integers(0, 4, n),
                                "probability": rng.random(n).round(2)})
    manifest = pd.DataFrame({"index": np.arange(2 * n), "path": [f"img{i}.png" for i in range(2 * n)],
                             "slot": -1})
    topk = pd.DataFrame({"layer": ["a"] * 6 + ["b"] * 3, "channel": [0, 0, 0, 1, 1, 1, 0, 0, 0],
                         "rank": [0, 1, 2] * 3, "index": [4, 6, 8, 6, 10, 12, 14, 16, 18],
                         "value": [3, 2, 1, 5, 4, 0, 1, 1, 1], "fy": 0, "fx": 0})
    return predictions, manifest, topk


def test_misclassified_are_the_most_confident_wrong_predictions(data):
    predictions, manifest, _ = data
    got = select_images(_images(kind="misclassified", misclassified=7), predictions, manifest)
    wrong = predictions.query("label >= 0 and label != predicted")
    expected = wrong.sort_values(["probability", "index"], ascending=[False, True]).head(7)
    assert got["index"].tolist() == expected["index"].tolist()
    assert list(got.columns) == IMAGE_SET_COLUMNS
    assert got["path"].tolist() == [f"img{i}.png" for i in expected["index"]]


def test_rows_keep_their_order_and_unknown_rows_are_refused(data):
    predictions, manifest, _ = data
    got = select_images(_images(kind="rows", rows=[10, 2, 10, 40]), predictions, manifest)
    assert got["index"].tolist() == [10, 2, 40]
    assert got["label"].tolist() == predictions.set_index("index").loc[[10, 2, 40], "label"].tolist()
    with pytest.raises(ValueError, match="explain.images.rows.*\\[3\\]"):
        select_images(_images(kind="rows", rows=[3]), predictions, manifest)


def test_per_class_is_a_seeded_sample_of_each_class(data):
    predictions, manifest, _ = data
    got = select_images(_images(kind="per_class", per_class=3, seed=4), predictions, manifest)
    sizes = predictions[predictions["label"] >= 0].groupby("label").size()
    assert got.groupby("label").size().to_dict() == sizes.clip(upper=3).to_dict()
    merged = got.merge(predictions, on="index", suffixes=("", "_p"))
    assert (merged["label"] == merged["label_p"]).all()
    again = select_images(_images(kind="per_class", per_class=3, seed=4), predictions, manifest)
    other = select_images(_images(kind="per_class", per_class=3, seed=5), predictions, manifest)
    assert got["index"].tolist() == again["index"].tolist() != other["index"].tolist()
    capped = select_images(_images(kind="per_class", per_class=3, seed=4, max_images=5),
                           predictions, manifest)
    assert capped["index"].tolist() == got["index"].tolist()[:5]
    assert capped["label"].nunique() == min(5, len(sizes))  # turns across the classes


def test_topk_takes_the_top_images_of_the_units_that_fire(data):
    predictions, manifest, topk = data
    units = [{"layer": "a", "channels": [0, 1]}]
    got = select_images(_images(kind="topk", top_k_units=units, top_k_images=3), predictions,
                        manifest, topk)
    rows = topk.query("layer == 'a' and rank < 3 and value > 0").sort_values(["channel", "rank"])
    assert got["index"].tolist() == list(dict.fromkeys(rows["index"]))
    assert got.set_index("index").loc[6, "reason"] == "top 2 of a:0; top 1 of a:1"
    with pytest.raises(ValueError, match="layer 'c'"):
        select_images(_images(kind="topk", top_k_units=[{"layer": "c", "channels": [0]}]),
                      predictions, manifest, topk)
