"""Accuracy tables against a direct pandas groupby over the same synthetic data."""

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import binomtest

from convscope.analysis.accuracy import wilson_interval
from convscope.analysis.comparison import (EXAMPLES_PER_KIND, PANEL_CAPTION_LINES, PANEL_LABEL_W,
                                           PANEL_LINE_H, PANEL_MIN_TILE_PX, PANEL_PAD,
                                           PANEL_TITLE_H)
from convscope.analysis.performance import run_performance
from convscope.config import ConfigError, PerformanceConfig, validate_config
from convscope.data.manifest import write_manifest
from convscope.store.shards import write_shard

N_CLASSES = 4
CLASS_NAMES = ["cat", "dog", "fox", "owl"]


def _cfg(**settings) -> PerformanceConfig:
    """The performance section with ``settings`` over the schema's defaults."""
    return PerformanceConfig.from_dict(validate_config({"performance": settings})["performance"])


def _outputs(folder):
    """Output paths of run_performance under ``folder`` (names as the rule declares them)."""
    names = {"overall": "overall.csv", "per_class": "per_class.csv",
             "per_attribute": "per_attribute.csv", "tables": "tables.md",
             "confusion": "confusion.csv", "confusion_plot": "confusion.png",
             "plots": "per_attribute", "comparison": "comparison.csv",
             "agreement": "agreement.csv", "comparison_examples": "comparison_examples.csv",
             "comparison_panel": "comparison.png"}
    return {key: folder / name for key, name in names.items()}


def _run(paths, manifest_csv, folder, **settings):
    return run_performance(paths, manifest_csv, _cfg(**settings), **_outputs(folder))


def _quantile_groups(values: np.ndarray, n_bins: int) -> list[np.ndarray]:
    """Row masks of the quantile bins, by hand: edges at the linear-interpolation quantiles
    (duplicates dropped), bins closed on the right, the smallest value in the first bin."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, n_bins + 1)))
    masks = [(values > lo) & (values <= hi) for lo, hi in zip(edges[:-1], edges[1:])]
    masks[0] |= values == edges[0]
    return edges, masks


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    label = rng.integers(0, N_CLASSES, size=n)
    label[:10] = -1  # unlabelled
    manifest = pd.DataFrame({
        "index": np.arange(n),
        "path": [f"/img/{i}.png" for i in range(n)],
        "slot": -1,
        "label": label,
        "split": np.where(rng.random(n) < 0.6, "test", "train"),
        "weather": rng.choice(["rain", "sun", "fog"], size=n),
        "distance": rng.exponential(10.0, size=n),
        "camera": [f"cam{i}" for i in rng.integers(0, 80, size=n)],
        "few": rng.integers(0, 3, size=n),
        "brightness": rng.choice(["dim", "bright"], size=n),
    })
    manifest.loc[5:20, "distance"] = np.nan
    manifest_csv = tmp_path / "manifest.csv"
    write_manifest(manifest, CLASS_NAMES, manifest_csv)

    # the model has 7 outputs (3 never a label); it is right more often in the sun
    correct = rng.random(n) < np.where(manifest["weather"] == "sun", 0.8, 0.5)
    topk = np.stack([rng.permutation(N_CLASSES + 3)[:5] for _ in range(n)])
    for i in np.flatnonzero(correct & (label >= 0)):
        topk[i] = [label[i]] + [c for c in topk[i] if c != label[i]][:4]
    pixel_brightness = rng.uniform(0, 1, size=n).astype(np.float32)
    width = rng.choice([32, 64, 64, 128], size=n).astype(np.float32)
    kept = np.setdiff1d(np.arange(n), [40, 41])  # two unreadable images
    paths = []
    for shard_id, rows in enumerate(np.array_split(kept, 3)):
        path = tmp_path / "features" / f"shard-{shard_id:05d}.h5"
        write_shard(path, {
            "index": rows.astype(np.int64),
            "label": label[rows].astype(np.int32),
            "topk/class": topk[rows].astype(np.int32),
            "topk/prob": np.full((len(rows), 5), 0.2, np.float32),
            "image_attrs/brightness": pixel_brightness[rows],
            "image_attrs/width": width[rows],
        }, {"class_names": CLASS_NAMES})
        paths.append(path)

    expected = manifest.iloc[kept].copy()
    expected["pixel_brightness"] = pixel_brightness[kept]
    expected["width"] = width[kept]
    expected["top1"] = topk[kept, 0] == label[kept]
    expected["top5"] = (topk[kept] == label[kept, None]).any(axis=1)
    expected["pred"] = topk[kept, 0]
    return paths, manifest_csv, expected


def _check_group(table, expected_groups):
    np.testing.assert_array_equal(table["n"], expected_groups["n"])
    np.testing.assert_allclose(table["top1"], expected_groups["top1"])
    np.testing.assert_allclose(table["top5"], expected_groups["top5"])


def _check_numeric_attribute(table: pd.DataFrame, rows: pd.DataFrame, attr: str) -> None:
    """One numeric attribute's rows of per_attribute.csv against 4 quantile bins of ``rows``."""
    known = rows[rows[attr].notna()]
    values = known[attr].to_numpy(dtype=np.float64)
    edges, masks = _quantile_groups(values, 4)
    assert table["kind"].eq("numeric").all()
    np.testing.assert_array_equal(table["n"], [m.sum() for m in masks])
    np.testing.assert_allclose(table["top1"], [known["top1"].to_numpy()[m].mean()
                                               for m in masks])
    np.testing.assert_allclose(table["top5"], [known["top5"].to_numpy()[m].mean()
                                               for m in masks])
    # the edges as pandas' bin labels round them (precision=3: three significant digits)
    np.testing.assert_allclose(table["bin_hi"], edges[1:], rtol=1e-3)
    assert table["bin_lo"].iloc[0] == pytest.approx(values.min())
    assert sum(m.sum() for m in masks) == len(known)  # every row in exactly one bin


def _check_confusion(confusion: pd.DataFrame, rows: pd.DataFrame) -> None:
    """confusion.csv (class names) against pandas' crosstab of the label and prediction ids."""
    direct = pd.crosstab(rows["label"], rows["pred"])
    for true_id in direct.index:
        for pred_id in direct.columns:
            pred_name = CLASS_NAMES[pred_id] if pred_id < N_CLASSES else str(pred_id)
            assert confusion.loc[CLASS_NAMES[true_id], pred_name] == direct.loc[true_id, pred_id]
    assert confusion.to_numpy().sum() == len(rows)


def test_tables_match_pandas_groupby(data, tmp_path):
    paths, manifest_csv, expected = data
    out = tmp_path / "perf"
    _run(paths, manifest_csv, out, n_bins=4)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in _outputs(out).values())
    rows = expected[(expected["label"] >= 0) & (expected["split"] == "test")]

    overall = pd.read_csv(out / "overall.csv")
    assert overall["n"].item() == len(rows)
    assert overall["top1"].item() == pytest.approx(rows["top1"].mean())
    assert overall["top5"].item() == pytest.approx(rows["top5"].mean())
    ci = binomtest(int(rows["top1"].sum()), len(rows)).proportion_ci(method="wilson")
    assert overall["top1_lo"].item() == pytest.approx(ci.low)
    assert overall["top1_hi"].item() == pytest.approx(ci.high)

    per_class = pd.read_csv(out / "per_class.csv")
    by_class = rows.groupby("label").agg(n=("top1", "size"), top1=("top1", "mean"),
                                         top5=("top5", "mean"))
    _check_group(per_class, by_class)
    assert list(per_class["class_name"]) == [CLASS_NAMES[c] for c in by_class.index]

    per_attr = pd.read_csv(out / "per_attribute.csv", keep_default_na=False,
                           na_values=[""])
    assert set(per_attr["attribute"]) == {"weather", "distance", "few", "brightness",
                                          "pixel_brightness", "width"}
    for attr in ["weather", "few", "brightness", "width"]:
        table = per_attr[per_attr["attribute"] == attr]
        grouped = rows.groupby(attr).agg(n=("top1", "size"), top1=("top1", "mean"),
                                         top5=("top5", "mean"))
        assert table["kind"].eq("categorical").all()
        assert list(table["value"]) == [str(v) for v in grouped.index]
        _check_group(table, grouped)
    for attr in ["distance", "pixel_brightness"]:
        _check_numeric_attribute(per_attr[per_attr["attribute"] == attr], rows, attr)
    _check_confusion(pd.read_csv(out / "confusion.csv", index_col=0), rows)

    md = (out / "tables.md").read_text()
    assert "camera" in md and "max_categories" in md  # skipped with a note
    assert "2 manifest row(s) have no shard row" in md
    for attr in ["weather", "distance", "pixel_brightness"]:
        assert (out / "per_attribute" / f"{attr}.png").stat().st_size > 0
    assert (out / "confusion.png").stat().st_size > 0


def test_split_choices(data, tmp_path):
    paths, manifest_csv, expected = data
    labelled = expected[expected["label"] >= 0]
    tables = _run(paths, manifest_csv, tmp_path / "all", split="all")
    assert tables["overall"]["n"].item() == len(labelled)
    tables = _run(paths, manifest_csv, tmp_path / "train", split="train", exclude=["camera"])
    assert tables["overall"]["n"].item() == (labelled["split"] == "train").sum()
    assert "camera" not in set(tables["per_attribute"]["attribute"])
    with pytest.raises(ConfigError, match=r"performance\.split.*'test'"):
        _cfg(split="val")
    with pytest.raises(ConfigError, match=r"performance\.n_bins"):
        _cfg(n_bins=0)
    with pytest.raises(ValueError, match="valid choices"):
        _run(paths, manifest_csv, tmp_path / "bad", exclude=["nope"])
    assert not (tmp_path / "bad").exists()


def test_wilson_against_scipy():
    for k, n in [(0, 10), (3, 10), (10, 10), (57, 200)]:
        lo, hi = wilson_interval(k, n)
        ci = binomtest(k, n).proportion_ci(method="wilson")
        assert lo == pytest.approx(ci.low) and hi == pytest.approx(ci.high)
    lo, hi = wilson_interval(np.array([0]), np.array([0]))
    assert np.isnan(lo).all() and np.isnan(hi).all()


def _dataset(tmp_path, manifest_extra: dict, n=60, seed=1, labels=None, width=None):
    """A one-shard dataset: manifest (with ``manifest_extra`` columns), shard, predictions."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, N_CLASSES, size=n) if labels is None else np.asarray(labels)
    manifest = pd.DataFrame({"index": np.arange(n), "path": [f"/img/{i}.png" for i in range(n)],
                             "slot": -1, "label": label, "split": "test", **manifest_extra})
    manifest_csv = tmp_path / "manifest.csv"
    write_manifest(manifest, CLASS_NAMES, manifest_csv)
    pred = np.where(rng.random(n) < 0.6, label, rng.integers(0, N_CLASSES, size=n))
    pred = np.maximum(pred, 0)  # unlabelled rows: any prediction
    topk = np.stack([[p] + [c for c in range(N_CLASSES) if c != p] for p in pred])
    arrays = {"index": np.arange(n, dtype=np.int64), "label": label.astype(np.int32),
              "topk/class": topk.astype(np.int32),
              "image_attrs/width": np.full(n, 28.0 if width is None else width, np.float32),
              "thumbs": np.zeros((n, 4, 4, 3), np.uint8)}
    path = tmp_path / "features" / "shard-00000.h5"
    write_shard(path, arrays, {"class_names": CLASS_NAMES})
    return [path], manifest_csv, manifest.assign(pred=pred)


def test_no_labelled_images_writes_every_output_with_a_note(tmp_path):
    paths, manifest_csv, _ = _dataset(tmp_path, {}, n=5, labels=[-1] * 5)
    out = tmp_path / "perf"
    tables = _run(paths, manifest_csv, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in _outputs(out).values())
    assert tables["overall"]["n"].item() == 0
    assert pd.read_csv(out / "per_class.csv").empty
    assert pd.read_csv(out / "comparison.csv").empty  # header only
    with Image.open(out / "comparison.png") as panel:  # a small note: no compare_columns
        assert panel.size == (1200, 300)  # a 600 x 150 note, saved at 2x (HIDPI_SCALE)
    md = (out / "tables.md").read_text()
    assert "No labelled images were evaluated" in md
    assert "5 image(s) without a label" in md and "performance.split" in md


def test_constant_attributes_are_listed_not_tabled(tmp_path):
    n = 60
    rng = np.random.default_rng(3)
    extra = {"camera": ["cam0"] * n, "weather": rng.choice(["rain", "sun"], size=n)}
    paths, manifest_csv, manifest = _dataset(tmp_path, extra, n=n)
    out = tmp_path / "perf"
    tables = _run(paths, manifest_csv, out)
    # Independent: which evaluated columns have a single value, by pandas.
    evaluated = manifest.assign(width=28.0)[["camera", "weather", "width"]]
    constant = [c for c in evaluated.columns if evaluated[c].nunique() == 1]
    assert constant == ["camera", "width"]
    assert set(tables["per_attribute"]["attribute"]) == {"weather"}
    assert sorted(p.name for p in (out / "per_attribute").iterdir()) == ["weather.png"]
    md = (out / "tables.md").read_text()
    assert "### Constant attributes" in md and "- camera = cam0" in md and "- width = 28.0" in md
    assert "width: constant (28.0)" in md and "### width" not in md


def test_duplicate_paths_are_counted(tmp_path):
    paths, manifest_csv, manifest = _dataset(tmp_path, {}, n=12)
    manifest.loc[[3, 7, 9], "path"] = manifest.loc[0, "path"]  # 4 rows, one image
    manifest.loc[11, "path"] = manifest.loc[10, "path"]
    write_manifest(manifest.drop(columns="pred"), CLASS_NAMES, manifest_csv)
    md_path = tmp_path / "perf" / "tables.md"
    _run(paths, manifest_csv, tmp_path / "perf")
    counts = manifest["path"].value_counts()
    repeated_images = int((counts > 1).sum())
    repeated_rows = int((counts[counts > 1] - 1).sum())
    assert (repeated_images, repeated_rows) == (2, 4)
    assert (f"{repeated_images} image(s) appear more than once in the manifest "
            f"({repeated_rows} repeated row(s)" in md_path.read_text())


def test_comparison_with_other_predictions_matches_pandas(tmp_path):
    n = 200
    rng = np.random.default_rng(7)
    label = rng.integers(0, N_CLASSES, size=n)
    human = np.where(rng.random(n) < 0.8, label, rng.integers(0, N_CLASSES, size=n))
    human_names = pd.Series([CLASS_NAMES[c] for c in human], dtype=object)
    human_names[rng.random(n) < 0.25] = None  # images the human did not label
    resnet = np.where(rng.random(n) < 0.5, label, rng.integers(0, N_CLASSES, size=n))
    paths, manifest_csv, manifest = _dataset(
        tmp_path, {"human": human_names, "resnet": resnet, "weather": rng.choice(["a", "b"], n)},
        n=n, labels=label)
    out = tmp_path / "perf"
    tables = _run(paths, manifest_csv, out, compare_columns=["human", "resnet"])
    assert set(tables["per_attribute"]["attribute"]) == {"weather"}  # not attributes
    comparison = pd.read_csv(out / "comparison.csv", keep_default_na=False, na_values=[""])
    agreement = pd.read_csv(out / "agreement.csv").set_index("other")
    examples = pd.read_csv(out / "comparison_examples.csv")
    name_to_id = {name: i for i, name in enumerate(CLASS_NAMES)}
    human_ids = manifest["human"].map(name_to_id)
    for other, ids in (("human", human_ids), ("resnet", manifest["resnet"])):
        rows = manifest[ids.notna()].assign(other=ids[ids.notna()].astype(int))
        model_right = rows["pred"] == rows["label"]
        other_right = rows["other"] == rows["label"]
        mine = comparison[comparison["other"] == other]
        overall = mine[mine["scope"] == "overall"].iloc[0]
        assert overall["n"] == len(rows)
        assert overall["model_top1"] == pytest.approx(model_right.mean())
        assert overall["other_top1"] == pytest.approx(other_right.mean())
        ci = binomtest(int(other_right.sum()), len(rows)).proportion_ci(method="wilson")
        assert overall["other_top1_lo"] == pytest.approx(ci.low)
        assert overall["other_top1_hi"] == pytest.approx(ci.high)
        per_class = mine[mine["scope"] == "class"].set_index("class")
        by_class = rows.assign(m=model_right, o=other_right).groupby("label").agg(
            n=("m", "size"), m=("m", "mean"), o=("o", "mean"))
        np.testing.assert_array_equal(per_class["n"], by_class["n"])
        np.testing.assert_allclose(per_class["model_top1"], by_class["m"])
        np.testing.assert_allclose(per_class["other_top1"], by_class["o"])
        assert list(per_class["class_name"]) == [CLASS_NAMES[c] for c in by_class.index]
        by_weather = mine[mine["attribute"] == "weather"].set_index("value")
        direct = rows.assign(m=model_right, o=other_right).groupby("weather").agg(
            n=("m", "size"), m=("m", "mean"), o=("o", "mean"), hits=("o", "sum"))
        assert list(by_weather.index) == list(direct.index)
        np.testing.assert_array_equal(by_weather["n"], direct["n"])
        np.testing.assert_allclose(by_weather["model_top1"], direct["m"])
        np.testing.assert_allclose(by_weather["other_top1"], direct["o"])
        ci = binomtest(int(direct["hits"].iloc[0]), int(direct["n"].iloc[0])).proportion_ci(
            method="wilson")
        assert by_weather["other_top1_lo"].iloc[0] == pytest.approx(ci.low)
        crosstab = pd.crosstab(model_right, other_right)
        assert agreement.loc[other, "both_right"] == crosstab.loc[True, True]
        assert agreement.loc[other, "only_model"] == crosstab.loc[True, False]
        assert agreement.loc[other, "only_other"] == crosstab.loc[False, True]
        assert agreement.loc[other, "both_wrong"] == crosstab.loc[False, False]
        only_model = rows[model_right & ~other_right].sort_values("index").head(5)
        shown = examples[(examples["other"] == other) & (examples["kind"] == "only_model")]
        assert list(shown["path"]) == list(only_model["path"])
        assert list(shown["other_pred"]) == [CLASS_NAMES[c] for c in only_model["other"]]
    md = (out / "tables.md").read_text()
    assert "## Compared with other predictions" in md and "only the model right" in md


def test_comparison_columns_are_checked(tmp_path):
    paths, manifest_csv, _ = _dataset(tmp_path, {"human": ["cat", "dgo"] * 30})
    with pytest.raises(ValueError, match=r"compare_columns.*'human'.*\['dgo'\].*'cat'"):
        _run(paths, manifest_csv, tmp_path / "a", compare_columns=["human"])
    with pytest.raises(ValueError, match=r"compare_columns.*\['nope'\].*valid choices"):
        _run(paths, manifest_csv, tmp_path / "b", compare_columns=["nope"])
    paths, manifest_csv, _ = _dataset(tmp_path, {"resnet": [0, 9] * 30})
    with pytest.raises(ValueError, match=r"'resnet' holds \[9.0\].*0\.\.3"):
        _run(paths, manifest_csv, tmp_path / "c", compare_columns=["resnet"])


def _write_thumb_shards(folder, kept, label, pred, thumbs) -> list:
    """Two shards of the rows ``kept`` (in that order): index, label, the prediction ranked
    first in ``topk/class`` and the thumbnails."""
    paths = []
    for shard_id, rows in enumerate(np.array_split(kept, 2)):
        path = folder / f"shard-{shard_id:05d}.h5"
        topk = np.stack([[p] + [c for c in range(N_CLASSES) if c != p] for p in pred[rows]])
        write_shard(path, {"index": rows.astype(np.int64), "label": label[rows].astype(np.int32),
                           "topk/class": topk.astype(np.int32), "thumbs": thumbs[rows]},
                    {"class_names": CLASS_NAMES})
        paths.append(path)
    return paths


def test_comparison_panel_shows_the_examples_thumbnails(tmp_path):
    """Block per compared column, row per disagreement kind, cell per row of the examples CSV:
    each cell holds that image's thumbnail enlarged by pixel repetition."""
    n, t = 90, 10
    rng = np.random.default_rng(11)
    label = rng.integers(0, N_CLASSES, size=n)
    pred = np.where(rng.random(n) < 0.5, label, (label + 1) % N_CLASSES)
    human = pd.Series(np.where(rng.random(n) < 0.6, label, (label + 2) % N_CLASSES), dtype=float)
    human[rng.random(n) < 0.2] = np.nan  # not answered
    tagger = label.copy()
    tagger[[3, 17]] = (label[[3, 17]] + 3) % N_CLASSES  # wrong twice only: short rows
    manifest = pd.DataFrame({"index": np.arange(n), "path": [f"/img/{i}.png" for i in range(n)],
                             "slot": -1, "label": label, "split": "test", "human": human,
                             "tagger": tagger})
    manifest_csv = tmp_path / "manifest.csv"
    write_manifest(manifest, CLASS_NAMES, manifest_csv)
    thumbs = rng.integers(0, 256, size=(n, t, t, 3), dtype=np.uint8)
    kept = rng.permutation(np.setdiff1d(np.arange(n), [5, 60]))  # shuffled, two unreadable
    paths = _write_thumb_shards(tmp_path / "features", kept, label, pred, thumbs)
    out = tmp_path / "perf"
    _run(paths, manifest_csv, out, compare_columns=["human", "tagger"])
    examples = pd.read_csv(out / "comparison_examples.csv")

    kinds = ["only_model", "only_other", "both_wrong"]
    factor = math.ceil(PANEL_MIN_TILE_PX / t)
    tile = t * factor
    cell_w = tile + 2 * PANEL_PAD
    cell_h = tile + 3 * PANEL_PAD + PANEL_CAPTION_LINES * PANEL_LINE_H
    block_h = PANEL_TITLE_H + len(kinds) * cell_h
    panel = np.asarray(Image.open(out / "comparison.png").convert("RGB"))
    assert panel.shape == (2 * block_h, PANEL_LABEL_W + EXAMPLES_PER_KIND * cell_w, 3)
    evaluated = np.zeros(n, bool)
    evaluated[kept] = True
    cells = 0
    for b, (other, answers) in enumerate((("human", human), ("tagger", pd.Series(tagger)))):
        answered = evaluated & answers.notna().to_numpy()
        model_right = pred == label
        other_right = answers.to_numpy() == label
        kind_of = np.select([model_right & ~other_right, ~model_right & other_right,
                             ~model_right & ~other_right], kinds, "both_right")
        for k, kind in enumerate(kinds):
            expected = np.flatnonzero(answered & (kind_of == kind))[:EXAMPLES_PER_KIND]
            shown = examples[(examples["other"] == other) & (examples["kind"] == kind)]
            assert list(shown["index"]) == list(expected)
            top = b * block_h + PANEL_TITLE_H + k * cell_h + PANEL_PAD
            for j in range(EXAMPLES_PER_KIND):
                left = PANEL_LABEL_W + j * cell_w + PANEL_PAD
                cell = panel[top:top + tile, left:left + tile]
                if j < len(shown):
                    enlarged = np.kron(thumbs[shown["index"].iloc[j]],
                                       np.ones((factor, factor, 1), np.uint8))
                    np.testing.assert_array_equal(cell, enlarged)
                    cells += 1
                else:
                    assert (cell == 255).all()  # no example: the cell stays blank
    assert cells == len(examples)
    assert (examples["other"] == "tagger").sum() < 2 * EXAMPLES_PER_KIND  # short rows exist
