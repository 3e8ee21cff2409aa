"""Accuracy tables against a direct pandas groupby over the same synthetic data."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from convscope.analysis.performance import run_performance, wilson_interval
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
             "plots": "per_attribute"}
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
        table = per_attr[per_attr["attribute"] == attr]
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
    confusion = pd.read_csv(out / "confusion.csv", index_col=0)
    direct = pd.crosstab(rows["label"], rows["pred"])
    for true_id in direct.index:
        for pred_id in direct.columns:
            pred_name = CLASS_NAMES[pred_id] if pred_id < N_CLASSES else str(pred_id)
            assert confusion.loc[CLASS_NAMES[true_id], pred_name] == direct.loc[true_id, pred_id]
    assert confusion.to_numpy().sum() == len(rows)

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
