"""The public API `convscope.Results`: each accessor against the files it reads.

Fast tests build a small results folder by hand (h5py, pandas); the workflow
tests read the shared tiny run (`tiny_run`) and compute every expected value
from its files directly.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from convscope import Results
from convscope.results import ShardArray, StageMissingError
from convscope.results.stages import resolve

REPO = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- hand-made results

CLASSES = ["cat", "dog", "fox"]
#: shard -> (manifest rows, labels, top-1 predictions)
SHARDS = [([0, 1], [0, 1], [0, 2]), ([2, 3, 4], [2, -1, 1], [2, 0, 1]), ([5], [0], [1])]


def _write_shard(path: Path, rows, labels, preds, rng) -> dict:
    n = len(rows)
    arrays = {"index": np.array(rows, np.int64), "label": np.array(labels, np.int32),
              "topk/class": np.column_stack([preds, np.zeros((n, 2), int)]).astype(np.int32),
              "topk/prob": np.full((n, 3), 1 / 3, np.float32),
              "codes": rng.normal(size=(n, 4)).astype(np.float32),
              "layers/conv1/max": rng.normal(size=(n, 3)).astype(np.float32),
              "layers/conv1/mean": rng.normal(size=(n, 3)).astype(np.float32),
              "image_attrs/brightness": rng.uniform(size=n).astype(np.float32)}
    with h5py.File(path, "w") as f:
        for name, array in arrays.items():
            f.create_dataset(name, data=array)
    return arrays


@pytest.fixture
def handmade(tmp_path):
    """A results folder with a manifest, model_info, three shards (2, 3, 1 images) and units."""
    results = tmp_path / "results"
    (results / "features").mkdir(parents=True)
    (results / "model").mkdir()
    rng = np.random.default_rng(0)
    shards, listing = [], []
    for i, (rows, labels, preds) in enumerate(SHARDS):
        path = results / "features" / f"shard-{i:05d}.h5"
        shards.append(_write_shard(path, rows, labels, preds, rng))
        listing.append({"path": f"features/{path.name}", "images": len(rows)})
    (results / "features" / "index.json").write_text(json.dumps({"shards": listing}))
    manifest = pd.DataFrame({"index": range(6), "slot": -1, "label": [0, 1, 2, -1, 1, 0],
                             "path": ["images/a.png", "/data/b.png", "images/c.png",
                                      "images/d.png", "images/e.png", "images/f.png"],
                             "split": ["train", "test"] * 3,
                             "colour": ["red", "blue", "red", "green", "blue", "red"]})
    manifest.to_csv(results / "manifest.csv", index=False)
    (results / "manifest.classes.json").write_text(json.dumps(CLASSES))
    info = {"layers": {"conv1": {"shape": [3, 8, 8], "receptive_field": {
        "size": [3, 3], "stride": [1, 1], "start": [-1, -1]}}}, "num_classes": 3}
    (results / "model" / "model_info.json").write_text(json.dumps(info))
    (results / "units").mkdir()
    pd.DataFrame({"layer": ["conv1"] * 3, "channel": [0, 1, 2], "firing_rate": [0.5, 0.0, 0.25],
                  "mean_activation": [1.0, 0.0, 0.5], "mean_max": [2.0, 0.0, 1.0],
                  "max_activation": [3.0, 0.0, 1.5], "dead": [False, True, False],
                  "preferred_class": ["cat", "", "dog"], "class_selectivity": [0.5, np.nan, 0.2]}
                 ).to_csv(results / "units" / "stats.csv", index=False)
    pd.DataFrame({"layer": "conv1", "channel": [0, 0, 2, 2], "rank": [0, 1, 0, 1],
                  "index": [4, 0, 2, 5], "value": [3.0, 2.0, 1.5, 1.0], "fy": 1, "fx": 2,
                  "x0": 1, "y0": 0, "x1": 4, "y1": 3}).to_csv(results / "units" / "topk.csv",
                                                             index=False)
    return results, shards


def test_activations_read_lazily_across_shards(handmade):
    results, shards = handmade
    expected = np.concatenate([s["layers/conv1/max"] for s in shards])
    acts = Results(results).activations("conv1")
    assert isinstance(acts, ShardArray) and acts.shape == (6, 3) and len(acts) == 6
    np.testing.assert_array_equal(acts[:], expected)
    np.testing.assert_array_equal(acts[[5, 0, 3]], expected[[5, 0, 3]])
    np.testing.assert_array_equal(acts[2:5, 1], expected[2:5, 1])
    np.testing.assert_array_equal(acts[-1], expected[-1])
    mask = np.array([True, False, False, True, False, True])
    np.testing.assert_array_equal(acts[mask], expected[mask])
    chunks = list(acts.iter_shards())
    assert [len(c) for c in chunks] == [2, 3, 1]
    np.testing.assert_array_equal(np.asarray(acts), expected)
    mean = Results(results).activations("conv1", "mean")
    np.testing.assert_array_equal(mean[:], np.concatenate([s["layers/conv1/mean"] for s in shards]))


def test_activations_open_only_the_shards_they_need(handmade):
    results, shards = handmade
    acts = Results(results).activations("conv1")
    os.remove(results / "features" / "shard-00000.h5")  # rows 0, 1
    np.testing.assert_array_equal(acts[2:5], shards[1]["layers/conv1/max"])
    with pytest.raises(FileNotFoundError):
        acts[0]


def test_activations_refuse_an_unknown_layer_or_statistic(handmade):
    results, _ = handmade
    with pytest.raises(KeyError, match=r"'conv9'.*\['conv1'\].*layers"):
        Results(results).activations("conv9")
    with pytest.raises(ValueError, match="'median'.*max.*mean"):
        Results(results).activations("conv1", "median")
    with pytest.raises(IndexError):
        Results(results).activations("conv1")[6]


def test_images_join_manifest_shards_and_class_names(handmade):
    results, _ = handmade
    images = Results(results).images
    assert images["id"].tolist() == [0, 1, 2, 3, 4, 5]
    assert images["path"].tolist() == [str(results / "images/a.png"), "/data/b.png",
                                       *[str(results / f"images/{c}.png") for c in "cdef"]]
    assert images["class_name"].tolist() == ["cat", "dog", "fox", "", "dog", "cat"]
    assert images["prediction"].tolist() == [0, 2, 2, 0, 1, 1]
    assert images["prediction_name"].tolist() == ["cat", "fox", "fox", "cat", "dog", "dog"]
    assert images["correct"].tolist() == [True, False, True, pd.NA, True, False]
    assert images["colour"].tolist() == ["red", "blue", "red", "green", "blue", "red"]
    assert "brightness" in images.columns and images["split"].iloc[1] == "test"


def test_codes_layers_stats_and_topk(handmade):
    results, shards = handmade
    api = Results(results)
    ids, codes = api.codes()
    np.testing.assert_array_equal(ids, [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(codes, np.concatenate([s["codes"] for s in shards]))
    layer = api.layers.loc["conv1"]
    assert (layer["channels"], layer["height"], layer["rf_size"]) == (3, 8, [3, 3])
    stats = api.stats("conv1")
    assert stats["channel"].tolist() == [0, 1, 2] and stats["dead"].tolist() == [False, True, False]
    top = api.topk("conv1", unit=2)
    assert top["id"].tolist() == [2, 5] and top["value"].tolist() == [1.5, 1.0]
    assert len(api.topk("conv1")) == 4
    with pytest.raises(IndexError, match="channels 0..2"):
        api.topk("conv1", unit=3)


def test_missing_stages_name_the_stage_and_what_enables_it(handmade):
    results, _ = handmade
    api = Results(results)
    with pytest.raises(StageMissingError, match=r"'embedding' stage.*`embedding` config section"):
        api.embedding()
    with pytest.raises(StageMissingError, match=r"'performance' stage"):
        api.attribute_table("overall")
    with pytest.raises(StageMissingError,
                       match=r"'explain/correspondence'.*explain\.correspondence\.part_columns"):
        api.explanation("correspondence")
    with pytest.raises(StageMissingError, match=r"'synthesis/dream'.*synthesis\.dream"):
        api.synthesis("dream")
    with pytest.raises(KeyError, match="no synthesis stage 'drean'"):
        api.synthesis("drean")
    assert api.explanations == [] and api.syntheses == []


def test_stored_paths_resolve_against_the_results_folder(tmp_path):
    results = tmp_path / "results"
    (results / "features").mkdir(parents=True)
    (results / "features" / "a.h5").touch()
    assert resolve(results, "features/a.h5") == results / "features/a.h5"
    assert resolve(results, "/elsewhere/a.h5") == Path("/elsewhere/a.h5")
    # results written before paths were relative to results/: relative to the run's folder
    assert resolve(results, "results/features/a.h5") == results / "features/a.h5"


def test_results_accepts_the_run_folder(handmade):
    results, _ = handmade
    assert Results(results.parent).path == results
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Results(results / "nowhere")


def test_importing_convscope_stays_light():
    code = ("import sys, convscope; print(sorted(m for m in ('torch', 'h5py', 'pandas') "
            "if m in sys.modules)); from convscope import Results; print(Results.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO).stdout.split()
    assert out == ["[]", "Results"]
