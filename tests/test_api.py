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
    with pytest.raises(StageMissingError, match=r"'explain' stage.*explain_images"):
        api.explained_images()
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
    assert Results(results.parent).path == results.absolute()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Results(results / "nowhere")


def test_importing_convscope_stays_light():
    code = ("import sys, convscope; print(sorted(m for m in ('torch', 'h5py', 'pandas') "
            "if m in sys.modules)); from convscope import Results; print(Results.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO).stdout.split()
    assert out == ["[]", "Results"]


def test_every_public_accessor_has_an_example():
    from convscope.results import StageOutput

    missing = [f"{cls.__name__}.{name}" for cls in (Results, ShardArray, StageOutput)
               for name, member in vars(cls).items()
               if not name.startswith("_") and "Example" not in (getattr(member, "__doc__", "") or "")]
    assert missing == []


# --------------------------------------------------------------------------- the tiny run


def _stored(results: Path, path: str) -> Path:
    """A path stored inside results/: absolute as it is, else relative to the results folder
    (or, as written before paths became relative, to the run's folder)."""
    path = Path(path)
    if path.is_absolute():
        return path
    return results / path if (results / path).exists() else results.parent / path


def _shards(results: Path) -> list[Path]:
    listing = json.loads((results / "features" / "index.json").read_text())["shards"]
    return [_stored(results, s["path"]) for s in listing]


def _concat(results: Path, dataset: str) -> np.ndarray:
    parts = []
    for path in _shards(results):
        with h5py.File(path, "r") as f:
            parts.append(f[dataset][()])
    return np.concatenate(parts)


@pytest.mark.workflow
def test_tiny_run_layers_images_and_codes(tiny_run):
    results = tiny_run / "results"
    api = Results(tiny_run / "results")
    info = json.loads((results / "model" / "model_info.json").read_text())
    assert list(api.layers.index) == list(info["layers"]) == ["relu1", "relu2", "relu3", "relu4"]
    for name, layer in info["layers"].items():
        row = api.layers.loc[name]
        assert [row["channels"], row["height"], row["width"]] == layer["shape"]
        assert row["rf_size"] == layer["receptive_field"]["size"]
        assert row["rf_stride"] == layer["receptive_field"]["stride"]
        assert row["rf_start"] == layer["receptive_field"]["start"]

    images = api.images
    ids, labels = _concat(results, "index"), _concat(results, "label")
    preds = _concat(results, "topk/class")[:, 0]
    classes = json.loads((results / "manifest.classes.json").read_text())
    manifest = pd.read_csv(results / "manifest.csv").set_index("index").loc[ids]
    assert images["id"].tolist() == ids.tolist() and len(images) == 120
    assert images["label"].tolist() == labels.tolist() == manifest["label"].tolist()
    assert images["prediction"].tolist() == preds.tolist()
    assert images["class_name"].tolist() == [classes[i] for i in labels]
    assert images["prediction_name"].tolist() == [classes[i] for i in preds]
    assert images["correct"].tolist() == (labels == preds).tolist()
    assert images["path"].tolist() == [str(_stored(results, p)) for p in manifest["path"]]
    assert all(Path(p).is_file() for p in images["path"])
    for column in ("colour", "background", "clutter"):
        assert images[column].tolist() == manifest[column].tolist()
    np.testing.assert_array_equal(images["brightness"], _concat(results, "image_attrs/brightness"))

    got_ids, codes = api.codes()
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(codes, _concat(results, "codes"))
    assert api.codes(lazy=True)[1].shape == codes.shape


@pytest.mark.workflow
def test_tiny_run_activations_read_each_shard(tiny_run):
    results = tiny_run / "results"
    api = Results(results)
    rng = np.random.default_rng(0)
    for layer in ("relu1", "relu4"):
        for statistic in ("max", "mean", "argmax"):
            expected = _concat(results, f"layers/{layer}/{statistic}")
            acts = api.activations(layer, statistic)
            assert acts.shape == expected.shape and acts.dtype == expected.dtype
            rows = rng.choice(len(expected), size=7, replace=False)
            np.testing.assert_array_equal(acts[rows], expected[rows])
            np.testing.assert_array_equal(acts[45:55, 3], expected[45:55, 3])
            np.testing.assert_array_equal(np.concatenate(list(acts.iter_shards())), expected)


@pytest.mark.workflow
def test_tiny_run_units_tables(tiny_run):
    results = tiny_run / "results"
    api = Results(results)
    stats = pd.read_csv(results / "units" / "stats.csv")
    topk = pd.read_csv(results / "units" / "topk.csv")
    for layer in ("relu2", "relu3"):
        got = api.stats(layer)
        expected = stats[stats["layer"] == layer].reset_index(drop=True)
        assert list(got.columns) == list(stats.columns)
        assert got["channel"].tolist() == list(range(api.layers.loc[layer, "channels"]))
        np.testing.assert_array_equal(got["max_activation"], expected["max_activation"])
        assert got["dead"].tolist() == expected["dead"].astype(str).eq("True").tolist()
        unit = int(topk.loc[topk["layer"] == layer, "channel"].iloc[-1])
        rows = topk[(topk["layer"] == layer) & (topk["channel"] == unit)]
        got = api.topk(layer, unit=unit)
        assert got["id"].tolist() == rows["index"].tolist() and len(got) == 4  # units.topk: 4
        for column in ("rank", "value", "fy", "fx", "x0", "y0", "x1", "y1"):
            np.testing.assert_array_equal(got[column], rows[column])
        assert len(api.topk(layer)) == int((topk["layer"] == layer).sum())


@pytest.mark.workflow
def test_tiny_run_analysis_tables(tiny_run):
    results = tiny_run / "results"
    api = Results(results)
    coords = pd.read_csv(results / "embedding" / "coords.csv")
    embedding = api.embedding()
    assert embedding["id"].tolist() == coords["index"].tolist()
    np.testing.assert_array_equal(embedding[["x", "y"]], coords[["x", "y"]])
    neighbours = results / "neighbours"
    pd.testing.assert_frame_equal(api.neighbours(), pd.read_csv(neighbours / "queries.csv"))
    assert api.knn_accuracy() == json.loads((neighbours / "knn_accuracy.json").read_text())
    for name in ("overall", "per_class", "per_attribute", "confusion"):
        pd.testing.assert_frame_equal(api.attribute_table(name),
                                      pd.read_csv(results / "performance" / f"{name}.csv"))
    per_attribute = pd.read_csv(results / "performance" / "per_attribute.csv")
    colour = per_attribute[per_attribute["attribute"] == "colour"].reset_index(drop=True)
    pd.testing.assert_frame_equal(api.attribute_table("colour"), colour)
    summary = pd.read_csv(results / "units" / "summary.csv")
    pd.testing.assert_frame_equal(api.unit_summary(), summary)
    explained = pd.read_csv(results / "explain" / "images.csv")
    got = api.explained_images()
    assert got["id"].tolist() == explained["index"].tolist()
    assert got["path"].tolist() == [str(_stored(results, p)) for p in explained["path"]]
    assert got["reason"].tolist() == explained["reason"].tolist()
    with pytest.raises(KeyError, match="'hue2'.*colour"):
        api.attribute_table("hue2")


@pytest.mark.workflow
def test_tiny_run_explanation_and_synthesis_outputs(tiny_run):
    from conftest import h5_datasets

    results = tiny_run / "results"
    api = Results(results)
    for kind, names, accessor in (("explain", api.explanations, api.explanation),
                                  ("synthesis", api.syntheses, api.synthesis)):
        assert names == sorted(p.parent.name for p in (results / kind).glob("*/summary.json"))
        for name in names:
            folder = results / kind / name
            output = accessor(name)
            assert output.summary == json.loads((folder / "summary.json").read_text())
            h5_files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.h5")
                              if "chunks" not in p.relative_to(folder).parts)  # merged
            assert output.h5_files == h5_files
            for file in output.h5_files:
                expected = h5_datasets(folder / file)
                assert output.datasets(file) == {k: v.shape for k, v in expected.items()}
                for dataset, values in expected.items():
                    got = output.read(dataset, file)
                    if values.dtype.kind in "SO":  # h5py gives bytes; the API gives str
                        text = [v.decode() if isinstance(v, bytes) else v for v in values.ravel()]
                        values = np.array(text, dtype=object).reshape(values.shape)
                    np.testing.assert_array_equal(got, values)
            for table in output.tables:
                pd.testing.assert_frame_equal(output.table(table), pd.read_csv(folder / table))
    assert set(api.explanations) >= {"attribution", "units", "invariance"}
    assert set(api.syntheses) == {"classes", "units", "inversion", "evolution", "dream", "style",
                                  "adversarial", "fooling"}


@pytest.mark.workflow
def test_tiny_run_missing_stage_names_it(tiny_run, tmp_path):
    copy = tmp_path / "results"
    shutil.copytree(tiny_run / "results", copy, ignore=shutil.ignore_patterns("report", "demo"))
    shutil.rmtree(copy / "explain" / "attribution")
    shutil.rmtree(copy / "embedding")
    api = Results(copy)
    assert "attribution" not in api.explanations
    with pytest.raises(StageMissingError, match=r"'explain/attribution' stage.*explain_attribution"
                                                r".*`explain\.attribution` config section"):
        api.explanation("attribution")
    with pytest.raises(StageMissingError, match=r"embedding/coords\.csv.*'embedding' stage"):
        api.embedding()
    # the rest of the copy still reads, shards included
    assert api.activations("relu2").shape == (120, 64)
