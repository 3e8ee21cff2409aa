"""The HTML report: built only from the files it is given, links relative to its own folder."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from convscope.analysis.performance import run_performance, wilson_interval
from convscope.config import (ConfigError, DatasetConfig, PerformanceConfig, ReportConfig,
                              validate_config)
from convscope.data.manifest import read_manifest, write_manifest
from convscope.report.build import ReportInputs, build_report, chance_warning
from convscope.store.shards import write_shard

CLASS_NAMES = ["ant", "bee", "cow"]


def _write_file(path: Path, text: str = "x") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def _performance(root: Path, shards, manifest_csv) -> dict:
    cfg = PerformanceConfig.from_dict(validate_config({})["performance"])
    folder = root / "performance"
    outputs = {"overall": folder / "overall.csv", "per_class": folder / "per_class.csv",
               "per_attribute": folder / "per_attribute.csv", "tables": folder / "tables.md",
               "confusion": folder / "confusion.csv", "confusion_plot": folder / "confusion.png",
               "plots": folder / "plots", "comparison": folder / "comparison.csv",
               "agreement": folder / "agreement.csv",
               "comparison_examples": folder / "comparison_examples.csv",
               "comparison_panel": folder / "comparison.png"}
    run_performance(shards, manifest_csv, cfg, **outputs)
    names = {"tables": "performance_tables", "plots": "attribute_plots"}
    return {names.get(key, key): str(path) for key, path in outputs.items()}


def _units(root: Path) -> dict:
    units = root / "units"
    pages = {"relu1": ["topk/relu1/patches-000.png", "topk/relu1/context-000.png"]}
    for page in pages["relu1"]:
        _write_file(units / page)
    _write_file(units / "relu1" / "stray-000.png")  # not listed anywhere: must not be linked
    _write_file(units / "topk.json", json.dumps(pages))
    filters = units / "filters"
    _write_file(filters / "weights" / "conv1.png")
    _write_file(filters / "index.csv", "kind,layer,analysed_layer,image_index,file\n"
                                       "weights,conv1,relu1,-1,weights/conv1.png\n")
    return {"topk_table": _write_file(units / "topk.csv"),
            "topk_index": str(units / "topk.json"),
            "topk_pages": str(units / "topk"),
            "unit_stats": _write_file(units / "stats.csv"),
            "unit_summary": _write_file(units / "summary.csv"),
            "firing_rate": _write_file(units / "firing_rate.png"),
            "filters": str(filters)}


def _analyses(root: Path) -> dict:
    embedding, neighbours = root / "embedding", root / "neighbours"
    knn = {"results": [{"space": "code", "k": 5, "accuracy": 0.8125}]}
    return {
        "embedding_summary": _write_file(embedding / "embedding.json",
                                         json.dumps({"trustworthiness": 0.9375})),
        "coords": _write_file(embedding / "coords.csv"),
        "scatter": _write_file(embedding / "scatter.png"),
        "mosaic": _write_file(embedding / "mosaic.png"),
        "cloud": _write_file(embedding / "cloud.png"),
        "knn_accuracy": _write_file(neighbours / "knn_accuracy.json", json.dumps(knn)),
        "queries": _write_file(neighbours / "queries.csv"),
        "panels": _write_file(neighbours / "panels.png"),
    }


@pytest.fixture
def inputs(tmp_path):
    """Every report input under tmp_path/results, with real shards and performance tables."""
    root = tmp_path / "results"
    rng = np.random.default_rng(0)
    n = 40
    label = rng.integers(0, 3, size=n)
    split = np.where(np.arange(n) % 4 == 0, "test", "train")
    manifest = pd.DataFrame({"index": np.arange(n), "path": [f"/img/{i}.png" for i in range(n)],
                             "slot": -1, "label": label, "split": split})
    manifest_csv = root / "manifest.csv"
    write_manifest(manifest, CLASS_NAMES, manifest_csv)
    topk = np.stack([rng.permutation(3) for _ in range(n)]).astype(np.int32)
    kept = np.setdiff1d(np.arange(n), [7])  # one unreadable image
    shards = []
    for i, rows in enumerate(np.array_split(kept, 2)):
        path = root / "features" / f"shard-{i:05d}.h5"
        failed = [7] if i == 0 else []
        write_shard(path, {"index": rows, "label": label[rows].astype(np.int32),
                           "topk/class": topk[rows], "failed/index": np.array(failed, np.int64),
                           "failed/reason": np.array(["truncated file"] * len(failed), str)},
                    {"class_names": CLASS_NAMES, "nonfinite_maps": {"relu1": 2}})
        shards.append(str(path))
    model_info = {"model": {"name": "TinyNet"}, "codes": {"where": "input", "module": "fc",
                                                           "dim": 8},
                  "layers": {"relu1": {"shape": [4, 8, 8], "receptive_field": {
                      "size": [3, 3], "stride": [1, 1]}}}}
    values = {"manifest": str(manifest_csv), "shards": shards,
              "model_info": _write_file(root / "model" / "model_info.json",
                                        json.dumps(model_info)),
              "shard_index": _write_file(root / "features" / "index.json",
                                         json.dumps({"shards": [{"path": p} for p in shards]})),
              **_performance(root, shards, manifest_csv), **_units(root), **_analyses(root)}
    expected = {"test": (kept % 4 == 0), "top1": topk[kept, 0] == label[kept]}
    return values, expected


def _build(values, tmp_path, **report):
    cfg = validate_config({"report": report})
    out = tmp_path / "results" / "report" / "index.html"
    build_report(ReportConfig.from_dict(cfg["report"]), DatasetConfig.from_dict(cfg["dataset"]),
                 ReportInputs.from_mapping(values), out)
    return out.read_text()


def test_report_shows_the_given_files_linked_from_its_folder(inputs, tmp_path):
    values, expected = inputs
    html = _build(values, tmp_path, title="Insects & cows")
    assert "<title>Insects &amp; cows</title>" in html
    hrefs = set(re.findall(r'href="([^"]+)"', html))
    for page in ["topk/relu1/patches-000.png", "topk/relu1/context-000.png"]:
        assert f"../units/{page}" in hrefs  # from topk.json, relative to the report folder
    assert "../units/filters/weights/conv1.png" in hrefs  # from the filters index.csv
    assert not any("stray" in href for href in hrefs)  # nothing globbed beside them
    assert {"../embedding/mosaic.png", "../neighbours/panels.png",
            "../performance/confusion.png", "../performance/comparison.png",
            "../model/model_info.json"} <= hrefs
    assert "train_metrics" not in html  # not given: not shown
    for href in hrefs:  # every link resolves from the report's folder
        assert (tmp_path / "results" / "report" / href).exists(), href
    assert "TinyNet" in html and "39 images" not in html and "40 images in 2 shards" in html
    assert "truncated file" in html and "/img/7.png" in html
    assert "0.938" in html and "0.812" in html  # headline numbers from the JSON summaries


def test_accuracy_comes_from_the_performance_tables(inputs, tmp_path):
    values, expected = inputs
    html = _build(values, tmp_path)
    test_top1 = expected["top1"][expected["test"]]
    row = re.search(r"<tr><td>test</td><td>(\d+)</td><td>([0-9.]+)</td>", html)
    assert int(row.group(1)) == len(test_top1)
    assert float(row.group(2)) == pytest.approx(test_top1.mean(), abs=5e-4)
    # The report reads the table, it does not recompute: a changed table shows up as is.
    overall = pd.read_csv(values["overall"])
    overall.loc[0, "top1"] = 0.123456
    overall.to_csv(values["overall"], index=False)
    assert "<td>0.123</td>" in _build(values, tmp_path)


def test_unknown_input_name_and_bad_title_are_refused(inputs):
    values, _ = inputs
    with pytest.raises(TypeError, match="unknown inputs"):
        ReportInputs.from_mapping({**values, "weights": "model.pt"})
    with pytest.raises(ConfigError, match=r"report\.title"):
        validate_config({"report": {"title": 3}})


def _write_accuracy(values, n, hits, n_classes):
    """Overwrite the performance tables: ``hits`` of ``n`` right, ``n_classes`` classes."""
    lo, hi = wilson_interval(hits, n)
    row = {"split": "test", "n": n, "top1": hits / n, "top1_lo": lo, "top1_hi": hi,
           "top5": 1.0, "top5_lo": 0.9, "top5_hi": 1.0}
    pd.DataFrame([row]).to_csv(values["overall"], index=False)
    per_class = pd.DataFrame([{**row, "class": c, "class_name": f"c{c}"} for c in range(n_classes)])
    per_class.drop(columns="split").to_csv(values["per_class"], index=False)


@pytest.mark.parametrize("n, hits, n_classes", [(200, 24, 10), (200, 12, 10), (50, 8, 10),
                                                 (200, 40, 10), (1000, 900, 10), (90, 33, 3)])
def test_near_chance_accuracy_is_flagged_at_the_top(inputs, tmp_path, n, hits, n_classes):
    values, _ = inputs
    _write_accuracy(values, n, hits, n_classes)
    html = _build(values, tmp_path)
    # Independent: the Wilson interval by scipy; near chance = chance not below its lower bound.
    low = binomtest(hits, n).proportion_ci(method="wilson").low
    near = 1 / n_classes >= low
    assert ('id="near-chance"' in html) == near
    if near:
        assert html.index('id="near-chance"') < html.index("<h2>Accuracy</h2>")
        assert "class order" in html and "preprocess" in html and "weights" in html
        assert f"1 / {n_classes} classes" in html


def test_chance_warning_needs_two_classes_and_images():
    assert chance_warning([{"n": 10, "top1": 0.0}], [{"class": 0}]) is None
    assert chance_warning([{"n": 0, "top1": float("nan")}], [{}, {}]) is None
    warning = chance_warning([{"n": 100, "top1": 0.5}], [{}, {}])
    assert warning["chance"] == 0.5 and warning["n_classes"] == 2


def test_duplicate_paths_are_reported(inputs, tmp_path):
    values, _ = inputs
    manifest, names = read_manifest(values["manifest"])
    assert "appear more than once" not in _build(values, tmp_path)
    manifest.loc[[5, 6], "path"] = manifest.loc[4, "path"]
    write_manifest(manifest, names, values["manifest"])
    counts = manifest["path"].value_counts()
    assert int((counts > 1).sum()) == 1 and int((counts - 1).sum()) == 2  # by pandas
    html = _build(values, tmp_path)
    assert "1 image(s) appear more than once in the manifest (2 repeated row(s)" in html
    assert "/img/4.png" in html


def test_config_used_is_shown_when_given(inputs, tmp_path):
    values, _ = inputs
    assert "config-used" not in _build(values, tmp_path)
    config = "# every key with its description\nreport:\n  title: <b>x</b>  # the title\n"
    path = _write_file(tmp_path / "results" / "config.yaml", config)
    html = _build({**values, "config_used": path}, tmp_path)
    block = re.search(r'<details id="config-used">(.*?)</details>', html, re.S).group(1)
    assert 'href="../config.yaml"' in block
    assert "title: &lt;b&gt;x&lt;/b&gt;  # the title" in block  # escaped, verbatim


def test_comparison_is_shown_when_present(inputs, tmp_path):
    values, _ = inputs
    assert 'id="comparison"' not in _build(values, tmp_path)  # no compare_columns: header only
    root = tmp_path / "results" / "performance"
    pd.DataFrame([{"other": "human", "scope": "overall", "class": -1, "class_name": "", "n": 30,
                   "model_top1": 0.5, "model_top1_lo": 0.33, "model_top1_hi": 0.67,
                   "other_top1": 0.9, "other_top1_lo": 0.74, "other_top1_hi": 0.97}]
                 ).to_csv(root / "comparison.csv", index=False)
    pd.DataFrame([{"other": "human", "n": 30, "both_right": 14, "only_model": 1,
                   "only_other": 13, "both_wrong": 2}]).to_csv(root / "agreement.csv", index=False)
    given = {k: v for k, v in values.items()
             if k not in ("comparison", "agreement", "comparison_examples", "comparison_panel")}
    assert 'id="comparison"' not in _build(given, tmp_path)  # not given as inputs
    html = _build({**given, "comparison": str(root / "comparison.csv"),
                   "agreement": str(root / "agreement.csv"),
                   "comparison_examples": values["comparison_examples"]}, tmp_path)
    assert "<td>human</td><td>30</td><td>0.500</td><td>0.330–0.670</td><td>0.900</td>" in html
    assert "<td>14</td><td>1</td><td>13</td><td>2</td>" in html
    assert 'id="comparison-panel"' not in html  # panel not given: not shown
    html = _build({**values, "comparison": str(root / "comparison.csv"),
                   "agreement": str(root / "agreement.csv")}, tmp_path)
    figure = re.search(r'<figure id="comparison-panel">(.*?)</figure>', html, re.S).group(1)
    assert '<img src="../performance/comparison.png"' in figure
    assert "one row per kind" in figure and "true class" in figure
    assert (tmp_path / "results" / "report" / "../performance/comparison.png").exists()
    after = html.index('id="agreement"')
    assert after < html.index('id="comparison-panel"')  # under the comparison tables


@pytest.mark.parametrize("n_images", [1, 2])
def test_tiny_datasets_still_give_a_report(tmp_path, n_images):
    """1 or 2 images: embedding, neighbours and performance write every output; the report
    builds and says why the map was skipped and the neighbours cut short."""
    from convscope.analysis.embedding import run_embedding
    from convscope.analysis.neighbours import run_neighbours
    from convscope.config import EmbeddingConfig, NeighboursConfig

    root = tmp_path / "results"
    rng = np.random.default_rng(0)
    label = np.arange(n_images) % 3
    manifest = pd.DataFrame({"index": np.arange(n_images), "slot": -1, "label": label,
                             "path": [f"/img/{i}.png" for i in range(n_images)], "split": "all"})
    manifest_csv = root / "manifest.csv"
    write_manifest(manifest, CLASS_NAMES, manifest_csv)
    shard = root / "features" / "shard-00000.h5"
    write_shard(shard, {"index": np.arange(n_images), "label": label.astype(np.int32),
                        "topk/class": np.tile(np.arange(3, dtype=np.int32), (n_images, 1)),
                        "codes": rng.normal(size=(n_images, 8)).astype(np.float32),
                        "thumbs": rng.integers(0, 256, (n_images, 8, 8, 3), dtype=np.uint8),
                        "failed/index": np.zeros(0, np.int64),
                        "failed/reason": np.zeros(0, str)},
                {"class_names": CLASS_NAMES})
    cfg = validate_config({})
    emb, nb = root / "embedding", root / "neighbours"
    run_embedding([shard], manifest_csv, EmbeddingConfig.from_dict(cfg["embedding"]),
                  coords=emb / "coords.csv", scatter=emb / "scatter.png",
                  mosaic=emb / "mosaic.png", cloud=emb / "cloud.png",
                  summary=emb / "embedding.json")
    run_neighbours([shard], manifest_csv, NeighboursConfig.from_dict(cfg["neighbours"]),
                   queries=nb / "queries.csv", panels=nb / "panels.png",
                   accuracy=nb / "knn_accuracy.json")
    model_info = {"model": {"name": "TinyNet"}, "codes": {"where": "input", "module": "fc",
                                                           "dim": 8}, "layers": {}}
    values = {"manifest": str(manifest_csv), "shards": [str(shard)],
              "model_info": _write_file(root / "model" / "model_info.json",
                                        json.dumps(model_info)),
              "shard_index": _write_file(root / "features" / "index.json",
                                         json.dumps({"shards": [{"path": str(shard)}]})),
              **_performance(root, [str(shard)], manifest_csv), **_units(root),
              "embedding_summary": str(emb / "embedding.json"), "coords": str(emb / "coords.csv"),
              "scatter": str(emb / "scatter.png"), "mosaic": str(emb / "mosaic.png"),
              "cloud": str(emb / "cloud.png"), "knn_accuracy": str(nb / "knn_accuracy.json"),
              "queries": str(nb / "queries.csv"), "panels": str(nb / "panels.png")}
    html = _build(values, tmp_path)
    assert (f"t-SNE map skipped: t-SNE needs at least 4 images, the dataset has {n_images}"
            in html)
    assert f"neighbours.k is 8 but the dataset has {n_images} readable image(s)" in html
    assert "k-NN accuracy needs at least 2 labelled images" in html or n_images == 2
    assert f"{n_images} images in 1 shards" in html


@pytest.mark.workflow
def test_workflow_on_two_images_builds_the_report(tmp_path):
    """A 2-image folder dataset end to end: no traceback; the report says what was skipped."""
    import torch
    import yaml
    from PIL import Image

    from conftest import TINY_CONFIG, run_snakemake
    from convscope.nn.models import DemoCNN

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            tmp_path / "imgs" / cls / "0.png")
    torch.manual_seed(0)
    torch.save(DemoCNN(num_classes=2).state_dict(), tmp_path / "w.pt")
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["dataset"] = {"kind": "folder", "path": "imgs"}
    config["model"] = {"kind": "demo", "weights": "w.pt", "num_classes": 2}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(tmp_path, "--configfile", "cfg.yaml", "--cores", "2")
    html = (tmp_path / "results" / "report" / "index.html").read_text()
    assert "t-SNE map skipped: t-SNE needs at least 4 images, the dataset has 2" in html
    assert "neighbours.k is 8 but the dataset has 2 readable image(s)" in html
    assert "t-SNE needs at least 4 images" in (tmp_path / "logs" / "embedding" /
                                                "embedding.log").read_text()
