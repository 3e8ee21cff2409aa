"""The explanation stages in a whole run of the tiny config: the files' content."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import TINY_CONFIG, h5_datasets, planned_jobs, run_snakemake

_EXPLAIN_RULES = {"explain_images", "explain_attribution", "explain_units"}


def _summary_paths(summary: dict) -> list[str]:
    paths = [item["path"] for key in ("figures", "tables") for item in summary.get(key, [])]
    for channels in summary.get("units", {}).values():
        paths += [item["path"] for items in channels.values() for item in items]
    return paths


@pytest.mark.workflow
def test_explain_stages_write_their_files(tiny_run):
    results = tiny_run / "results" / "explain"
    images = pd.read_csv(results / "images.csv")
    assert 1 <= len(images) <= 6 and images["index"].is_unique  # tiny_config: max_images 6
    assert (images["label"] >= 0).all() and images["probability"].between(0, 1).all()

    maps = h5_datasets(results / "attribution" / "maps.h5")
    n = len(images)
    assert maps["index"].tolist() == images["index"].tolist()
    assert maps["target/true"].tolist() == images["label"].tolist()
    for method in ("saliency", "deconvnet", "guided_backprop", "gradcam", "guided_gradcam",
                   "occlusion"):
        for target in ("true", "predicted"):
            values = maps[f"{method}/{target}"]
            assert values.shape == (n, 32, 32) and values.dtype == np.float32
            assert np.isfinite(values).all()
            if method != "occlusion":
                assert (values >= 0).all() and (values.reshape(n, -1).max(1) > 0).any()
    assert (np.abs(maps["occlusion/true"]) <= 1).all()  # a drop of probability
    assert maps["zf_occlusion"].shape == (n, 32, 32) and (maps["zf_channel"] >= 0).all()
    assert np.allclose(maps["prob/predicted"], images["probability"], atol=1e-3)

    for stage in ("attribution", "units"):
        summary = json.loads((results / stage / "summary.json").read_text())
        assert summary["stage"] == f"explain_{stage}" and summary["figures"]
        for path in _summary_paths(summary):
            assert (results / stage / path).is_file(), path
    panels = sorted((results / "attribution" / "panels").glob("row-*.png"))
    assert len(panels) == n

    units = json.loads((results / "units" / "summary.json").read_text())["units"]
    assert set(units) == {"relu1", "relu2", "relu3", "relu4"}
    assert all(len(channels) <= 2 for channels in units.values())  # units_per_layer: 2
    recon = h5_datasets(results / "units" / "reconstructions.h5")
    for layer in units:
        boxes = recon[f"{layer}/box"]
        for method in ("deconvnet", "guided_backprop"):
            values = recon[f"{layer}/{method}"]
            assert values.shape == (len(boxes), 3, 32, 32)
            for value, (x0, y0, x1, y1) in zip(values, boxes):
                outside = np.ones((32, 32), bool)
                outside[y0:y1, x0:x1] = False
                assert np.all(value[:, outside] == 0)


@pytest.mark.workflow
def test_explain_stages_rerun_only_for_their_own_settings(tiny_run, tmp_path):
    """Dry runs in a copy of the tiny run: a reconstruction setting plans explain_units
    alone of the explain rules; the speed settings (resources) plan none of them."""
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)  # keeps mtimes and metadata

    def plan(name: str, explain: dict) -> dict[str, int]:
        overlay = tmp_path / f"{name}.yaml"
        overlay.write_text(yaml.safe_dump({"explain": explain}))
        result = run_snakemake(workdir, "-n", "--configfile", TINY_CONFIG, overlay, timeout=300)
        return planned_jobs(result.stdout + result.stderr)

    assert plan("nothing", {}) == {}
    # tiny_config: reconstructions.top_k 2
    assert plan("topk", {"reconstructions": {"top_k": 1}}) == {
        "explain_units": 1, "config_used": 1, "report": 1}
    # the record of the config (and the report that shows it) may change, no explanation
    for name, speed in {"batch_size": {"batch_size": 3}, "device": {"device": "auto"}}.items():
        planned = plan(name, speed)
        assert not _EXPLAIN_RULES & set(planned), (name, planned)
        assert set(planned) <= {"config_used", "report"}, (name, planned)
