"""The dissect and ablation stages in the tiny run: their files and how they fit together."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from convscope.dissect.ablation_stage import ABLATION_COLUMNS, CURVE_COLUMNS
from convscope.dissect.stage import CONCEPT_COLUMNS


@pytest.mark.workflow
def test_dissect_tables_agree(tiny_run):
    results = tiny_run / "results" / "dissect"
    for layer in ("relu2", "relu4"):  # tiny_config: dissect.layers
        concepts = pd.read_csv(results / layer / "concepts.csv", keep_default_na=False)
        best = pd.read_csv(results / layer / "summary.csv", keep_default_na=False)
        assert list(concepts.columns) == list(best.columns) == CONCEPT_COLUMNS
        assert (concepts["iou"] > 0).all() and concepts["iou"].le(1).all()
        assert set(concepts["category"]) <= {"shape", "colour"}
        assert best["unit"].tolist() == list(range(len(best)))
        for unit, rows in concepts.groupby("unit"):
            top = best.loc[best["unit"] == unit].iloc[0]
            assert top["iou"] == pytest.approx(rows["iou"].max())
            assert rows["detector"].sum() == int(top["detector"])
            assert (rows["threshold"] == top["threshold"]).all()
        assert (best.loc[~best["unit"].isin(concepts["unit"]), "iou"] == 0).all()
        assert (best["detector"] == (best["iou"] > 0.04)).all()
    image_level = pd.read_csv(results / "image_concepts.csv")
    assert set(image_level["category"]) == {"background"}
    assert image_level["auc"].between(0, 1).all()
    summary = json.loads((results / "summary.json").read_text())
    for item in summary["figures"] + summary["tables"]:
        assert (results / item["path"]).is_file()


@pytest.mark.workflow
def test_ablation_tables_agree(tiny_run):
    results = tiny_run / "results" / "ablation"
    classes = json.loads((tiny_run / "results" / "manifest.classes.json").read_text())
    names = classes if isinstance(classes, list) else classes.get("classes", classes)
    for layer in ("relu3", "relu4"):  # tiny_config: ablation.layers, 8 units
        table = pd.read_csv(results / f"{layer}.csv")
        assert list(table.columns) == ABLATION_COLUMNS
        assert table["unit"].nunique() == 8 and set(table["class"]) <= set(names)
        assert table["delta_accuracy"].between(-1, 1).all()
    curves = pd.read_csv(results / "curves.csv")
    assert list(curves.columns) == CURVE_COLUMNS
    assert set(curves["n_units"]) == {1, 4} and set(curves["mode"]) == {"remove", "keep_only"}
    units = pd.read_csv(results / "units.csv", keep_default_na=False)
    labels = pd.read_csv(tiny_run / "results" / "dissect" / "relu4" / "summary.csv",
                         keep_default_na=False).set_index("unit")
    for _, row in units[units["layer"] == "relu4"].iterrows():
        assert row["concept"] == labels.loc[row["unit"], "concept"]
        assert len(str(row["top_images"]).split(";")) == 4  # units.top_k in tiny_config
    summary = json.loads((results / "summary.json").read_text())
    numbers = {n["label"]: n["value"] for n in summary["numbers"]}
    assert numbers["relu4: logits by"].startswith("closed form")
    assert numbers["relu3: logits by"].startswith("forward passes")
    assert np.isfinite(curves["balanced_accuracy"]).all()
