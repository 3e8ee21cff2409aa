"""The report site: built only from the files it is given, every link inside its folder."""

import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import binomtest

from convscope.analysis.accuracy import wilson_interval
from convscope.analysis.performance import run_performance
from convscope.config import (ConfigError, DatasetConfig, PerformanceConfig, ReportConfig,
                              validate_config)
from convscope.data.manifest import read_manifest, write_manifest
from convscope.report import ReportInputs, build_report, chance_warning
from convscope.report.readers import benchmark_rows
from convscope.store.shards import write_shard
from test_browser import _local_targets

CLASS_NAMES = ["ant", "bee", "cow"]
N_IMAGES = 40
IMAGE_PX = 32


def _write_file(path: Path, text: str = "x") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def _write_png(path: Path, rng, size=(IMAGE_PX, IMAGE_PX)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(path)
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


def _units(root: Path, rng, n_images: int = N_IMAGES) -> dict:
    """Unit statistics and top-k rows of one layer ``relu1`` (4 channels, channel 3 dead)."""
    units = root / "units"
    stats = pd.DataFrame({"layer": "relu1", "channel": range(4),
                          "firing_rate": [0.5, 0.25, 1.0, 0.0], "mean_activation": 0.1,
                          "mean_max": 0.2, "max_activation": [2.0, 3.0, 1.0, 0.0],
                          "dead": [False, False, False, True]})
    stats.to_csv(units.mkdir(parents=True) or units / "stats.csv", index=False)
    rows = []
    for channel in range(4):
        for rank in range(2):
            value = 0.0 if channel == 3 else 3.0 - rank - channel / 4
            rows.append({"layer": "relu1", "channel": channel, "rank": rank,
                         "index": (channel * 2 + rank) % n_images, "value": value, "fy": 1,
                         "fx": 1, "x0": 4.0, "y0": 6.0, "x1": 28.0, "y1": 30.0})
    pd.DataFrame(rows).to_csv(units / "topk.csv", index=False)
    pages = {"relu1": ["topk/relu1/patches-000.png"]}
    _write_png(units / "topk/relu1/patches-000.png", rng)
    _write_png(units / "relu1" / "stray-000.png", rng)  # listed nowhere: must not be copied
    _write_file(units / "topk.json", json.dumps(pages))
    filters = units / "filters"
    _write_png(filters / "weights" / "conv1.png", rng)
    _write_file(filters / "index.csv", "kind,layer,analysed_layer,image_index,file\n"
                                       "weights,conv1,relu1,-1,weights/conv1.png\n")
    pd.DataFrame({"layer": ["relu1"], "channels": [4], "dead": [1], "dead_fraction": [0.25],
                  "sparsity": [0.5625], "images": [n_images]}).to_csv(units / "summary.csv",
                                                                       index=False)
    return {"topk_table": str(units / "topk.csv"), "topk_index": str(units / "topk.json"),
            "topk_pages": str(units / "topk"), "unit_stats": str(units / "stats.csv"),
            "unit_summary": str(units / "summary.csv"),
            "firing_rate": _write_png(units / "firing_rate.png", rng), "filters": str(filters)}


def _analyses(root: Path, rng, n_images: int = N_IMAGES) -> dict:
    embedding, neighbours = root / "embedding", root / "neighbours"
    knn = {"results": [{"space": "code", "k": 5, "accuracy": 0.8125}]}
    pd.DataFrame({"index": np.arange(n_images), "x": rng.normal(size=n_images),
                  "y": rng.normal(size=n_images), "label": np.arange(n_images) % 3,
                  "fitted": True, "grid_row": 0, "grid_col": 0}).to_csv(
        embedding.mkdir(parents=True) or embedding / "coords.csv", index=False)
    _write_file(neighbours / "queries.csv", "query_index,rank,neighbour_index,distance\n0,1,5,0.5\n")
    return {
        "embedding_summary": _write_file(embedding / "embedding.json",
                                         json.dumps({"trustworthiness": 0.9375})),
        "coords": str(embedding / "coords.csv"),
        **{name: _write_png(embedding / f"{name}.png", rng)
           for name in ("scatter", "mosaic", "cloud")},
        "knn_accuracy": _write_file(neighbours / "knn_accuracy.json", json.dumps(knn)),
        "queries": str(neighbours / "queries.csv"),
        "panels": _write_png(neighbours / "panels.png", rng),
    }


def _model_info(root: Path, layers: dict) -> str:
    info = {"model": {"kind": "demo", "name": "TinyNet", "weights_sha256": "ab" * 32},
            "codes": {"where": "input", "module": "fc", "dim": 8}, "layers": layers}
    return _write_file(root / "model" / "model_info.json", json.dumps(info))


@pytest.fixture
def inputs(tmp_path):
    """Every report input under tmp_path/results: real images, shards and performance tables."""
    root = tmp_path / "results"
    rng = np.random.default_rng(0)
    n = N_IMAGES
    label = rng.integers(0, 3, size=n)
    split = np.where(np.arange(n) % 4 == 0, "test", "train")
    paths = [_write_png(tmp_path / "img" / f"{i}.png", rng) for i in range(n)]
    manifest = pd.DataFrame({"index": np.arange(n), "path": paths, "slot": -1, "label": label,
                             "split": split, "colour": np.where(label == 0, "red", "blue")})
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
                           "failed/reason": np.array(["truncated file"] * len(failed), str),
                           "thumbs": rng.integers(0, 256, (len(rows), 8, 8, 3), dtype=np.uint8),
                           "image_attrs/brightness": rng.random(len(rows)).astype(np.float32)},
                    {"class_names": CLASS_NAMES, "nonfinite_maps": {"relu1": 2}})
        shards.append(str(path))
    layers = {"relu1": {"shape": [4, 8, 8], "receptive_field": {"size": [3, 3],
                                                                 "stride": [1, 1]}}}
    values = {"manifest": str(manifest_csv), "shards": shards,
              "model_info": _model_info(root, layers),
              "shard_index": _write_file(root / "features" / "index.json",
                                         json.dumps({"shards": [{"path": p} for p in shards]})),
              **_performance(root, shards, manifest_csv), **_units(root, rng),
              **_analyses(root, rng)}
    expected = {"test": (kept % 4 == 0), "top1": topk[kept, 0] == label[kept]}
    return values, expected


def _site(tmp_path) -> Path:
    return tmp_path / "results" / "report"


def _build(values, tmp_path, page="index.html", **report):
    cfg = validate_config({"report": {"patch_px": 24, **report}})
    site = _site(tmp_path)
    build_report(ReportConfig.from_dict(cfg["report"]), DatasetConfig.from_dict(cfg["dataset"]),
                 ReportInputs.from_mapping(values), index_html=site / "index.html",
                 pages_dir=site / "pages", assets_dir=site / "assets")
    return (site / page).read_text()


def _read_data(path: Path) -> dict:
    """The value a site data script assigns."""
    text = path.read_text()
    return json.loads(text[text.index("] = ") + 4:].rstrip().rstrip(";"))


def test_site_pages_link_only_inside_their_folder(inputs, tmp_path):
    values, _ = inputs
    html = _build(values, tmp_path, title="Insects & cows")
    site = _site(tmp_path)
    assert "<title>Overview · Insects &amp; cows</title>" in html  # the site's title once
    assert html.count("Insects &amp; cows") == 2  # in <title> and the navigation's brand
    pages = sorted(site.rglob("*.html"))
    names = {str(p.relative_to(site)) for p in pages}
    assert {"index.html", "pages/units.html", "pages/layer-relu1.html", "pages/embedding.html",
            "pages/neighbours.html", "pages/performance.html", "pages/filters.html"} <= names
    assert {f"pages/units/relu1/c{c:04d}.html" for c in range(4)} <= names
    for page in pages:  # every link and image resolves inside the site
        for target in _local_targets(page):
            assert target.is_file() and site.resolve() in target.parents, (page, target)
    assert not list(site.rglob("*stray*"))  # nothing globbed beside the listed files
    gallery = (site / "pages" / "layer-relu1.html").read_text()  # topk.json's pages: named
    assert "<code>topk/relu1/patches-000.png</code>" in gallery  # (the sheets hold the crops)
    assert not list(site.rglob("patches-000.png"))
    assert not [p for p in site.iterdir() if p.name.startswith(".")]  # no staging left
    assert '<a href="pages/layer-relu1.html"><code>relu1</code></a>' in html  # layer table
    assert "TinyNet" in html and "40 images in 2 shards" in html and "ab" * 32 in html
    assert "truncated file" in html and "img/7.png" in html
    assert "0.938" in html and "0.812" in html  # headline numbers from the JSON summaries
    # the folder copied elsewhere keeps working: links are relative
    moved = shutil.copytree(site, tmp_path / "elsewhere" / "report")
    for page in moved.rglob("*.html"):
        assert all(t.is_file() for t in _local_targets(page))


def test_rebuild_replaces_the_site(inputs, tmp_path):
    values, _ = inputs
    _build(values, tmp_path)
    stale = _site(tmp_path) / "pages" / "units" / "relu1" / "c0099.html"
    stale.write_text("old")
    _build(values, tmp_path, title="Second")
    assert not stale.exists()
    assert "Second" in (_site(tmp_path) / "pages" / "embedding.html").read_text()


def test_unit_pictures_are_crops_of_the_original_images(inputs, tmp_path):
    values, _ = inputs
    _build(values, tmp_path)
    manifest, _ = read_manifest(values["manifest"])
    # one JPEG sprite sheet for the layer: row = channel (26 px apart), 2 patches + 2 contexts
    with Image.open(_site(tmp_path) / "assets/units/relu1/sheet-000.jpg") as saved:
        assert saved.format == "JPEG" and saved.size == (4 * 26 - 2, 4 * 26 - 2)
    # the sheet before JPEG encoding (the same function, its image kept instead of saved)
    from convscope.report.unit_images import render_layer_units

    kept = {}
    render_layer_units(pd.read_csv(values["topk_table"]), manifest, 24,
                       lambda image, rel: kept.setdefault(rel, image) and rel, "u")
    sheet = np.asarray(kept["u/sheet-000.jpg"])

    def cell(channel, column):
        return sheet[channel * 26:channel * 26 + 24, column * 26:column * 26 + 24]

    # the box (4, 6)-(28, 30) is 24 px square, the cell size: the crop is the pixels as they are
    original = np.asarray(Image.open(manifest.loc[2, "path"]).convert("RGB"))  # ch 1, rank 0
    np.testing.assert_array_equal(cell(1, 0), original[6:30, 4:28])
    second = np.asarray(Image.open(manifest.loc[3, "path"]).convert("RGB"))
    np.testing.assert_array_equal(cell(1, 1), second[6:30, 4:28])
    assert (cell(3, 0) == 128).all()  # never fires: grey
    unit = (_site(tmp_path) / "pages/units/relu1/c0001.html").read_text()
    assert 'object-position: -0px -26px"' in unit and 'width="50" height="24"' in unit


def test_gallery_data_follows_the_unit_statistics(inputs, tmp_path):
    values, _ = inputs
    stats = pd.read_csv(values["unit_stats"])
    stats["preferred_class"] = ["bee", "cow", "bee", ""]
    stats["class_selectivity"] = [0.5, 0.75, 0.125, np.nan]
    stats.to_csv(values["unit_stats"], index=False)
    html = _build(values, tmp_path, page="pages/layer-relu1.html")
    data = _read_data(_site(tmp_path) / "assets" / "data" / "layer-relu1.js")
    units = {u["c"]: u for u in data["units"]}
    assert data["classes"] == ["bee", "cow"] and data["pageSize"] == 60
    assert units[1] == {"c": 1, "rate": 0.25, "max": 3.0, "sel": 0.75, "cls": "cow",
                        "dead": False, "img": {"src": "assets/units/relu1/sheet-000.jpg", "x": 0,
                                               "y": 26, "w": 24, "h": 24},
                        "href": "pages/units/relu1/c0001.html", "maj": units[1]["maj"]}
    # majority class of channel 1's top-2 (images 2 and 3), counted here: most, then by name
    manifest, names = read_manifest(values["manifest"])
    top = pd.Series([names[manifest.loc[i, "label"]] for i in (2, 3)]).value_counts()
    best = sorted(top.items(), key=lambda item: (-item[1], item[0]))[0]
    ties = int((top == best[1]).sum())
    assert units[1]["maj"] == (f"{best[0]} ({best[1]}/2)" if ties == 1
                               else f"none ({ties} classes tie at {best[1]}/2)")
    assert units[3]["dead"] and units[3]["sel"] is None
    assert '<option value="bee">bee</option>' in html
    assert re.search(r'\(1 <a class="term" href="../pages/glossary.html#dead">dead</a>\)', html)
    unit = (_site(tmp_path) / "pages/units/relu1/c0001.html").read_text()
    assert re.search(r"<td><a [^>]*#selectivity\">class selectivity</a></td><td>0.750</td>", unit)
    assert re.search(r"<td><a [^>]*#preferred-class-mean\">preferred class \(highest mean "
                     r"activation\)</a></td><td>cow</td>", unit)


def test_unit_histogram_is_drawn_from_the_counts(inputs, tmp_path):
    values, _ = inputs
    counts = np.array([[0, 2, 8, 4], [5, 0, 0, 1], [1, 1, 1, 1], [16, 0, 0, 0]], np.int64)
    edges = np.tile(np.linspace(0.0, 2.0, 5), (4, 1))
    path = tmp_path / "results" / "units" / "histograms.h5"
    with h5py.File(path, "w") as f:
        f["relu1/counts"], f["relu1/edges"] = counts, edges
    assert 'id="histogram"' not in _build(values, tmp_path,
                                          page="pages/units/relu1/c0000.html")
    html = _build({**values, "unit_histograms": str(path)}, tmp_path,
                  page="pages/units/relu1/c0000.html")
    svg = re.search(r"<svg (.*?)</svg>", html, re.S).group(0)
    heights = [float(h) for h in re.findall(r'<rect [^>]*height="([0-9.]+)"', svg)]
    box = float(re.search(r'data-plot-height="(\d+)"', svg).group(1))
    np.testing.assert_allclose(heights, box * counts[0] / counts[0].max(), atol=0.01)
    assert "1 to 1.5: 8 images" in svg
    # both axes labelled, with their ends: 0 to 2 (activation), 0 to 8 (images)
    assert "per-image maximum activation" in svg and ">images</text>" in svg
    assert ">0</text>" in svg and ">2</text>" in svg and ">8</text>" in svg


def test_benchmarks_are_summed_per_rule(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    bench = tmp_path / "results" / "benchmarks"
    rows = {"extract/00000.tsv": "10.5\t0:00:10\t300.0\t1\t1\t1\t0\t0\t50\t9.0\n",
            "extract/00001.tsv": "4.5\t0:00:04\t500.0\t1\t1\t1\t0\t0\t50\t4.0\n",
            "report.tsv": "2.0\t0:00:02\tNA\t-\t-\t-\t-\t-\t-\t1.5\n"}
    for name, row in rows.items():
        _write_file(bench / name, header + row)
    table = benchmark_rows([bench / name for name in rows])
    assert table[0] == {"rule": "extract", "jobs": 2, "seconds": 15.0, "max_rss_mb": 500.0,
                        "cpu_s": 13.0}
    assert table[1]["rule"] == "report" and np.isnan(table[1]["max_rss_mb"])
    _write_file(tmp_path / "bad.tsv", "time\n3\n")
    with pytest.raises(ValueError, match="bad.tsv has no column 's'"):
        benchmark_rows([tmp_path / "bad.tsv"])


def test_benchmarks_and_versions_on_the_overview(inputs, tmp_path):
    values, _ = inputs
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    path = _write_file(tmp_path / "results" / "benchmarks" / "embedding.tsv",
                       header + "12.25\t0:00:12\t812.5\t1\t1\t1\t0\t0\t50\t11.0\n")
    assert 'id="benchmarks"' not in _build(values, tmp_path)
    html = _build({**values, "benchmarks": [path]}, tmp_path)
    assert "<td>embedding</td><td>1</td><td>12.2</td><td>11.0</td><td>812</td>" in html
    assert re.search(r"<td>pandas</td><td>\d+\.\d+", html)


def _stage_summary(tmp_path, rng, **extra) -> Path:
    folder = tmp_path / "results" / "explain" / "attribution"
    _write_png(folder / "panels" / "row-00012.png", rng)
    _write_png(folder / "units" / "relu1" / "unit-001.png", rng)
    _write_file(folder / "summary.csv", "method,images\nsaliency,48\n")
    summary = {"stage": "explain_attribution", "title": "Attribution maps",
               "caption": "Where each image's evidence lies.",
               "numbers": [{"label": "images explained", "value": "48"}],
               "figures": [{"path": "panels/row-00012.png", "title": "row 12",
                            "caption": "saliency of image 12"}],
               "tables": [{"path": "summary.csv", "title": "Methods", "caption": "per method"}],
               "units": {"relu1": {"1": [{"path": "units/relu1/unit-001.png",
                                          "title": "deconvnet reconstruction",
                                          "caption": "what the unit sees"}]}}, **extra}
    _write_file(folder / "summary.json", json.dumps(summary))
    return folder / "summary.json"


def test_stage_summaries_get_a_page_and_unit_images(inputs, tmp_path):
    values, _ = inputs
    summary = _stage_summary(tmp_path, np.random.default_rng(1))
    html = _build({**values, "stage_summaries": [str(summary)]}, tmp_path,
                  page="pages/stage-explain_attribution.html")
    assert "<h1>Attribution maps</h1>" in html and "Where each image" in html
    assert "<td>images explained</td><td>48</td>" in html and "<td>saliency</td>" in html
    assert 'src="../assets/stages/explain_attribution/panels/row-00012.png"' in html
    assert 'href="../pages/stage-explain_attribution.html"' in html  # in the navigation
    unit = (_site(tmp_path) / "pages/units/relu1/c0001.html").read_text()
    assert "assets/stages/explain_attribution/units/relu1/unit-001.png" in unit
    assert "deconvnet reconstruction" in unit and "what the unit sees" in unit
    other = (_site(tmp_path) / "pages/units/relu1/c0002.html").read_text()
    assert "From other stages" not in other


def test_bad_stage_summaries_are_refused_by_name(inputs, tmp_path):
    values, _ = inputs
    rng = np.random.default_rng(1)
    summary = _stage_summary(tmp_path, rng, caption="")
    with pytest.raises(ValueError, match=r"summary.json: stage summary without caption"):
        _build({**values, "stage_summaries": [str(summary)]}, tmp_path)
    summary = _stage_summary(tmp_path, rng, figures=[{"path": "gone.png"}])
    with pytest.raises(ValueError, match=r"names 'gone.png', but .*gone.png does not exist"):
        _build({**values, "stage_summaries": [str(summary)]}, tmp_path)


def test_scatter_data_and_sprite_come_from_coords_and_shards(inputs, tmp_path):
    values, _ = inputs
    _build(values, tmp_path)
    data = _read_data(_site(tmp_path) / "assets" / "data" / "embedding.js")
    coords = pd.read_csv(values["coords"])
    assert data["index"] == coords["index"].tolist()  # every image (below scatter_max_points)
    np.testing.assert_allclose(data["x"], coords["x"], atol=1e-4)
    manifest, _ = read_manifest(values["manifest"])
    assert data["label"][:3] == manifest["label"][:3].tolist()
    assert data["attrs"]["colour"]["categories"] == ["blue", "red"]
    assert data["attrs"]["brightness"]["kind"] == "number"
    sprite = np.asarray(Image.open(_site(tmp_path) / data["sprite"]["href"]))
    with h5py.File(values["shards"][1], "r") as f:  # image of shard 2, first row
        index, thumb = int(f["index"][0]), f["thumbs"][0]
    i = data["index"].index(index)
    row, col = divmod(i, data["sprite"]["cols"])
    np.testing.assert_array_equal(sprite[row * 8:(row + 1) * 8, col * 8:(col + 1) * 8], thumb)
    assert data["pred"][data["index"].index(7)] == -1  # unreadable image: no prediction


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
    assert "<td>0.123</td>" in (_site(tmp_path) / "pages" / "performance.html").read_text()


def test_unknown_input_name_and_bad_settings_are_refused(inputs, tmp_path):
    values, _ = inputs
    with pytest.raises(TypeError, match="unknown inputs"):
        ReportInputs.from_mapping({**values, "weights": "model.pt"})
    with pytest.raises(ConfigError, match=r"report\.title"):
        validate_config({"report": {"title": 3}})
    with pytest.raises(ConfigError, match=r"report\.patch_px"):
        validate_config({"report": {"patch_px": 2}})
    cfg = validate_config({})
    with pytest.raises(ValueError, match="pages folder must be"):
        build_report(ReportConfig.from_dict(cfg["report"]), DatasetConfig.from_dict(cfg["dataset"]),
                     ReportInputs.from_mapping(values), index_html=tmp_path / "r" / "index.html",
                     pages_dir=tmp_path / "elsewhere" / "pages", assets_dir=tmp_path / "r" / "assets")


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
    assert 'href="assets/config.yaml"' in block
    assert (_site(tmp_path) / "assets" / "config.yaml").read_text() == config
    assert "title: &lt;b&gt;x&lt;/b&gt;  # the title" in block  # escaped, verbatim


def test_comparison_is_shown_when_present(inputs, tmp_path):
    values, _ = inputs
    page = "pages/performance.html"
    assert 'id="comparison"' not in _build(values, tmp_path, page=page)  # no compare_columns
    root = tmp_path / "results" / "performance"
    pd.DataFrame([{"other": "human", "scope": "overall", "class": -1, "class_name": "", "n": 30,
                   "model_top1": 0.5, "model_top1_lo": 0.33, "model_top1_hi": 0.67,
                   "other_top1": 0.9, "other_top1_lo": 0.74, "other_top1_hi": 0.97}]
                 ).to_csv(root / "comparison.csv", index=False)
    pd.DataFrame([{"other": "human", "n": 30, "both_right": 14, "only_model": 1,
                   "only_other": 13, "both_wrong": 2}]).to_csv(root / "agreement.csv", index=False)
    given = {k: v for k, v in values.items()
             if k not in ("comparison", "agreement", "comparison_examples", "comparison_panel")}
    assert 'id="comparison"' not in _build(given, tmp_path, page=page)  # not given as inputs
    html = _build({**given, "comparison": str(root / "comparison.csv"),
                   "agreement": str(root / "agreement.csv"),
                   "comparison_examples": values["comparison_examples"]}, tmp_path, page=page)
    assert ("<td>human</td><td>30</td><td>0.500</td><td>0.330</td><td>0.670</td><td>0.900</td>"
            in html)
    assert "<td>14</td><td>1</td><td>13</td><td>2</td>" in html
    assert 'id="comparison-panel"' not in html  # panel not given: not shown
    html = _build({**values, "comparison": str(root / "comparison.csv"),
                   "agreement": str(root / "agreement.csv")}, tmp_path, page=page)
    figure = re.search(r'<figure id="comparison-panel">(.*?)</figure>', html, re.S).group(1)
    assert '<img src="../assets/performance/comparison.png"' in figure
    assert "one row per kind" in figure and "true class" in figure
    assert (_site(tmp_path) / "assets/performance/comparison.png").read_bytes() == Path(
        values["comparison_panel"]).read_bytes()
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
              **_performance(root, [str(shard)], manifest_csv), **_units(root, rng, n_images),
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
    """A 2-image folder dataset end to end: no traceback; the report says what was skipped;
    a count larger than the dataset (explain.invariance.n_images at its default, 4) is
    clipped to the 2 images with one warning naming the key, in the job's log."""
    import yaml

    from conftest import TINY_CONFIG, run_snakemake, write_two_image_folder

    write_two_image_folder(tmp_path / "imgs", tmp_path / "w.pt")
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["dataset"] = {"kind": "folder", "path": "imgs"}
    config["model"] = {"kind": "demo", "weights": "w.pt", "num_classes": 2}
    config["synthesis"]["visualisation"]["classes"] = "all"  # the tiny config names demo classes
    del config["explain"]["invariance"]["n_images"]  # the schema's default, 4
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(tmp_path, "--configfile", "cfg.yaml", "--cores", "2")
    html = (tmp_path / "results" / "report" / "index.html").read_text()
    assert "t-SNE map skipped: t-SNE needs at least 4 images, the dataset has 2" in html
    assert "neighbours.k is 8 but the dataset has 2 readable image(s)" in html
    assert "t-SNE needs at least 4 images" in (tmp_path / "logs" / "embedding" /
                                                "embedding.log").read_text()
    log = (tmp_path / "logs" / "explain" / "invariance.log").read_text()
    assert "Traceback" not in log
    assert ("config key 'explain.invariance.n_images' is 4 but only 2 usable images are "
            "available; using 2") in log
    curves = pd.read_csv(tmp_path / "results" / "explain" / "invariance" / "curves.csv")
    assert sorted(curves["index"].unique()) == [0, 1]
