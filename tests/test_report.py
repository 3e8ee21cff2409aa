"""The HTML report: built only from the files it is given, links relative to its own folder."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from convscope.analysis.performance import run_performance
from convscope.config import (ConfigError, DatasetConfig, PerformanceConfig, ReportConfig,
                              validate_config)
from convscope.data.manifest import write_manifest
from convscope.report.build import ReportInputs, build_report
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
               "plots": folder / "plots"}
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
            "../performance/confusion.png", "../model/model_info.json"} <= hrefs
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
